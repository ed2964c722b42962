"""The epoch loop of a phase: one ``fit`` per epoch (its own seeded shuffle), then the
NaN and divergence checks, checkpoint selection on ``--select_on`` (on the EMA of the weights
with ``--ema_epochs``), the checkpoint, early stopping and the epoch-end hook."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from tlmed_keras.errors import TrainingDivergedError
from tlmed_keras.runs import rundir
from tlmed_keras.runs.config import Config
from tlmed_keras.train import banner, divergence, ema, epoch_metrics, schedule, selection, tb_meta
from tlmed_keras.train import callbacks as cb
from tlmed_keras.train.phase import compile_model
from tlmed_keras.train.resume import arrays_of, assign_arrays
from tlmed_keras.train.setup import Setup, predict_logits, task_labels, train_dataset


@dataclasses.dataclass
class Job:
    """One ``train_and_evaluate`` call: its arguments, with the run directory opened."""

    config: Config
    workdir: os.PathLike | str
    run: rundir.RunDir
    registry: Any
    say: Callable[..., None]
    epoch_end_hook: Callable[[int, schedule.Phase, keras.Model], None] | None
    verbose: int  # 0, 1 or 2 (see train_and_evaluate)


class Inference(keras.Model):
    """An uncompiled view of the training model (the same layers and variables) for the
    validation predictions: ``compile``, once per phase, drops a model's predict function
    and the next ``predict`` traces it again; this view is never compiled, so validation
    is traced once per run."""

    def __init__(self, model: keras.Model):
        # float32: under --mixed_precision a mixed policy here would cast the preprocessed
        # images to bfloat16 before the classifier sees them; the classifier decides that.
        super().__init__(name=f"{model.name}_inference", dtype="float32")
        self.classifier = model

    def call(self, images):
        return self.classifier(images, training=False)


@dataclasses.dataclass
class Training:
    """What the epochs of every phase share (``run_phase``)."""

    job: Job
    setup: Setup
    model: keras.Model
    backbone: keras.Model
    state: rundir.TrainState
    writer: cb.ScalarWriter
    ema: ema.WeightEMA | None = None  # --ema_epochs: the average validation and selection see
    inference: keras.Model = dataclasses.field(init=False)  # validation's view of ``model``

    def __post_init__(self):
        self.inference = Inference(self.model)

    def evaluated_arrays(self) -> list[np.ndarray]:
        """The model's variables as validation sees them: the EMA when on, else raw."""
        with self.ema.swapped_in() if self.ema else contextlib.nullcontext():
            return arrays_of(self.model.variables)

    @property
    def total_epochs(self) -> int:
        return self.job.config.head_epochs + self.job.config.finetune_epochs


def _finite(x) -> bool:
    return x is not None and math.isfinite(float(x))


def _history_row(phase: schedule.Phase, epoch: int, logs: dict, seconds: float) -> dict:
    row = {"epoch": epoch + 1, "phase": phase.name, **epoch_metrics.epoch_row(logs)}
    row["seconds"] = round(seconds, 3)
    return row


def _start_phase(phase: schedule.Phase, t: Training):
    """Compiles ``phase``, marks its start (or restores its optimizer when the run resumes
    inside it) and returns the optimizer."""
    config, state, say = t.job.config, t.state, t.job.say
    optimizer = compile_model(t.model, t.backbone, config, phase, t.setup, t.job.registry)
    if max(state.epoch, phase.first_epoch) == phase.first_epoch:  # the phase starts now
        line = banner.phase_start_line(phase, config)
        tb_meta.mark_phase(t.writer.writers["train"], phase, line)
        if t.job.verbose:
            say(line)
    if state.checkpoint and state.phase == phase.name:
        saved = t.job.run.load_arrays(state.checkpoint)
        assign_arrays(optimizer.variables, saved["optimizer"], "optimizer")
        say(f"Phase {phase.index} ({phase.name}) continues at epoch {state.epoch + 1}.")
    elif state.phase != phase.name:
        state.phase, state.wait = phase.name, 0
    return optimizer


def _callbacks(phase: schedule.Phase, t: Training) -> list[keras.callbacks.Callback]:
    s, verbose = t.setup, t.job.verbose
    val_images, val_labels = s.splits["val"]
    y_val = task_labels(val_labels, s.info)

    def predict_val(model):  # ``model`` is t.model, seen through t.inference
        with t.ema.swapped_in() if t.ema else contextlib.nullcontext():
            return predict_logits(t.inference, val_images, val_labels, s)

    validation = cb.ValidationMetrics(predict_val, y_val, s.info.task, s.val_loss)
    label = f"phase {phase.index} {phase.name}"
    # --verbose: 1 = Keras' bar (its last update holds the epoch's metrics), 2 = our line.
    return [
        keras.callbacks.TerminateOnNaN(),
        *([ema.EMAUpdate(t.ema)] if t.ema else []),
        validation,
        cb.LearningRateLogger(),
        *([cb.PhaseProgbar(t.total_epochs)] if verbose == 1 else []),
        t.writer,
        *([cb.EpochSummary(label, t.total_epochs, printer=t.job.say)] if verbose == 2 else []),
    ]


def run_phase(phase: schedule.Phase, t: Training) -> None:
    """Runs the remaining epochs of ``phase``; updates and checkpoints ``t.state`` per epoch."""
    config, s, state = t.job.config, t.setup, t.state
    optimizer = _start_phase(phase, t)
    callbacks = _callbacks(phase, t)
    end = phase.first_epoch + phase.epochs
    # A phase starts at its first epoch even when the one before stopped early.
    state.epoch = max(state.epoch, phase.first_epoch)
    for epoch in range(state.epoch, end):
        start = time.perf_counter()
        history = t.model.fit(
            train_dataset(config, s, epoch),
            epochs=epoch + 1,
            initial_epoch=epoch,
            steps_per_epoch=s.steps,
            callbacks=callbacks,
            shuffle=False,  # the pipeline shuffles, seeded per epoch
            verbose=1 if t.job.verbose == 1 else 0,
        )
        logs = {k: v[-1] for k, v in history.history.items()}
        if not _finite(logs.get("loss")):
            raise FloatingPointError(
                f"NaN/inf training loss in phase {phase.index} ({phase.name}), epoch "
                f"{epoch + 1} (epoch {epoch + 1 - phase.first_epoch} of the phase). Try a "
                "lower learning rate for this phase, or --mixed_precision off."
            )
        seconds = time.perf_counter() - start
        diverged = divergence.check(
            float(logs["loss"]),
            state.history[0]["loss"] if state.history else None,
            s.info,
            config.divergence_factor,
            f"phase {phase.index} ({phase.name}), epoch {epoch + 1}",
        )
        state.timings[phase.name] = state.timings.get(phase.name, 0.0) + seconds
        state.history.append(_history_row(phase, epoch, logs, seconds))
        _select(epoch + 1, logs, t)
        _end_epoch(phase, epoch + 1, end, optimizer, t)
        if diverged:
            _on_divergence(diverged, phase, config, t.job.say)
        if phase.name in state.stopped:
            break


def _select(done: int, logs: dict, t: Training) -> None:
    """Keeps the weights after epoch ``done`` (1-based) when its ``--select_on`` value is the
    best so far."""
    state, select_on = t.state, t.job.config.select_on
    # state.best_auc holds the best value of the --select_on metric (val AUC by default).
    value = selection.selection_value(logs, select_on)
    if selection.improves(value, state.best_auc, select_on):
        state.best_auc, state.best_epoch, state.wait = value, done, 0
        state.best = t.job.run.save_arrays(f"best-{done}.npz", {"model": t.evaluated_arrays()})
    else:
        state.wait += 1


def _end_epoch(phase: schedule.Phase, done: int, end: int, optimizer, t: Training) -> None:
    """Checkpoints the ``done`` epochs, stops the phase early (before ``end``, its last) when
    ``--patience`` says so, writes state and history, then calls the epoch-end hook."""
    config, run, state = t.job.config, t.job.run, t.state
    state.epoch = done
    groups = {"model": arrays_of(t.model.variables), "optimizer": arrays_of(optimizer.variables)}
    if t.ema:
        groups["ema"] = t.ema.arrays()
    state.checkpoint = run.save_arrays(f"ckpt-{done}.npz", groups)
    if config.patience and state.wait >= config.patience and state.epoch < end:
        state.stopped.append(phase.name)
        t.job.say(
            f"Early stop of phase {phase.index}: no val {config.select_on} gain in "
            f"{state.wait} epochs."
        )
    run.save_state(state)
    run.write_history(state.history)
    if t.job.epoch_end_hook is not None:
        t.job.epoch_end_hook(state.epoch, phase, t.model)


def _on_divergence(message: str, phase: schedule.Phase, config: Config, say) -> None:
    """Stops the run (the epoch is checkpointed) or warns, per ``--on_divergence``."""
    lr_flag = "head_lr" if phase.name == schedule.HEAD else "finetune_lr"
    advice = f"Lower --{lr_flag} (now {getattr(config, lr_flag):g})"
    if config.on_divergence == "warn":
        say(f"Warning: {message} {advice}.")
        return
    raise TrainingDivergedError(
        f"{message} {advice} and use a new --workdir, or rerun the same command with "
        "--on_divergence=warn to continue this run (--divergence_factor=0 turns the check off)."
    )
