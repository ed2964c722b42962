"""Streaming training-time ACC and AUC (Keras metrics on logits).

These are the usual Keras running estimates over an epoch's batches, with the weights
changing under them: good for watching training. The numbers that select and report a model
are MedMNIST's, computed on full predictions (``metrics.py``, ``callbacks.ValidationMetrics``).
"""

from __future__ import annotations

import keras
from keras import ops

from tlmed_keras.metrics import BINARY, MULTILABEL
from tlmed_keras.train.losses import is_soft


def hard_labels(y_true, task: str, num_classes: int):
    """Labels as these metrics read them. Mixup/CutMix give soft training targets; each
    counts as its larger share: the argmax class id (single-label), or 1 where a label's blend
    is >= 0.5 (multi-label). Plain labels pass through unchanged."""
    if task == MULTILABEL:
        return ops.cast(ops.greater_equal(ops.cast(y_true, "float32"), 0.5), "float32")
    if is_soft(y_true, num_classes):
        return ops.argmax(y_true, axis=-1)
    return ops.cast(ops.reshape(y_true, (-1,)), "int32")


class TaskAUC(keras.metrics.AUC):
    """AUC as MedMNIST averages it, from logits: positive class (binary), mean one-vs-rest
    (multi-class, ordinal) or mean per label (multi-label), on 200 thresholds."""

    def __init__(self, task: str, num_classes: int, name: str = "auc", **kwargs):
        self.task, self.num_classes = task, num_classes
        per_class = task != BINARY
        super().__init__(
            name=name,
            num_thresholds=200,
            multi_label=per_class,
            num_labels=num_classes if per_class else None,
            **kwargs,
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        logits = ops.cast(y_pred, "float32")
        y_true = hard_labels(y_true, self.task, self.num_classes)
        if self.task == MULTILABEL:
            return super().update_state(y_true, ops.sigmoid(logits))
        probs = ops.softmax(logits, axis=-1)
        ids = ops.cast(y_true, "int32")
        if self.task == BINARY:
            return super().update_state(ops.equal(ids, self.num_classes - 1), probs[:, -1])
        return super().update_state(ops.one_hot(ids, self.num_classes), probs)

    def get_config(self):
        return {"task": self.task, "num_classes": self.num_classes, "name": self.name}


class TaskAccuracy(keras.metrics.MeanMetricWrapper):
    """Argmax accuracy (binary: positive logit wins, i.e. its probability > 0.5) or
    per-label accuracy at probability 0.5 (logit 0), on ``hard_labels``."""

    def __init__(self, task: str, num_classes: int, name: str = "acc", **kwargs):
        self.task, self.num_classes = task, num_classes
        super().__init__(self._accuracy, name=name, **kwargs)

    def _accuracy(self, y_true, y_pred):
        y_true = hard_labels(y_true, self.task, self.num_classes)
        logits = ops.cast(y_pred, "float32")
        if self.task == MULTILABEL:
            hits = ops.equal(y_true, ops.cast(ops.greater(logits, 0.0), "float32"))
            return ops.mean(ops.cast(hits, "float32"), axis=-1)
        hits = ops.equal(ops.cast(y_true, "int32"), ops.cast(ops.argmax(logits, axis=-1), "int32"))
        return ops.cast(hits, "float32")

    def get_config(self):
        return {"task": self.task, "num_classes": self.num_classes, "name": self.name}


def train_metrics(task: str, num_classes: int) -> list[keras.metrics.Metric]:
    """``[acc, auc]`` for ``compile``: ``TaskAccuracy`` and ``TaskAUC``."""
    return [TaskAccuracy(task, num_classes), TaskAUC(task, num_classes)]
