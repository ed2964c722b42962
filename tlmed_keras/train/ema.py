"""Exponential moving average (EMA) of the model's weights, kept beside training
(``--ema_epochs``).

Training always steps the raw weights. The average is swapped in only to validate (so the
``--select_on`` metric and early stopping see it), and it is what selection saves: the best
checkpoint, hence ``model.keras`` and the final val/test metrics, hold the average.

Why not Keras' optimizer EMA (``use_ema``): ``fit`` overwrites the model's weights with the
average at the end of every ``fit`` call, and the trainer calls ``fit`` once per epoch, so
training would continue from the average instead of the raw weights. It would also restart
with each phase's fresh optimizer.

What is averaged: every floating-point variable of the model, one average over both phases,
started from the weights training starts with. The update, computed as
``w + decay * (avg - w)``, leaves a variable that does not change exactly as it is: frozen
layers, and the batch-norm moving statistics when batch norm is frozen (the default with
pretrained weights). With ``--batchnorm=train`` the moving statistics are averaged like the
weights (as timm's ``ModelEmaV2`` does with its buffers).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras
import numpy as np


def decay_per_step(horizon_epochs: float, steps_per_epoch: int) -> float:
    """The per-step decay whose average spans ``horizon_epochs``: ``1 - 1 / horizon_steps``
    (the mean age of the averaged weights is then about ``horizon_steps``); 0 (the average is
    the weights themselves) for a horizon of at most one step."""
    horizon_steps = horizon_epochs * steps_per_epoch
    return max(0.0, 1.0 - 1.0 / horizon_steps) if horizon_steps > 0 else 0.0


def _is_float(variable) -> bool:
    return keras.backend.is_float_dtype(variable.dtype)


def _step(average: list, weights: list, decay: float) -> list:
    # w + decay * (avg - w) == decay * avg + (1 - decay) * w, written so that decay 0 gives
    # the weights exactly and a variable that does not change stays exact.
    return [w + decay * (a - w) for a, w in zip(average, weights, strict=True)]


def _compiled(fn):
    """``fn`` as one compiled call. Eagerly the update is three ops per variable (262 in
    MobileNetV2): 94 ms a step on TensorFlow, 346 on JAX, against 20 and 11 compiled (2
    loaded CPU cores, 2026-12-02), next to steps of about 600 ms."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn)
    if backend == "jax":
        import jax

        return jax.jit(fn, static_argnums=2)
    return fn


class WeightEMA:
    """The running average of ``model``'s floating-point variables.

    Args:
        model: the model whose variables are averaged (its variables now are the start).
        decay: per-step decay in [0, 1) (``decay_per_step``).
    """

    def __init__(self, model: keras.Model, decay: float):
        if not 0 <= decay < 1:
            raise ValueError(f"Bad EMA decay {decay!r}: must be in [0, 1).")
        self.decay = decay
        self.variables = [v for v in model.variables if _is_float(v)]
        self.average = [keras.ops.copy(v.value) for v in self.variables]
        self._step = _compiled(_step)

    def update(self) -> None:
        """One step: ``avg = decay * avg + (1 - decay) * w`` for every averaged variable."""
        self.average = list(self._step(self.average, [v.value for v in self.variables], self.decay))

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The model holds the average inside the block and its raw weights again after."""
        raw = [keras.ops.copy(v.value) for v in self.variables]
        for v, a in zip(self.variables, self.average, strict=True):
            # A copy: on JAX the next training step donates (deletes) the variables' buffers.
            v.assign(keras.ops.copy(a))
        try:
            yield
        finally:
            for v, r in zip(self.variables, raw, strict=True):
                v.assign(r)

    def arrays(self) -> list[np.ndarray]:
        """The averages as numpy arrays (for the checkpoint)."""
        return [np.array(keras.ops.convert_to_numpy(a)) for a in self.average]

    def load(self, arrays: list[np.ndarray]) -> bool:
        """Restores ``arrays()`` of a checkpoint; False (nothing changed) when they do not
        match the averaged variables in number or shape."""
        shapes = [tuple(v.shape) for v in self.variables]
        if [tuple(a.shape) for a in arrays] != shapes:
            return False
        self.average = [
            keras.ops.convert_to_tensor(a, dtype=v.dtype)
            for a, v in zip(arrays, self.variables, strict=True)
        ]
        return True


class EMAUpdate(keras.callbacks.Callback):
    """Updates ``ema`` after every training step."""

    def __init__(self, ema: WeightEMA):
        super().__init__()
        self.ema = ema

    def on_train_batch_end(self, batch, logs=None):
        # On JAX, reading self.model copies the trainer's mid-epoch state into the variables.
        _ = self.model
        self.ema.update()
