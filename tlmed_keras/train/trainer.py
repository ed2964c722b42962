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
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from tlmed_keras import housekeeping, weights_files
from tlmed_keras import metrics as mm
from tlmed_keras.data import catalog
from tlmed_keras.data.preprocess import Preprocess
from tlmed_keras.errors import CheckpointError, TrainingDivergedError
from tlmed_keras.evaluate import passes
from tlmed_keras.evaluate.ensemble import check_tta_for, with_tta
from tlmed_keras.train import (
    banner,
    divergence,
    ema,
    epoch_metrics,
    keras_metrics,
    layer_decay,
    losses,
    rundir,
    schedule,
    selection,
    tb_meta,
)
from tlmed_keras.train import callbacks as cb
from tlmed_keras.train import config as cfg
from tlmed_keras.train.config import Config
from tlmed_keras.weights_guard import loading_weights

SEED_STRIDE = 100_003  # epoch seeds: seed * SEED_STRIDE + epoch (distinct for any epoch count)


def default_registry() -> Any:
    """The model registry (``tlmed_keras.models``): get_spec, build_classifier,
    set_trainable, blocks, model_names."""
    return importlib.import_module("tlmed_keras.models")


def _spec(registry: Any, name: str) -> Any:
    try:
        return registry.get_spec(name)
    except (KeyError, ValueError) as e:
        raise ValueError(f"Bad --model={name!r}: {e}") from e


def _load_splits(config: Config, say: Callable[..., None] = print, recorded: str | None = None):
    """``(splits, choice)`` from ``--data_source`` (``data.sources``): arrays in memory, or
    labels in memory and images streamed from raw image shards converted once beside the npz;
    ``choice`` says which and why (what ``auto`` picked goes into config.json; a resumed run
    passes it back as ``recorded`` and keeps it)."""
    from tlmed_keras.data import folds, sources

    splits, choice = sources.load(
        catalog.get_info(config.data, config.size),
        config.data_dir or None,
        source=config.data_source,
        download=config.download,
        verify=config.verify_data,
        say=say,
        recorded=recorded,
    )
    if not config.cv_folds:
        return splits, choice
    if choice.source != "memory":
        raise ValueError(
            f"--cv_folds re-splits the arrays in memory, but {choice.reason}. Cross-fitting is "
            "for small sets: pass --data_source=memory if they fit, or use the official split."
        )
    say(
        f"cross-fitting: val = fold {config.cv_fold} of {config.cv_folds} of train + val "
        "(stratified, the same folds for every run); test untouched"
    )
    return folds.cross_fit(splits, config.cv_folds, config.cv_fold), choice


@dataclasses.dataclass
class _Setup:
    """Everything the epochs need, built once."""

    info: catalog.DatasetInfo
    spec: Any
    splits: Any
    source: Any  # data.sources.SourceChoice
    preprocess: Preprocess
    devices: int
    drop_remainder: bool
    steps: int
    eval_batch: int
    loss: Any
    val_loss: Any


def _distribution(config: Config) -> int:
    """Sets Keras' data-parallel distribution when asked (or automatically on >1 JAX
    device) and returns the number of devices the batch is split over.

    Multi-host: start every host with KERAS_DISTRIBUTION_JOB_ADDRESSES,
    KERAS_DISTRIBUTION_NUM_PROCESSES and KERAS_DISTRIBUTION_PROCESS_ID set;
    ``keras.distribution.initialize()`` then joins the hosts and Keras shards the tf.data
    pipeline per host (``DataParallel.distribute_dataset``). ``--batch_size`` is global.
    """
    if keras.backend.backend() != "jax" or config.distribute == "none":
        if config.distribute == "data_parallel" and keras.backend.backend() != "jax":
            raise ValueError(
                "Bad --distribute=data_parallel: Keras' distribution API runs on the JAX "
                f"backend only (this run uses {keras.backend.backend()}); use --backend=jax."
            )
        return 1
    if os.environ.get("KERAS_DISTRIBUTION_JOB_ADDRESSES"):
        keras.distribution.initialize()
    devices = keras.distribution.list_devices()
    if len(devices) == 1 and config.distribute == "auto":
        return 1
    if config.batch_size % len(devices):
        raise ValueError(
            f"Bad --batch_size={config.batch_size}: data parallelism over {len(devices)} "
            f"devices needs a multiple of {len(devices)}."
        )
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    return len(devices)


def _prepare(config: Config, registry: Any) -> tuple[Any, catalog.DatasetInfo]:
    """All checks that need no data: raises before any work."""
    cfg.check(config)
    spec = _spec(registry, config.model)
    info = catalog.get_info(config.data, config.size)
    cfg.check_against(config, spec, info)
    check_tta_for(config.tta, info)
    return spec, info


def _setup(
    config: Config,
    spec: Any,
    info: catalog.DatasetInfo,
    devices: int,
    say=print,
    recorded_source: str | None = None,
) -> _Setup:
    splits, source = _load_splits(config, say, recorded_source)
    cfg.check_split_sizes(config, splits.sizes())
    preprocess = Preprocess(
        config.image_size or spec.input_size, spec.normalization, config.interpolation
    )
    drop_remainder = devices > 1
    steps = schedule.steps_per_epoch(len(splits["train"][0]), config, drop_remainder)
    eval_batch = -(-config.eval_batch_size // devices) * devices
    weights = None
    if config.class_weight == "balanced":
        weights = losses.balanced_weights(splits["train"][1], info.num_classes, info.is_multilabel)
    ordinal_width = config.ordinal_smoothing if info.task == "ordinal-regression" else 0.0
    loss = losses.make_loss(
        info.num_classes, info.is_multilabel, config.label_smoothing, weights, ordinal_width
    )
    val_loss = losses.make_loss(
        info.num_classes, info.is_multilabel, config.label_smoothing, ordinal_width=ordinal_width
    )
    return _Setup(
        info,
        spec,
        splits,
        source,
        preprocess,
        devices,
        drop_remainder,
        steps,
        eval_batch,
        loss,
        val_loss,
    )


def _hosts() -> tuple[int, int]:
    """``(number of hosts, this host's index)`` of a multi-host JAX run; ``(1, 0)`` otherwise."""
    if keras.backend.backend() != "jax":
        return 1, 0
    import jax

    return jax.process_count(), jax.process_index()


def _train_dataset(config: Config, s: _Setup, epoch: int):
    from tlmed_keras.data import pipeline

    images, labels = s.splits["train"]
    options = pipeline.PipelineOptions(
        batch_size=config.batch_size,
        preprocess=s.preprocess,
        training=True,
        seed=config.seed * SEED_STRIDE + epoch,
        augment=None if config.augment == "none" else config.augment,
        drop_remainder=s.drop_remainder,
        mixup=config.mixup,
        cutmix=config.cutmix,
    )
    if isinstance(images, np.ndarray):
        return pipeline.make_dataset(images, labels, info=s.info, options=options)
    # Streamed: every host reads only its own shards, its share of the global batch; Keras
    # must then leave the per-host dataset as it is instead of sharding it again.
    hosts, host = _hosts()
    if hosts > 1:
        options = dataclasses.replace(options, batch_size=config.batch_size // hosts)
        keras.distribution.distribution().auto_shard_dataset = False
    dataset = pipeline.make_stream_dataset(
        images.shard_set, "train", options=options, num_hosts=hosts, host_index=host
    )
    # Hosts' shares differ by up to a shard, but every host must run all ``s.steps`` steps
    # (each is a collective): a host whose share ends first would stop its epoch early and
    # leave the others waiting forever. Repeating its epoch (same seed, same order) lets
    # ``steps_per_epoch`` end every host's epoch at the same step.
    return dataset.repeat() if hosts > 1 else dataset


def _predict_splits(model, splits: Sequence[tuple[Any, Any]], s: _Setup) -> list[np.ndarray]:
    return passes.predict_splits(
        model,
        splits,
        info=s.info,
        preprocess=s.preprocess,
        eval_batch=s.eval_batch,
        devices=s.devices,
    )


def predict_logits(model, images, labels, s: _Setup) -> np.ndarray:
    """Logits of a whole split, in order (``passes.predict_splits`` of one split)."""
    return _predict_splits(model, [(images, labels)], s)[0]


class _Inference(keras.Model):
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


def _task_labels(labels: np.ndarray, info: catalog.DatasetInfo) -> np.ndarray:
    from tlmed_keras.data import pipeline

    return pipeline.task_labels(labels, info)


def _float32_output(model):
    """Under mixed precision the logits must leave the model in float32."""
    if keras.backend.standardize_dtype(model.outputs[0].dtype) == "float32":
        return model
    out = keras.layers.Activation("linear", dtype="float32", name="logits_float32")(
        model.outputs[0]
    )
    return keras.Model(model.inputs, out, name=model.name)


def _build(config: Config, s: _Setup, registry: Any, weights: str):
    # A file name or a published ImageNet file: the local copy (weights_files), if any.
    published = getattr(registry.get_spec(config.model), "published_file", "")
    weights = weights_files.resolve_weights(weights, config.weights_dir, published)
    # A --weights file that fails to load, whatever the converter raised: WeightsFileError.
    with loading_weights(weights, config.model):
        model, backbone = registry.build_classifier(
            config.model,
            s.info.num_classes,
            weights=weights,
            image_size=s.preprocess.image_size,
            multilabel=s.info.is_multilabel,
            dropout=config.dropout,
        )
    return _float32_output(model), backbone


def _set_trainable(backbone, config: Config, phase: schedule.Phase, registry) -> None:
    """The registry's trainable mode. BN stays frozen (inference mode) unless
    ``--batchnorm=train`` (or auto from random init): frozen BN keeps the initial statistics
    of a random network, whose features then collapse."""
    registry.set_trainable(
        backbone, config.model, phase.trainable, freeze_batch_norm=not config.train_batchnorm
    )


def _compile(model, backbone, config: Config, phase: schedule.Phase, s: _Setup, registry):
    _set_trainable(backbone, config, phase, registry)
    scales = None
    if phase.name == schedule.FINETUNE and config.layer_decay < 1:
        blocks = registry.blocks(backbone, config.model)
        scales = layer_decay.lr_scales(backbone, blocks, config.layer_decay)
    optimizer = schedule.make_optimizer(config, phase, s.steps, scales)
    model.compile(
        optimizer=optimizer,
        loss=s.loss,
        metrics=keras_metrics.train_metrics(s.info.task, s.info.num_classes),
        jit_compile="auto",
    )
    optimizer.build(model.trainable_variables)
    return optimizer


@dataclasses.dataclass
class CompiledPhase:
    """One phase's compiled classifier and its training data (see ``compile_phase``)."""

    model: keras.Model
    backbone: keras.Model
    optimizer: Any
    phase: schedule.Phase
    config: Config
    setup: _Setup

    def train_dataset(self, epoch: int = 0):
        """The trainer's training pipeline for ``epoch`` (seeded shuffle, augmentation,
        Preprocess, prefetch)."""
        return _train_dataset(self.config, self.setup, epoch)


def compile_phase(
    config: Config, phase: str = schedule.FINETUNE, *, registry: Any = None
) -> CompiledPhase:
    """What ``train_and_evaluate`` trains in one phase: the checked config, the loaded
    splits, the classifier with that phase's trainable layers, optimizer, loss and metrics,
    compiled, on one device, under ``--mixed_precision``'s dtype policy. No run directory,
    no training. For benchmarks and notebooks, so they time the trainer's own step.

    Raises:
        ValueError: a bad config (the trainer's checks), or a phase the config does not run.
    """
    registry = registry or default_registry()
    spec, info = _prepare(config, registry)
    by_name = {p.name: p for p in schedule.phases(config)}
    if phase not in by_name:
        raise ValueError(
            f"Bad phase {phase!r}: this config runs {', '.join(by_name) or 'no phase'} "
            f"(a phase with 0 epochs is left out)."
        )
    with _dtype_policy(config.mixed_precision):
        s = _setup(config, spec, info, devices=1)
        model, backbone = _build(config, s, registry, config.weights)
        optimizer = _compile(model, backbone, config, by_name[phase], s, registry)
    return CompiledPhase(model, backbone, optimizer, by_name[phase], config, s)


def _variables(variables) -> list[np.ndarray]:
    return [np.array(keras.ops.convert_to_numpy(v.value)) for v in variables]


def _assign(variables, arrays, what: str) -> None:
    variables = list(variables)
    shapes = [tuple(v.shape) for v in variables]
    if len(arrays) != len(variables) or any(
        tuple(a.shape) != s for a, s in zip(arrays, shapes, strict=True)
    ):
        raise CheckpointError(
            f"The checkpoint's {what} variables do not match the model built from the flags "
            "(was the model code changed?). Use a new --workdir."
        )
    for v, a in zip(variables, arrays, strict=True):
        v.assign(a)


def _finite(x) -> bool:
    return x is not None and math.isfinite(float(x))


@dataclasses.dataclass
class _Job:
    """One ``train_and_evaluate`` call: its arguments, with the run directory opened."""

    config: Config
    workdir: os.PathLike | str
    run: rundir.RunDir
    registry: Any
    say: Callable[..., None]
    epoch_end_hook: Callable[[int, schedule.Phase, keras.Model], None] | None
    verbose: int  # 0, 1 or 2 (see train_and_evaluate)


@dataclasses.dataclass
class _Training:
    """What the epochs of every phase share (``_run_phase``)."""

    job: _Job
    setup: _Setup
    model: keras.Model
    backbone: keras.Model
    state: rundir.TrainState
    writer: cb.ScalarWriter
    ema: ema.WeightEMA | None = None  # --ema_epochs: the average validation and selection see
    inference: keras.Model = dataclasses.field(init=False)  # validation's view of ``model``

    def __post_init__(self):
        self.inference = _Inference(self.model)

    def evaluated_arrays(self) -> list[np.ndarray]:
        """The model's variables as validation sees them: the EMA when on, else raw."""
        with self.ema.swapped_in() if self.ema else contextlib.nullcontext():
            return _variables(self.model.variables)

    @property
    def total_epochs(self) -> int:
        return self.job.config.head_epochs + self.job.config.finetune_epochs


def _history_row(phase: schedule.Phase, epoch: int, logs: dict, seconds: float) -> dict:
    row = {"epoch": epoch + 1, "phase": phase.name, **epoch_metrics.epoch_row(logs)}
    row["seconds"] = round(seconds, 3)
    return row


def _start_phase(phase: schedule.Phase, t: _Training):
    """Compiles ``phase``, marks its start (or restores its optimizer when the run resumes
    inside it) and returns the optimizer."""
    config, state, say = t.job.config, t.state, t.job.say
    optimizer = _compile(t.model, t.backbone, config, phase, t.setup, t.job.registry)
    if max(state.epoch, phase.first_epoch) == phase.first_epoch:  # the phase starts now
        line = banner.phase_start_line(phase, config)
        tb_meta.mark_phase(t.writer.writers["train"], phase, line)
        if t.job.verbose:
            say(line)
    if state.checkpoint and state.phase == phase.name:
        saved = t.job.run.load_arrays(state.checkpoint)
        _assign(optimizer.variables, saved["optimizer"], "optimizer")
        say(f"Phase {phase.index} ({phase.name}) continues at epoch {state.epoch + 1}.")
    elif state.phase != phase.name:
        state.phase, state.wait = phase.name, 0
    return optimizer


def _callbacks(phase: schedule.Phase, t: _Training) -> list[keras.callbacks.Callback]:
    s, verbose = t.setup, t.job.verbose
    val_images, val_labels = s.splits["val"]
    y_val = _task_labels(val_labels, s.info)

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


def _run_phase(phase: schedule.Phase, t: _Training) -> None:
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
            _train_dataset(config, s, epoch),
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


def _select(done: int, logs: dict, t: _Training) -> None:
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


def _end_epoch(phase: schedule.Phase, done: int, end: int, optimizer, t: _Training) -> None:
    """Checkpoints the ``done`` epochs, stops the phase early (before ``end``, its last) when
    ``--patience`` says so, writes state and history, then calls the epoch-end hook."""
    config, run, state = t.job.config, t.job.run, t.state
    state.epoch = done
    groups = {"model": _variables(t.model.variables), "optimizer": _variables(optimizer.variables)}
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


def _final_model(t: _Training):
    """The selected weights in a fresh, uncompiled classifier (no optimizer in model.keras);
    without a selected checkpoint, the last weights as validation saw them (EMA or raw)."""
    job, state = t.job, t.state
    arrays = job.run.load_arrays(state.best)["model"] if state.best else t.evaluated_arrays()
    fresh, _ = _build(job.config, t.setup, job.registry, weights="none")
    _assign(fresh.variables, arrays, "model")
    return fresh


def _evaluate(model, s: _Setup, names: Sequence[str]) -> list[tuple[dict, np.ndarray, np.ndarray]]:
    """``(metrics, labels, scores)`` of each split in ``names``, predicted in one pass."""
    splits = [s.splits[name] for name in names]
    results = []
    for (_, labels), logits in zip(splits, _predict_splits(model, splits, s), strict=True):
        y = _task_labels(labels, s.info)
        scores = mm.probabilities(logits, s.info.task)
        results.append((mm.evaluate_scores(y, scores, s.info.task), y, scores))
    return results


def _naming_bad_shard():
    """A damaged shard (streamed data) stops the run with an error naming the file."""
    from tlmed_keras.data import shards

    return shards.naming_bad_shard()


@contextlib.contextmanager
def _dtype_policy(mixed: bool):
    previous = keras.config.dtype_policy()
    if mixed:
        keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@contextlib.contextmanager
def _distribution_scope(config: Config):
    previous = keras.distribution.distribution()
    try:
        yield _distribution(config)
    finally:
        keras.distribution.set_distribution(previous)


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
    spec, info = _prepare(config, registry)
    run = rundir.RunDir(workdir)
    replacing = _check_workdir(run, config)
    if run.has_config() and run.is_done() and not replacing:
        metrics = run.read_metrics()
        say(
            f"{workdir} holds a finished run with these flags; not retraining. "
            f"{_test_text(metrics)}."
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
        job = _Job(config, workdir, run, registry, say, epoch_end_hook, verbose)
        return _train_locked(job, spec, info, replacing)


def _check_workdir(run: rundir.RunDir, config: Config) -> str | None:
    """Raises ConfigMismatchError when ``run`` finished epochs with other flags; returns the
    notice to print when it holds a run with other flags that never finished an epoch (it is
    replaced once the new model is built)."""
    if not run.has_config():
        return None
    try:
        run.check_same_config(config)
    except rundir.ConfigMismatchError as e:
        if run.has_progress():
            raise
        return (
            f"{run.root} holds a run with other flags that never finished an epoch; "
            f"replacing it ({e.diff})."
        )
    return None


def _resolved(s: _Setup) -> dict[str, Any]:
    """config.json's resolved values (besides the flags)."""
    return {
        "image_size": s.preprocess.image_size,
        "normalization": s.preprocess.get_config(),
        "backend": keras.backend.backend(),
        "devices": s.devices,
        "task": s.info.task,
        "num_classes": s.info.num_classes,
        "label_names": list(s.info.label_names),
        "steps_per_epoch": s.steps,
        "data_source": s.source.source,  # what --data_source=auto picked
        "data_source_reason": s.source.reason,
    }


def _train_locked(job: _Job, spec: Any, info: catalog.DatasetInfo, replacing: str | None):
    """``train_and_evaluate`` once the run directory is locked."""
    config, workdir, run, say = job.config, job.workdir, job.run, job.say
    started = time.perf_counter()
    keras.utils.set_random_seed(config.seed)
    with (
        _distribution_scope(config) as devices,
        _dtype_policy(config.mixed_precision),
        _naming_bad_shard(),
    ):
        s = _setup(config, spec, info, devices, say, _recorded_source(run, replacing))
        resolved = _resolved(s)
        state = None if replacing else run.resume_state(say)
        # Nothing is written before the model is built and its weights loaded: a bad
        # --weights file leaves the run directory as it was.
        model, backbone = _build(config, s, job.registry, config.weights)
        if replacing:
            say(replacing)
            run.clear_unfinished()
        if not run.has_config():
            run.write_config(config, resolved)
        state = state or rundir.TrainState()
        average = _start_ema(config, s, model)
        if state.checkpoint:
            saved = run.load_arrays(state.checkpoint)
            _assign(model.variables, saved["model"], "model")
            _restore_ema(average, saved, run.ckpt / state.checkpoint)
            say(f"Resuming {workdir} after epoch {state.epoch} (phase {state.phase}).")
        phases = schedule.phases(config)
        training = _Training(job, s, model, backbone, state, cb.ScalarWriter(run.tb), average)
        _announce(job, resolved, s, model, backbone, phases)
        if state.epoch == 0:
            tb_meta.write_run_summary(run.tb, config, resolved)
        try:
            for phase in phases:
                if phase.name in state.stopped or state.epoch >= phase.first_epoch + phase.epochs:
                    continue
                _run_phase(phase, training)
        finally:
            training.writer.close()
        final = _final_model(training)
        metrics = _finish(job, s, final, state, resolved, started)
    say(
        f"Done: best val AUC {metrics['val']['auc']:.4f} (epoch {state.best_epoch}); "
        f"{_test_text(metrics)}. -> {workdir}"
    )
    for line in banner.next_steps(workdir):
        say(line)
    return metrics


def _recorded_source(run: rundir.RunDir, replacing: str | None) -> str | None:
    """The data source the run in ``run`` started with (config.json), unless it is replaced."""
    if replacing or not run.has_config():
        return None
    return run.read_config().get("data_source")


def _start_ema(config: Config, s: _Setup, model) -> ema.WeightEMA | None:
    """The EMA of ``--ema_epochs`` (None when 0), started from ``model``'s weights now."""
    if not config.ema_epochs:
        return None
    return ema.WeightEMA(model, ema.decay_per_step(config.ema_epochs, s.steps))


def _restore_ema(average: ema.WeightEMA | None, saved: dict, path) -> None:
    """Restores the EMA of a resumed run from its checkpoint, or refuses to resume."""
    if average is None:
        return
    if "ema" not in saved or not average.load(saved["ema"]):
        raise CheckpointError(
            f"{path} holds no EMA of the weights that fits this model; a run with "
            "--ema_epochs needs one to resume. Use a new --workdir (or delete the run's "
            "ckpt/ folder)."
        )


def _announce(job: _Job, resolved: dict, s: _Setup, model, backbone, phases) -> None:
    """Prints the banner (``train.banner``) before the first epoch."""
    config = job.config
    counts = banner.phase_counts(
        model, phases, lambda phase: _set_trainable(backbone, config, phase, job.registry)
    )
    sizes, source = s.splits.sizes(), s.splits.path
    devices = banner.device_names()
    for line in banner.start_lines(config, job.workdir, resolved, sizes, source, counts, devices):
        job.say(line)


def _finish(
    job: _Job, s: _Setup, final, state: rundir.TrainState, resolved: dict, started: float
) -> dict[str, Any]:
    """Evaluates ``final`` on val and test, saves it as model.keras and writes metrics.json
    and DONE; returns the metrics. A cross-fitting run (--cv_folds) leaves the test split
    unread: its folds exist to choose settings, and the rules read test once per final run
    (metrics "test" is None, "per_class" is of its val fold)."""
    config, run = job.config, job.run
    start = time.perf_counter()
    evaluated = with_tta(final, s.info.task, config.tta)
    results = _evaluate(evaluated, s, ["val"] if config.cv_folds else ["val", "test"])
    val, y_val, val_scores = results[0]
    test, y_test, scores = results[1] if len(results) > 1 else (None, y_val, val_scores)
    test_seconds = time.perf_counter() - start
    metrics = {
        "model": config.model,
        "data": config.data,
        "size": config.size,
        "seed": config.seed,
        "image_size": s.preprocess.image_size,
        "weights": config.weights,
        "select_on": config.select_on,
        "tta": config.tta,
        "val": _clean(val),
        "test": None if test is None else _clean(test),
        "per_class": mm.per_class_report(y_test, scores, s.info.task, s.info.label_names),
        "per_class_split": "val" if test is None else "test",
        "best_epoch": state.best_epoch,
        "epochs_run": len(state.history),
        "stopped_early": list(state.stopped),
        "timings": {
            **{f"{k}_s": round(v, 3) for k, v in state.timings.items()},
            "test_s": round(test_seconds, 3),
            "this_session_s": round(time.perf_counter() - started, 3),
        },
        "backend": resolved["backend"],
        "devices": resolved["devices"],
    }
    run.save_model(final)
    run.write_metrics(metrics)
    run.mark_done()
    return metrics


def _test_text(metrics: dict) -> str:
    """``test ACC 0.9000 AUC 0.9500``, or why a cross-fitting run has no test numbers."""
    if metrics["test"] is None:
        return "test not read (a cross-fitting fold: --cv_folds)"
    return f"test {_scores_text(metrics['test'])}"


def _scores_text(scores: dict[str, float]) -> str:
    """``ACC 0.9000 AUC 0.9500``: a split's metrics.json entry (``metrics.evaluate_scores``)."""
    return " ".join(f"{name.upper()} {value:.4f}" for name, value in scores.items())


def _clean(d: dict) -> dict:
    return {k: (None if v is None or not math.isfinite(v) else float(v)) for k, v in d.items()}
