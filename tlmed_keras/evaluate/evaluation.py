"""Evaluate a finished run on one split: MedMNIST ACC/AUC (the training code) with their 95 %
bootstrap intervals (``tlmed_keras.intervals``), per-class precision / recall / F1 / support /
AUC, the confusion matrix, calibration before and after temperature scaling, and a readable
summary."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, multilabel_confusion_matrix

from tlmed_keras import intervals as iv
from tlmed_keras import metrics as mm

THRESHOLD = 0.5  # multi-label decision threshold (MedMNIST's getACC)


@dataclasses.dataclass
class Evaluation:
    """Everything ``evaluate`` reports about one split."""

    dataset: str
    split: str
    task: str
    label_names: tuple[str, ...]
    y_true: np.ndarray  # int [N] (single-label) or 0/1 [N, L] (multi-label)
    scores: np.ndarray  # probabilities [N, C]
    acc: float
    auc: float
    per_class: dict[str, dict[str, float | int | None]]
    confusion: np.ndarray  # [C, C] (rows: true, cols: predicted) or [L, 2, 2] multi-label
    intervals: dict[str, iv.Interval] = dataclasses.field(default_factory=dict)
    # ``evaluate.calibrate.Calibration`` once temperature scaling is applied, else None
    calibration: Any = None

    @property
    def multilabel(self) -> bool:
        return self.task == mm.MULTILABEL

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "split": self.split,
            "task": self.task,
            "num_images": int(len(self.scores)),
            "acc": mm.json_float(self.acc),
            "auc": mm.json_float(self.auc),
            **{f"{name}_ci95": found.to_json() for name, found in self.intervals.items()},
            "intervals": iv.describe() if self.intervals else None,
            "calibration": None if self.calibration is None else self.calibration.to_json(),
            "per_class": self.per_class,
            "confusion_matrix": self.confusion.tolist(),
            "label_names": list(self.label_names),
        }


def per_class_table(counts: mm.ClassCounts, names) -> dict[str, dict[str, float | int | None]]:
    """The report's per-class entry (scikit-learn's keys and its ``zero_division=0``: 0.0
    where nothing was predicted or nothing is true); metrics.json's is
    ``training.metrics.per_class_report``, from the same counts."""
    return {
        name: {
            "precision": counts.precision(i, undefined=0.0),
            "recall": counts.recall(i, undefined=0.0),
            "f1": counts.f1(i, undefined=0.0),
            "support": int(counts.support[i]),
            "auc": mm.json_float(counts.auc[i]),
        }
        for i, name in enumerate(names)
    }


def predictions(scores: np.ndarray, task: str) -> np.ndarray:
    """Decisions from probabilities: argmax, or per-label ``> 0.5`` for multi-label."""
    if task == mm.MULTILABEL:
        return (scores > THRESHOLD).astype(np.int64)
    return scores.argmax(axis=-1)


def evaluate_scores(
    y_true, scores, *, task: str, label_names, dataset: str = "", split: str = ""
) -> Evaluation:
    """Builds the ``Evaluation`` of probabilities ``scores`` against ``y_true``.

    ACC and AUC come from ``tlmed_keras.metrics`` (exactly what training reports).

    Raises:
        ValueError: scores and labels do not match in length or number of classes.
    """
    scores = np.asarray(scores, dtype=np.float64)
    y_true = np.asarray(y_true)
    names = tuple(label_names)
    if scores.ndim != 2 or scores.shape[1] != len(names):
        raise ValueError(
            f"scores must be [N, {len(names)}] probabilities for {len(names)} classes, "
            f"got shape {scores.shape}."
        )
    if len(y_true) != len(scores):
        raise ValueError(f"{len(y_true)} labels but {len(scores)} score rows.")
    y_pred = predictions(scores, task)
    classes = list(range(len(names)))
    if task == mm.MULTILABEL:
        y_true = y_true.reshape(scores.shape).astype(np.int64)
        confusion = multilabel_confusion_matrix(y_true, y_pred, labels=classes)
    else:
        y_true = y_true.reshape(-1).astype(np.int64)
        confusion = confusion_matrix(y_true, y_pred, labels=classes)
    per_class = per_class_table(mm.class_counts(y_true, scores, task, THRESHOLD), names)
    return Evaluation(
        dataset=dataset,
        split=split,
        task=task,
        label_names=names,
        y_true=y_true,
        scores=scores,
        acc=mm.medmnist_acc(y_true, scores, task),
        auc=mm.medmnist_auc(y_true, scores, task),
        per_class=per_class,
        confusion=confusion,
        intervals=iv.metric_intervals(y_true, scores, task),
    )


def predict_scores(
    run: Any, images: np.ndarray, labels: np.ndarray, batch_size: int = 256, model: Any = None
):
    """``(y_true, probabilities)`` of ``run``'s model (or ``model``, e.g. its TTA wrapper, fed
    the same preprocessed images) on raw ``images`` (``predict_logits``)."""
    y_true, logits = predict_logits(run, images, labels, batch_size, model)
    return y_true, mm.probabilities(logits, run.info.task)


def predict_logits(
    run: Any, images: np.ndarray, labels: np.ndarray, batch_size: int = 256, model: Any = None
):
    """``(y_true, logits)`` of ``run``'s model (or ``model``) on raw ``images``
    (``runs.passes.run_logits``: fed exactly like training's evaluation)."""
    from tlmed_keras.runs.passes import run_logits

    return run_logits(run, images, labels, batch_size, model=model)


def summary(ev: Evaluation, header: str = "") -> str:
    """A readable table: ACC / AUC, then one row per class and the macro average."""
    width = min(max(len(n) for n in ev.label_names) + 2, 42)
    head = f"{'class':<{width}}{'precision':>10}{'recall':>8}{'f1':>8}{'support':>9}{'auc':>8}"
    lines = [header] if header else []
    lines += [
        f"{ev.dataset} ({ev.task}), {ev.split} split, {len(ev.scores)} images",
        *_headline(ev),
        "",
        head,
        "-" * len(head),
    ]
    rows = list(ev.per_class.items())
    for name, m in rows:
        auc = "n/a" if m["auc"] is None else f"{m['auc']:.4f}"
        lines.append(
            f"{_short(name, width - 2):<{width}}{m['precision']:>10.4f}{m['recall']:>8.4f}"
            f"{m['f1']:>8.4f}{m['support']:>9d}{auc:>8}"
        )
    macro = {k: np.mean([m[k] for _, m in rows]) for k in ("precision", "recall", "f1")}
    total = sum(m["support"] for _, m in rows)
    lines.append("-" * len(head))
    lines.append(
        f"{'macro avg':<{width}}{macro['precision']:>10.4f}{macro['recall']:>8.4f}"
        f"{macro['f1']:>8.4f}{total:>9d}"
    )
    return "\n".join(lines)


def _headline(ev: Evaluation) -> list[str]:
    """ACC / AUC with their intervals, then calibration before / after temperature scaling."""
    if ev.intervals:
        lines = [
            f"ACC {ev.intervals['acc'].text()}   AUC {ev.intervals['auc'].text()}   "
            f"(MedMNIST definitions; [95 % bootstrap interval over the {len(ev.scores)} images])"
        ]
    else:
        lines = [f"ACC {ev.acc:.4f}   AUC {ev.auc:.4f}   (MedMNIST definitions)"]
    if ev.calibration is not None:
        lines += ev.calibration.lines()
    return lines


def _short(name: str, width: int) -> str:
    return name if len(name) <= width else name[: width - 3] + "..."
