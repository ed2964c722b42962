"""The trainer's set-up, built once per run: checks, data, model, distribution, dtype policy.

``prepare`` checks the config before any work; ``build_setup`` loads the splits (memory or
streamed, ``--cv_folds``), the ``Preprocess`` layer, the step count and the losses into a
``Setup``; ``build_classifier`` builds the model from the registry; ``train_dataset`` is an
epoch's seeded training pipeline; ``predict_splits`` puts whole splits through a model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from tlmed_keras import weights_files
from tlmed_keras.data import catalog
from tlmed_keras.data.preprocess import Preprocess
from tlmed_keras.runs import config as cfg
from tlmed_keras.runs import passes
from tlmed_keras.runs.config import Config
from tlmed_keras.runs.ensemble import check_tta_for
from tlmed_keras.train import losses, schedule
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
class Setup:
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


def prepare(config: Config, registry: Any) -> tuple[Any, catalog.DatasetInfo]:
    """All checks that need no data: raises before any work."""
    cfg.check(config)
    spec = _spec(registry, config.model)
    info = catalog.get_info(config.data, config.size)
    cfg.check_against(config, spec, info)
    check_tta_for(config.tta, info)
    return spec, info


def build_setup(
    config: Config,
    spec: Any,
    info: catalog.DatasetInfo,
    devices: int,
    say=print,
    recorded_source: str | None = None,
) -> Setup:
    """The ``Setup`` of a checked ``config``: splits (``recorded_source``: the data source a
    resumed run started with), Preprocess, steps per epoch, evaluation batch, losses."""
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
    return Setup(
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


def resolved_values(s: Setup) -> dict[str, Any]:
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


def _hosts() -> tuple[int, int]:
    """``(number of hosts, this host's index)`` of a multi-host JAX run; ``(1, 0)`` otherwise."""
    if keras.backend.backend() != "jax":
        return 1, 0
    import jax

    return jax.process_count(), jax.process_index()


def train_dataset(config: Config, s: Setup, epoch: int) -> Any:
    """The tf.data training pipeline of ``epoch``: shuffled with its own seed, augmented,
    preprocessed; a streamed split reads this host's shards."""
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


def predict_splits(model, splits: Sequence[tuple[Any, Any]], s: Setup) -> list[np.ndarray]:
    """Logits of each split, in one pass (``passes.predict_splits`` with the run's
    preprocessing, evaluation batch and devices)."""
    return passes.predict_splits(
        model,
        splits,
        info=s.info,
        preprocess=s.preprocess,
        eval_batch=s.eval_batch,
        devices=s.devices,
    )


def predict_logits(model, images, labels, s: Setup) -> np.ndarray:
    """Logits of a whole split, in order (``passes.predict_splits`` of one split)."""
    return predict_splits(model, [(images, labels)], s)[0]


def task_labels(labels: np.ndarray, info: catalog.DatasetInfo) -> np.ndarray:
    """The stored labels in the shape the task's metrics take (``pipeline.task_labels``)."""
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


def build_classifier(config: Config, s: Setup, registry: Any, weights: str) -> tuple[Any, Any]:
    """``(classifier, backbone)`` from the registry, with ``weights``, returning float32
    logits."""
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


def naming_bad_shard():
    """A damaged shard (streamed data) stops the run with an error naming the file."""
    from tlmed_keras.data import shards

    return shards.naming_bad_shard()


@contextlib.contextmanager
def dtype_policy(mixed: bool):
    """Keras' global dtype policy set to mixed_bfloat16 (``--mixed_precision``) inside, and
    restored after."""
    previous = keras.config.dtype_policy()
    if mixed:
        keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@contextlib.contextmanager
def distribution_scope(config: Config):
    """Yields the number of devices the batch is split over (``_distribution``) and restores
    Keras' previous distribution after."""
    previous = keras.distribution.distribution()
    try:
        yield _distribution(config)
    finally:
        keras.distribution.set_distribution(previous)
