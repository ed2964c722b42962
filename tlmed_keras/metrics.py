"""MedMNIST's ACC and AUC, exactly as ``medmnist.evaluator`` defines them.

- binary-class: AUC of the positive (last) class score; ACC thresholds that score at 0.5.
- multi-class / ordinal-regression: mean one-vs-rest AUC over classes; ACC of the argmax.
- multi-label: mean per-label AUC; ACC is the mean per-label accuracy at threshold 0.5.

Scores are probabilities: softmax of the logits for single-label tasks, sigmoid for
multi-label (``probabilities``). Where medmnist's own function would raise because a
class (or label) has only one kind of true value in ``y_true``, we leave that class out of
the mean (and return NaN when no class is left) so that tiny validation sets do not crash a
run; on every input medmnist accepts the results are identical (tests/test_metrics).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from sklearn.metrics import roc_auc_score

MULTILABEL = "multi-label, binary-class"
BINARY = "binary-class"


def probabilities(logits: np.ndarray, task: str) -> np.ndarray:
    """Class scores from logits: sigmoid for multi-label, softmax otherwise (float64)."""
    z = np.asarray(logits, dtype=np.float64)
    if task == MULTILABEL:
        return 1.0 / (1.0 + np.exp(-z))
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _prepare(y_true, y_score, task: str):
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_score.ndim == 1:
        y_score = y_score[:, None]
    if task == MULTILABEL:
        y_true = y_true.reshape(y_score.shape)
    else:
        y_true = y_true.reshape(-1).astype(np.int64)
    if len(y_true) != len(y_score):
        raise ValueError(f"y_true has {len(y_true)} rows but y_score has {len(y_score)}.")
    return y_true, y_score


def _auc_or_nan(y_binary: np.ndarray, score: np.ndarray) -> float:
    if len(np.unique(y_binary)) < 2:
        return math.nan
    return float(roc_auc_score(y_binary, score))


def per_class_auc(y_true, y_score, task: str) -> np.ndarray:
    """One-vs-rest (or per-label) AUC of every class; NaN where a class is undefined."""
    y_true, y_score = _prepare(y_true, y_score, task)
    if task == MULTILABEL:
        return np.array([_auc_or_nan(y_true[:, i], y_score[:, i]) for i in range(y_score.shape[1])])
    return np.array(
        [_auc_or_nan((y_true == i).astype(float), y_score[:, i]) for i in range(y_score.shape[1])]
    )


def medmnist_auc(y_true, y_score, task: str) -> float:
    """MedMNIST AUC (see the module docstring). ``y_score``: [N, C] probabilities."""
    y_true, y_score = _prepare(y_true, y_score, task)
    if task == BINARY:
        return _auc_or_nan((y_true == y_score.shape[1] - 1).astype(float), y_score[:, -1])
    aucs = per_class_auc(y_true, y_score, task)
    aucs = aucs[~np.isnan(aucs)]
    return float(aucs.mean()) if len(aucs) else math.nan


def medmnist_acc(y_true, y_score, task: str, threshold: float = 0.5) -> float:
    """MedMNIST ACC (see the module docstring). ``y_score``: [N, C] probabilities."""
    y_true, y_score = _prepare(y_true, y_score, task)
    if task == MULTILABEL:
        return float(((y_score > threshold) == (y_true > 0.5)).mean(axis=0).mean())
    if task == BINARY:
        positive = y_score.shape[1] - 1
        return float(((y_score[:, -1] > threshold) == (y_true == positive)).mean())
    return float((y_score.argmax(axis=-1) == y_true).mean())


@dataclasses.dataclass(frozen=True)
class ClassCounts:
    """What every per-class number of one split is computed from, one entry per class (or
    label). The trainer's ``per_class_report`` (metrics.json) and ``evaluate``'s report
    (``reporting.evaluation``) both read these; only their keys differ."""

    auc: np.ndarray  # one-vs-rest (or per-label) AUC; NaN where a class is undefined
    support: np.ndarray  # true members
    predicted: np.ndarray  # predicted members: argmax, or score > threshold per label
    hits: np.ndarray  # true and predicted
    agreement: np.ndarray  # fraction of rows whose decision equals the truth (per label)

    # ``undefined``: what a ratio with nothing to count is (metrics.json: None, evaluate: 0.0).
    def precision(self, i: int, undefined=None) -> float | None:
        return _ratio(self.hits[i], self.predicted[i], undefined)

    def recall(self, i: int, undefined=None) -> float | None:
        return _ratio(self.hits[i], self.support[i], undefined)

    def f1(self, i: int, undefined=None) -> float | None:
        """``2 tp / (true + predicted)``: scikit-learn's formula, hence the same float."""
        return _ratio(2.0 * self.hits[i], self.support[i] + self.predicted[i], undefined)


def _ratio(numerator, denominator, undefined):
    return float(numerator / denominator) if denominator else undefined


def class_counts(y_true, y_score, task: str, threshold: float = 0.5) -> ClassCounts:
    """``ClassCounts`` of probabilities ``y_score`` [N, C] against ``y_true``; decisions are
    the argmax (single-label) or ``score > threshold`` per label (multi-label)."""
    y_true, y_score = _prepare(y_true, y_score, task)
    num_classes = y_score.shape[1]
    if task == MULTILABEL:
        truth, decided = y_true > 0.5, y_score > threshold
    else:
        classes = np.arange(num_classes)
        truth = y_true[:, None] == classes
        decided = y_score.argmax(axis=-1)[:, None] == classes
    return ClassCounts(
        auc=per_class_auc(y_true, y_score, task),
        support=truth.sum(axis=0),
        predicted=decided.sum(axis=0),
        hits=(truth & decided).sum(axis=0),
        agreement=(truth == decided).mean(axis=0),
    )


def per_class_report(y_true, y_score, task: str, label_names) -> dict[str, dict[str, float]]:
    """metrics.json's per-class entry, keyed by the catalog's label names: AUC, support, and
    recall / precision (single-label; null when undefined) or accuracy at 0.5 (multi-label).
    """
    counts = class_counts(y_true, y_score, task)
    report = {}
    for i, name in enumerate(label_names):
        if task == MULTILABEL:
            report[name] = {
                "auc": json_float(counts.auc[i]),
                "acc": float(counts.agreement[i]),
                "support": int(counts.support[i]),
            }
        else:
            report[name] = {
                "auc": json_float(counts.auc[i]),
                "recall": counts.recall(i),
                "precision": counts.precision(i),
                "support": int(counts.support[i]),
            }
    return report


def json_float(value: float | None) -> float | None:
    """JSON has no NaN: undefined values become null."""
    return None if value is None or math.isnan(value) else float(value)


def evaluate_scores(y_true, y_score, task: str) -> dict[str, float]:
    """``{"acc", "auc"}`` of one split."""
    return {"acc": medmnist_acc(y_true, y_score, task), "auc": medmnist_auc(y_true, y_score, task)}
