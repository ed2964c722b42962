"""Top-k classes per image, as text, CSV or JSON."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # serving imports Keras, which must wait for runtime.setup's backend
    from tlmed_keras.serving.signature import ServingSpec

FORMATS = ("text", "csv", "json")


@dataclasses.dataclass(frozen=True)
class Guess:
    class_id: int
    label: str
    probability: float


@dataclasses.dataclass(frozen=True)
class ImageResult:
    path: str
    original: str  # e.g. "224x224 RGB", what the file held
    top: tuple[Guess, ...]


def top_k(probabilities: np.ndarray, spec: ServingSpec, k: int) -> tuple[Guess, ...]:
    """The ``k`` most probable classes (labels, for multi-label sets) of one image."""
    order = np.argsort(-probabilities, kind="stable")[: max(1, k)]
    return tuple(Guess(int(i), spec.label_names[i], float(probabilities[i])) for i in order)


def format_results(
    results: list[ImageResult], spec: ServingSpec, output: str, calibration: str = ""
) -> str:
    """``results`` as ``output`` (text, csv or json); ``calibration`` says which
    probabilities they are (calibrated with temperature T, or raw; text and json).

    Raises:
        ValueError: an unknown format.
    """
    if output == "text":
        return _text(results, spec, calibration)
    if output == "csv":
        return _csv(results)
    if output == "json":
        return _json(results, spec, calibration)
    raise ValueError(f"Unknown --output={output!r}. Accepted: {', '.join(FORMATS)}.")


def _text(results: list[ImageResult], spec: ServingSpec, calibration: str = "") -> str:
    h, w, c = spec.image_shape
    kind = "independent label probabilities" if spec.multilabel else "class probabilities"
    kind += f" ({calibration})" if calibration else ""
    lines = [f"{spec.dataset} ({spec.task}), images brought to {h}x{w}x{c}; {kind}:"]
    width = max((len(g.label) for r in results for g in r.top), default=0)
    for result in results:
        lines.append(f"{result.path} ({result.original})")
        for rank, guess in enumerate(result.top, 1):
            label = f"{guess.label:<{width}}"
            lines.append(f"  {rank}. {label}  {guess.probability:.4f}  (class {guess.class_id})")
    return "\n".join(lines)


def _csv(results: list[ImageResult]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "rank", "class_id", "label", "probability"])
    for result in results:
        for rank, guess in enumerate(result.top, 1):
            writer.writerow(
                [result.path, rank, guess.class_id, guess.label, f"{guess.probability:.6f}"]
            )
    return buffer.getvalue().rstrip("\n")


def _json(results: list[ImageResult], spec: ServingSpec, calibration: str = "") -> str:
    payload = {
        "dataset": spec.dataset,
        "size": spec.size,
        "task": spec.task,
        "probabilities": calibration or None,
        "images": [
            {
                "image": r.path,
                "original": r.original,
                "top": [dataclasses.asdict(g) for g in r.top],
            }
            for r in results
        ],
    }
    return json.dumps(payload, indent=2)
