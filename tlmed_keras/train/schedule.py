"""The two phases of fine-tuning and their learning-rate schedules and optimizers."""

from __future__ import annotations

import dataclasses
import functools
import math

import keras

from tlmed_keras.data import pipeline
from tlmed_keras.runs.config import Config
from tlmed_keras.train import layer_decay

HEAD, FINETUNE = "head", "finetune"
PHASES = (HEAD, FINETUNE)


@dataclasses.dataclass(frozen=True)
class Phase:
    """One phase: what is trainable, for how long, at which rate.

    ``first_epoch`` is the global epoch index the phase starts at (phase 2 continues the
    TensorBoard timeline of phase 1 through Keras' ``initial_epoch``).
    """

    name: str
    index: int  # 1 or 2, for messages
    epochs: int
    lr: float
    trainable: str | int  # "frozen", "all" or N top blocks (models.set_trainable's mode)
    first_epoch: int


def phases(config: Config) -> list[Phase]:
    """The phases to run, in order; a phase with 0 epochs is left out."""
    out = []
    if config.head_epochs:
        out.append(Phase(HEAD, 1, config.head_epochs, config.head_lr, "frozen", 0))
    if config.finetune_epochs:
        out.append(
            Phase(
                FINETUNE,
                2,
                config.finetune_epochs,
                config.finetune_lr,
                config.unfreeze_mode,
                config.head_epochs,
            )
        )
    return out


def learning_rate(config: Config, phase: Phase, steps_per_epoch: int):
    """Phase 1: constant ``head_lr``. Phase 2: linear warm-up over ``warmup_epochs`` (from
    ``lr / warmup_steps`` to ``finetune_lr``) then cosine decay to 0 at the last step."""
    if phase.name == HEAD:
        return phase.lr
    total = phase.epochs * steps_per_epoch
    warmup = min(int(round(config.warmup_epochs * steps_per_epoch)), total)
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(phase.lr, decay_steps=total)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=phase.lr / warmup,
        decay_steps=max(total - warmup, 1),
        warmup_target=phase.lr,
        warmup_steps=warmup,
    )


def make_optimizer(
    config: Config,
    phase: Phase,
    steps_per_epoch: int,
    lr_scales: dict[int, float] | None = None,
) -> keras.optimizers.Optimizer:
    """The optimizer of ``phase`` (a fresh one per phase: phase 2 has its own state).

    ``lr_scales``: ``id(variable) -> factor`` on the learning rate (``layer_decay``); None
    or empty: one rate for every variable. Either way the class is Keras' own, evaluating
    the rate once per step (``one_rate_per_step``).
    """
    lr = learning_rate(config, phase, steps_per_epoch)
    name = f"{config.optimizer}_{phase.name}"
    if config.optimizer == "adamw":
        cls, kwargs = keras.optimizers.AdamW, dict(weight_decay=config.weight_decay)
    elif config.optimizer == "adam":
        cls, kwargs = keras.optimizers.Adam, dict(weight_decay=config.weight_decay or None)
    elif config.optimizer == "sgd":
        cls = keras.optimizers.SGD
        kwargs = dict(momentum=config.momentum, weight_decay=config.weight_decay or None)
    else:
        raise ValueError(f"Unknown optimizer {config.optimizer!r}.")
    cls = one_rate_per_step(cls)
    if lr_scales:
        return layer_decay.scaled_optimizer(cls, lr_scales, lr, name=name, **kwargs)
    return cls(lr, name=name, **kwargs)


@functools.cache
def one_rate_per_step(base: type) -> type:
    """``base`` (a Keras optimizer class) evaluating its learning-rate schedule once per step.

    Keras' weight decay reads ``optimizer.learning_rate`` once per variable, and with a
    schedule each read builds the schedule's ops again: ~160 copies of the warm-up + cosine
    graph for MobileNetV2, traced in Python before the first step of a phase and run at
    every step. The rate of this step is read once and reused for every variable (the same
    value: the step counter moves only after the update)."""

    class OneRatePerStep(base):
        _rate_this_step = None  # set only inside _apply_weight_decay

        def _get_current_learning_rate(self):
            if self._rate_this_step is not None:
                return self._rate_this_step
            return super()._get_current_learning_rate()

        def _apply_weight_decay(self, variables):
            # object.__setattr__: the optimizer's own __setattr__ would track the tensor.
            object.__setattr__(self, "_rate_this_step", super()._get_current_learning_rate())
            try:
                super()._apply_weight_decay(variables)
            finally:
                object.__setattr__(self, "_rate_this_step", None)

    OneRatePerStep.__name__ = base.__name__  # messages and configs name Keras' class
    OneRatePerStep.__qualname__ = base.__qualname__
    return OneRatePerStep


def steps_per_epoch(num_train: int, config: Config, drop_remainder: bool) -> int:
    """Training steps of one epoch, capped by ``max_steps_per_epoch`` (0 = no cap)."""
    steps = max(pipeline.batch_count(num_train, config.batch_size, drop_remainder), 1)
    if config.max_steps_per_epoch:
        steps = min(steps, config.max_steps_per_epoch)
    return steps


def current_lr(optimizer: keras.optimizers.Optimizer) -> float:
    """The learning rate the optimizer uses at its current step."""
    value = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    return value if math.isfinite(value) else math.nan
