"""Keras callbacks of the fine-tuning loop.

- ``ValidationMetrics``: MedMNIST ACC/AUC and the loss on the *full* validation predictions
  at each epoch's end (not batch averages), written into the epoch logs as ``val_*``.
- ``LearningRateLogger``: the optimizer's current learning rate into the logs.
- ``ScalarWriter``: loss, ACC, AUC and learning rate per epoch to TensorBoard, train and
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
from tlmed_keras.train.losses import mean_loss
from tlmed_keras.train.schedule import current_lr

SCALARS = ("loss", "acc", "auc", "learning_rate")


class ValidationMetrics(keras.callbacks.Callback):
    """Predicts the validation split at each epoch's end and adds ``val_loss``, ``val_acc``
    and ``val_auc`` (MedMNIST definitions) to the logs.

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
            logs.update(val_loss=math.nan, val_acc=math.nan, val_auc=math.nan)
            return
        logits = self.predict(self.model)
        self.last_logits = logits
        scores = mm.probabilities(logits, self.task)
        logs["val_loss"] = mean_loss(self.loss_fn, self.y_true, logits)
        logs["val_acc"] = mm.medmnist_acc(self.y_true, scores, self.task)
        logs["val_auc"] = mm.medmnist_auc(self.y_true, scores, self.task)


class LearningRateLogger(keras.callbacks.Callback):
    """Adds ``learning_rate`` (the rate of the epoch's last step) to the logs."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = current_lr(self.model.optimizer)


class ScalarWriter(keras.callbacks.Callback):
    """TensorBoard scalars ``epoch_{loss,acc,auc,learning_rate}`` under ``logdir/train`` and
    ``logdir/validation`` (Keras' TensorBoard layout), step = global epoch index.

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
        logs = logs or {}
        for split, prefix in (("train", ""), ("validation", "val_")):
            with self.writers[split].as_default():
                for name in SCALARS:
                    value = logs.get(prefix + name)
                    if value is not None:
                        self._tf.summary.scalar(f"epoch_{name}", float(value), step=epoch)
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

        def f(key):
            value = logs.get(key)
            return "n/a" if value is None else f"{float(value):.4f}"

        self.printer(
            f"[{self.phase_label}] epoch {epoch + 1}/{self.total_epochs}: "
            f"loss {f('loss')} acc {f('acc')} auc {f('auc')} | val loss {f('val_loss')} "
            f"acc {f('val_acc')} auc {f('val_auc')} | lr {logs.get('learning_rate', 0):.3g} "
            f"| {time.perf_counter() - self._start:.1f}s",
            flush=True,
        )
