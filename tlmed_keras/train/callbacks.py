"""Keras callbacks of the fine-tuning loop. Metric names come from ``epoch_metrics``.

- ``ValidationMetrics``: ``compute_metrics`` (the loss and MedMNIST ACC/AUC) on the *full*
  validation predictions at each epoch's end (not batch averages), written into the epoch
  logs as ``val_*``.
- ``LearningRateLogger``: the optimizer's current learning rate into the logs.
- ``ScalarWriter``: every metric and the learning rate per epoch to TensorBoard, train and
  validation, with the global epoch as step (both phases on one timeline).
- ``PhaseProgbar``: Keras' progress bar that counts epochs over the whole phase although the
  trainer calls ``fit`` one epoch at a time.
- ``EpochSummary``: a one-line summary per epoch.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

import keras
import numpy as np

from tlmed_keras import metrics as mm
from tlmed_keras.train import epoch_metrics as em
from tlmed_keras.train.losses import mean_loss
from tlmed_keras.train.schedule import current_lr


def compute_metrics(
    y_true: np.ndarray, logits: np.ndarray, task: str, loss_fn: Callable
) -> dict[str, float]:
    """The metrics dict of one split's full predictions, keys ``epoch_metrics.METRICS``: the
    mean ``loss_fn`` and MedMNIST ACC and AUC (``metrics.evaluate_scores``)."""
    scores = mm.probabilities(logits, task)
    return {"loss": mean_loss(loss_fn, y_true, logits), **mm.evaluate_scores(y_true, scores, task)}


class ValidationMetrics(keras.callbacks.Callback):
    """Predicts the validation split at each epoch's end and adds its ``compute_metrics``
    to the logs as ``val_<name>`` (``val_loss``, ``val_acc``, ``val_auc``).

    Args:
        predict: ``model -> logits [N, C]`` of the validation split (in order).
        y_true: validation labels as the loss takes them.
        task: the catalog task string.
        loss_fn: the unweighted task loss (``losses.make_loss``).
    """

    def __init__(self, predict: Callable, y_true: np.ndarray, task: str, loss_fn: Callable):
        super().__init__()
        self.predict, self.y_true, self.task, self.loss_fn = predict, y_true, task, loss_fn
        self.last_logits: np.ndarray | None = None

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        if not math.isfinite(float(logs.get("loss", 0.0))):
            logs.update(em.val_logs(em.undefined()))
            return
        logits = self.predict(self.model)
        self.last_logits = logits
        logs.update(em.val_logs(compute_metrics(self.y_true, logits, self.task, self.loss_fn)))


class LearningRateLogger(keras.callbacks.Callback):
    """Adds ``learning_rate`` (the rate of the epoch's last step) to the logs."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = current_lr(self.model.optimizer)


class ScalarWriter(keras.callbacks.Callback):
    """TensorBoard scalars ``epoch_<metric>`` (``epoch_metrics.by_split``: loss, acc, auc,
    and learning_rate with train) under ``logdir/train`` and ``logdir/validation`` (Keras'
    TensorBoard layout), step = global epoch index.

    One writer pair for the whole run (the trainer calls ``fit`` once per epoch); call
    ``close()`` at the end.
    """

    def __init__(self, logdir: str | os.PathLike):
        super().__init__()
        import tensorflow as tf  # TensorBoard summaries only

        self._tf = tf
        self.writers = {
            split: tf.summary.create_file_writer(os.path.join(os.fspath(logdir), split))
            for split in ("train", "validation")
        }

    def on_epoch_end(self, epoch, logs=None):
        for split, values in em.by_split(logs or {}).items():
            with self.writers[split].as_default():
                for name, value in values.items():
                    self._tf.summary.scalar(f"epoch_{name}", value, step=epoch)
            self.writers[split].flush()

    def close(self):
        for writer in self.writers.values():
            writer.close()


class PhaseProgbar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, with "Epoch e/E" counted over the whole run."""

    def __init__(self, total_epochs: int):
        super().__init__()
        self.total_epochs = total_epochs

    def set_params(self, params):
        super().set_params(params)
        self.epochs = self.total_epochs


class EpochSummary(keras.callbacks.Callback):
    """Prints one line per epoch: phase, epoch, train and val loss/ACC/AUC, lr, seconds."""

    def __init__(self, phase_label: str, total_epochs: int, printer: Callable = print):
        super().__init__()
        self.phase_label, self.total_epochs, self.printer = phase_label, total_epochs, printer
        self._start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.printer(
            f"[{self.phase_label}] epoch {epoch + 1}/{self.total_epochs}: "
            f"{em.summary_text(logs)} | lr {logs.get(em.LEARNING_RATE, 0):.3g} "
            f"| {time.perf_counter() - self._start:.1f}s",
            flush=True,
        )
