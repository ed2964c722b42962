"""``train_and_evaluate(config, workdir)``: the two-phase fine-tuning job.

Phase 1 trains a new head on the frozen backbone; phase 2 unfreezes the backbone (all of
it or its top N blocks; batch-norm stays in inference mode, see ``models.set_trainable``)
and trains at a lower rate with warm-up and cosine decay. The model with the best
validation AUC (``--select_on``: or ACC, or lowest loss) is selected; the test split is
evaluated once, at the end, with it (``--tta=flip``: averaged with its mirror image).
With ``--ema_epochs``, validation, selection and that evaluation see an exponential moving
average of the weights (``train.ema``); training itself always steps the raw weights.

``fit`` runs one epoch at a time so that each epoch gets its own seeded shuffle (a resumed
run sees the same batches as an uninterrupted one) and so that resuming, early stopping,
selection and the NaN check are plain Python between epochs.

This module is the entry point and holds the run directory's lock; the jobs are modules of
their own: ``setup`` (checks, data, model, distribution), ``phase`` (compiling a phase),
``epochs`` (the epoch loop: selection, EMA, divergence, checkpoints), ``resume`` (what a
resumed run restores) and ``final_evaluation`` (the test split, model.keras, metrics.json).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import keras

from tlmed_keras import housekeeping
from tlmed_keras.data import catalog
from tlmed_keras.runs import rundir
from tlmed_keras.runs.config import Config
from tlmed_keras.train import banner, schedule, tb_meta
from tlmed_keras.train import callbacks as cb
from tlmed_keras.train.epochs import Job, Training, run_phase
from tlmed_keras.train.final_evaluation import evaluate_and_write, final_model, test_text
from tlmed_keras.train.phase import CompiledPhase, compile_phase, set_trainable
from tlmed_keras.train.resume import (
    assign_arrays,
    check_workdir,
    recorded_source,
    restore_ema,
    start_ema,
)
from tlmed_keras.train.setup import (
    Setup,
    build_classifier,
    build_setup,
    default_registry,
    distribution_scope,
    dtype_policy,
    naming_bad_shard,
    prepare,
    resolved_values,
)

# compile_phase (phase.py) is public here too: benchmarks and notebooks time the trainer's
# own compiled step through it.
__all__ = ["CompiledPhase", "compile_phase", "train_and_evaluate"]


def train_and_evaluate(
    config: Config,
    workdir: os.PathLike | str,
    *,
    registry: Any = None,
    say: Callable[..., None] = print,
    epoch_end_hook: Callable[[int, schedule.Phase, keras.Model], None] | None = None,
    verbose: int | None = None,
) -> dict[str, Any]:
    """Fine-tunes ``config.model`` on ``config.data`` and writes the run directory.

    Args:
        config: the run's configuration (``Config``; flags of ``tlmed_keras.train``).
        workdir: run directory (see ``rundir``). A run with the same config in it is resumed
            from its last completed epoch, or, when finished, returned without training.
        registry: the model registry (default ``tlmed_keras.models``); tests pass a tiny one.
        say: where one-line messages go.
        epoch_end_hook: called as ``hook(epochs_done, phase, model)`` after each epoch's
            checkpoint is on disk (tests snapshot weights or simulate a kill there).
        verbose: 0 no per-epoch output, 1 Keras' progress bar, 2 one line per epoch; None:
            1 when stdout is a terminal, else 2 (``banner.verbose_mode``).

    Returns:
        The metrics.json dict.

    Raises:
        ValueError: a bad flag value (before any work); ConfigMismatchError (a ValueError)
            when ``workdir`` holds a run with other flags.
        FloatingPointError: the training loss became NaN (names the phase and epoch);
            TrainingDivergedError (one) when it grew far above its start (--on_divergence).
        WeightsFileError: the --weights file does not load; nothing was written.
        RunLockedError: another live process trains in ``workdir``.
        CheckpointError: no intact checkpoint to resume from, or a damaged state.json.
    """
    registry = registry or default_registry()
    verbose = banner.verbose_mode(verbose, sys.stdout.isatty())
    spec, info = prepare(config, registry)
    run = rundir.RunDir(workdir)
    replacing = check_workdir(run, config)
    if run.has_config() and run.is_done() and not replacing:
        metrics = run.read_metrics()
        say(
            f"{workdir} holds a finished run with these flags; not retraining. "
            f"{test_text(metrics)}."
        )
        for line in banner.next_steps(workdir):
            say(line)
        return metrics
    # One trainer per run directory; the lock goes (with the directory, if it was created
    # here and is still empty) when training ends or fails.
    with housekeeping.RunLock(workdir, say):
        housekeeping.remove_stale_temps([run.root, run.ckpt], say)
        if run.migrate_legacy_ckpt():
            say(f"Renamed {run.root / rundir.LEGACY_CKPT_DIR} to {rundir.CKPT_DIR}/.")
        job = Job(config, workdir, run, registry, say, epoch_end_hook, verbose)
        return _train_locked(job, spec, info, replacing)


def _train_locked(job: Job, spec: Any, info: catalog.DatasetInfo, replacing: str | None):
    """``train_and_evaluate`` once the run directory is locked."""
    config, workdir, run, say = job.config, job.workdir, job.run, job.say
    started = time.perf_counter()
    keras.utils.set_random_seed(config.seed)
    with (
        distribution_scope(config) as devices,
        dtype_policy(config.mixed_precision),
        naming_bad_shard(),
    ):
        s = build_setup(config, spec, info, devices, say, recorded_source(run, replacing))
        resolved = resolved_values(s)
        state = None if replacing else run.resume_state(say)
        # Nothing is written before the model is built and its weights loaded: a bad
        # --weights file leaves the run directory as it was.
        model, backbone = build_classifier(config, s, job.registry, config.weights)
        if replacing:
            say(replacing)
            run.clear_unfinished()
        if not run.has_config():
            run.write_config(config, resolved)
        state = state or rundir.TrainState()
        average = start_ema(config, s, model)
        if state.checkpoint:
            saved = run.load_arrays(state.checkpoint)
            assign_arrays(model.variables, saved["model"], "model")
            restore_ema(average, saved, run.ckpt / state.checkpoint)
            say(f"Resuming {workdir} after epoch {state.epoch} (phase {state.phase}).")
        phases = schedule.phases(config)
        training = Training(job, s, model, backbone, state, cb.ScalarWriter(run.tb), average)
        _announce(job, resolved, s, model, backbone, phases)
        if state.epoch == 0:
            tb_meta.write_run_summary(run.tb, config, resolved)
        try:
            for phase in phases:
                if phase.name in state.stopped or state.epoch >= phase.first_epoch + phase.epochs:
                    continue
                run_phase(phase, training)
        finally:
            training.writer.close()
        final = final_model(training)
        metrics = evaluate_and_write(job, s, final, state, resolved, started)
    say(
        f"Done: best val AUC {metrics['val']['auc']:.4f} (epoch {state.best_epoch}); "
        f"{test_text(metrics)}. -> {workdir}"
    )
    for line in banner.next_steps(workdir):
        say(line)
    return metrics


def _announce(job: Job, resolved: dict, s: Setup, model, backbone, phases) -> None:
    """Prints the banner (``train.banner``) before the first epoch."""
    config = job.config
    counts = banner.phase_counts(
        model, phases, lambda phase: set_trainable(backbone, config, phase, job.registry)
    )
    sizes, source = s.splits.sizes(), s.splits.path
    devices = banner.device_names()
    for line in banner.start_lines(config, job.workdir, resolved, sizes, source, counts, devices):
        job.say(line)
