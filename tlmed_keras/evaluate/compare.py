"""Paired comparison of two runs or ensembles on the same images: the difference of their ACC
and AUC (A - B) with its paired 95 % bootstrap interval (``tlmed_keras.intervals``)."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tlmed_keras import intervals as iv
from tlmed_keras.evaluate.evaluation import Evaluation

FILE = "compare.json"


@dataclasses.dataclass(frozen=True)
class Comparison:
    a: Sequence[str]
    b: Sequence[str]
    split: str
    num_images: int
    values: dict[str, tuple[float, float]]  # metric -> (A, B)
    difference: dict[str, iv.Interval]  # metric -> A - B with its interval

    def text(self) -> str:
        lines = [
            f"Paired comparison on the same {self.num_images} {self.split} images: "
            "A - B with its 95 % paired bootstrap interval",
            f"  A: {', '.join(self.a)}",
            f"  B: {', '.join(self.b)}",
        ]
        for name, found in self.difference.items():
            a, b = self.values[name]
            lines.append(
                f"  {name.upper()}  A {a:.4f}  B {b:.4f}  A - B {found.text(signed=True)}  "
                f"({_verdict(found)})"
            )
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "a": list(self.a),
            "b": list(self.b),
            "split": self.split,
            "num_images": self.num_images,
            "intervals": iv.describe(),
            **{
                name: {
                    "a": self.values[name][0],
                    "b": self.values[name][1],
                    "difference": found.estimate,
                    "difference_ci95": found.to_json(),
                }
                for name, found in self.difference.items()
            },
        }


def _verdict(found: iv.Interval) -> str:
    if found.low > 0:
        return "A higher: the interval excludes 0"
    if found.high < 0:
        return "B higher: the interval excludes 0"
    return "no clear difference: the interval contains 0"


def check_comparable(a: Evaluation, b: Evaluation) -> None:
    """Refuses scores of other datasets, label sets or images.

    Raises:
        ValueError: naming what differs.
    """
    if (a.dataset, a.label_names, a.split) != (b.dataset, b.label_names, b.split):
        raise ValueError(
            f"--compare needs runs of the same dataset and split: A is {a.dataset} "
            f"({a.split}), B is {b.dataset} ({b.split}). Compare runs trained on one dataset."
        )
    if a.y_true.shape != b.y_true.shape or not np.array_equal(a.y_true, b.y_true):
        raise ValueError(
            f"--compare needs the same {a.split} images for A and B, but their labels differ "
            f"({len(a.y_true)} vs {len(b.y_true)} images). Use runs of the same size and "
            "split (cross-fitted runs of different folds have different val images)."
        )


def compare(a: Evaluation, b: Evaluation, workdirs_a: Sequence, workdirs_b: Sequence) -> Comparison:
    """The paired comparison of evaluations ``a`` and ``b`` (same images).

    Raises:
        ValueError: see ``check_comparable``.
    """
    check_comparable(a, b)
    difference = iv.paired_difference(a.y_true, a.scores, b.scores, a.task)
    return Comparison(
        a=[os.fspath(w) for w in workdirs_a],
        b=[os.fspath(w) for w in workdirs_b],
        split=a.split,
        num_images=len(a.y_true),
        values={"acc": (a.acc, b.acc), "auc": (a.auc, b.auc)},
        difference=difference,
    )


def write(comparison: Comparison, out_dir: Path) -> Path:
    """Writes ``compare.json`` into ``out_dir``; returns its path."""
    path = Path(out_dir) / FILE
    path.write_text(json.dumps(comparison.to_json(), indent=2) + "\n")
    return path
