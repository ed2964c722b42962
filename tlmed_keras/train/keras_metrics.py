"""Streaming training-time ACC and AUC (Keras metrics on logits).

These are the usual Keras running estimates over an epoch's batches, with the weights
changing under them: good for watching training. The numbers that select and report a model
are MedMNIST's, computed on full predictions (``metrics.py``, ``callbacks.ValidationMetrics``).
"""

from __future__ import annotations

import keras
from keras import ops

from tlmed_keras.metrics import BINARY, MULTILABEL


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
        if self.task == MULTILABEL:
            return super().update_state(y_true, ops.sigmoid(logits))
        probs = ops.softmax(logits, axis=-1)
        ids = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        if self.task == BINARY:
            return super().update_state(ops.equal(ids, self.num_classes - 1), probs[:, -1])
        return super().update_state(ops.one_hot(ids, self.num_classes), probs)

    def get_config(self):
        return {"task": self.task, "num_classes": self.num_classes, "name": self.name}


def train_metrics(task: str, num_classes: int) -> list[keras.metrics.Metric]:
    """``[acc, auc]`` for ``compile``: argmax accuracy (binary: positive logit wins, i.e. its
    probability > 0.5) or per-label accuracy at probability 0.5 (logit 0), and ``TaskAUC``."""
    if task == MULTILABEL:
        acc = keras.metrics.BinaryAccuracy(name="acc", threshold=0.0)
    else:
        acc = keras.metrics.SparseCategoricalAccuracy(name="acc")
    return [acc, TaskAUC(task, num_classes)]
