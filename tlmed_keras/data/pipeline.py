"""The tf.data input pipeline: one split to ``(x float32 [B,S,S,3], y)`` batches.

Three sources share one ``PipelineOptions`` (batch size, ``Preprocess``, training or not,
seed, augmentation) and one tail (``_finish``): in-memory arrays (``make_dataset``, fed by row
index straight from numpy: no copy of the split into TensorFlow, however many epochs), the
trainer's raw image shards streamed from disk (``make_stream_dataset``, see ``shards``; for
the 224 px sets) and a prepared TFDS dataset (``make_dataset_from_tfds``). The tail batches
first, then maps augmentation and the ``Preprocess`` layer over whole batches (one
vectorised op per batch instead of per image), in parallel, and prefetches.

Augmentation runs on raw pixels (float, 0-255, the stored resolution) before ``Preprocess``:
cheaper than at 224 px. It is stateless (``augment``): batch ``step`` of an epoch gets the
seed ``(epoch seed, step)``, so a run, a rerun and a resumed run augment alike.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import tensorflow as tf

from tlmed_keras.data import augment as augmentation
from tlmed_keras.data import mixing
from tlmed_keras.data.catalog import SPLITS, DatasetInfo
from tlmed_keras.data.preprocess import Preprocess

AUTOTUNE = tf.data.AUTOTUNE
AUGMENTATIONS = augmentation.AUGMENTATIONS
MIXING_STREAM = 1  # folded into a batch's seed pair for mixup/CutMix
SHUFFLE_BUFFER_BYTES = 256 << 20  # TFDS source: memory the shuffle buffer may hold
MAX_SHUFFLE_BUFFER = 10_000
STREAM_CYCLE = 8  # shards read at once when streaming: parallel reads, mixed order
# Raw shards of ~150 KB records (224 px RGB) read through a 256 KB buffer: 1.13x the images
# per CPU-second of unbuffered reads (issue 15, experiments/memory/README.md).
STREAM_READ_BUFFER = 256 << 10


def task_labels(labels: np.ndarray, info: DatasetInfo) -> np.ndarray:
    """Labels in the form the task's loss needs.

    Returns:
        int32 ``[N]`` class ids for single-label tasks (binary, multi-class, ordinal), or
        float32 ``[N, L]`` 0/1 vectors for multi-label.

    Raises:
        ValueError: ``labels`` is not ``[N, 1]`` (single-label) or ``[N, L]`` (multi-label).
    """
    labels = np.asarray(labels)
    width = info.num_classes if info.is_multilabel else 1
    if labels.ndim != 2 or labels.shape[1] != width:
        raise ValueError(
            f"Labels of {info.name} ({info.task}) must have shape (N, {width}), got "
            f"{labels.shape}. Pass the arrays that load_arrays returns."
        )
    if info.is_multilabel:
        return labels.astype(np.float32)
    return labels[:, 0].astype(np.int32)


def _batch_task_labels(labels: tf.Tensor, info: DatasetInfo) -> tf.Tensor:
    """``task_labels`` for a batch of TFDS labels (class ids [B] or 0/1 vectors [B, L])."""
    return tf.cast(labels, tf.float32 if info.is_multilabel else tf.int32)


def make_augmenter(name: str | None, mirror: bool = True) -> augmentation.Augmenter | None:
    """``augment(images, seed) -> images`` for preset ``name`` (see ``augment``); None for
    None. Stateless: a pure function of the seed, so runs and resumes repeat it exactly.
    ``mirror=False`` leaves out horizontal flips.

    Raises:
        ValueError: an unknown name.
    """
    return augmentation.make_augmenter(name, mirror)


def default_shuffle_buffer(info: DatasetInfo) -> int:
    """Shuffle-buffer length for streamed images of ``info``: bounded by memory."""
    image_bytes = math.prod(info.image_shape)
    return max(1, min(MAX_SHUFFLE_BUFFER, SHUFFLE_BUFFER_BYTES // image_bytes))


@dataclasses.dataclass(frozen=True, kw_only=True)
class PipelineOptions:
    """How a split becomes batches, whatever the source (memory, shards or TFDS).

    Checked when built, so a bad batch size or augmentation name fails at once, not inside
    tf.data tracing.

    Attributes:
        batch_size: images per batch.
        preprocess: the ``Preprocess`` layer (resize, 3 channels, normalisation).
        training: shuffle and augment (the train split); False keeps the stored order.
        seed: shuffling and augmentation seed (the trainer passes one per epoch).
        augment: "basic", "flip" or None (see ``make_augmenter``); ignored unless training.
        drop_remainder: drop the last incomplete batch.
        mixup: Beta alpha of mixup (see ``mixing``); 0 = off; ignored unless training.
        cutmix: Beta alpha of CutMix; 0 = off; ignored unless training. Either one makes the
            training labels soft: float ``[B, classes]`` (one-hot blends) for single-label
            tasks, float ``[B, L]`` blends for multi-label.

    Raises:
        ValueError: a batch size below 1, an unknown augmentation or a bad alpha.
    """

    batch_size: int
    preprocess: Preprocess
    training: bool
    seed: int = 0
    augment: str | None = None
    drop_remainder: bool = False
    mixup: float = 0.0
    cutmix: float = 0.0

    def __post_init__(self) -> None:
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}.")
        make_augmenter(self.augment)
        mixing.make_mixer(self.mixup, self.cutmix)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}. Accepted: {', '.join(SPLITS)}.")


def _soft_targets(labels: tf.Tensor, info: DatasetInfo) -> tf.Tensor:
    """``task_labels`` as float ``[B, K]`` targets that mixing can blend: one-hot class ids
    (single-label) or the 0/1 vectors themselves (multi-label)."""
    if info.is_multilabel:
        return tf.cast(labels, tf.float32)
    return tf.one_hot(tf.cast(labels, tf.int32), info.num_classes, dtype=tf.float32)


def _finish(
    batches: tf.data.Dataset, options: PipelineOptions, info: DatasetInfo
) -> tf.data.Dataset:
    """Shared tail: augmentation and mixing (training only), ``Preprocess``, prefetch, no
    autotuner (``without_autotuning``).

    Batch ``step`` of an epoch is augmented with the stateless seed ``(seed, step)``:
    ``seed`` is the epoch's, so augmentation is a pure function of (seed, epoch, step).
    Mixup/CutMix run last, on the preprocessed batch, from a seed folded from that pair.
    """
    # Labels that name a body side forbid mirror images (augment.make_augmenter).
    mirror = not info.sided_labels
    augmenter = make_augmenter(options.augment, mirror) if options.training else None
    mixer = mixing.make_mixer(options.mixup, options.cutmix) if options.training else None
    preprocess, seed = options.preprocess, options.seed

    def transform(step, batch):
        images, labels = batch
        x = images
        if augmenter is not None:
            # A flip only moves pixels, so it runs on the uint8 batch (the same output, bit
            # for bit) and leaves Preprocess its one-pass conversion; the others need floats.
            if augmenter is not augmentation.flip:
                x = tf.cast(x, tf.float32)
            if x.shape.rank == 3:  # grayscale without a channel axis; the ops need one
                x = x[..., None]
            x = augmenter(x, tf.stack([tf.constant(seed, tf.int64), step]))
        x = preprocess.map_batch(x)
        if mixer is None:
            return x, labels
        # Its own seed, folded from the batch's pair: turning mixing on leaves the
        # augmentation of every batch as it was.
        pair = tf.stack([tf.constant(seed, tf.int64), step])
        mix_seed = tf.random.experimental.stateless_fold_in(pair, MIXING_STREAM)
        return mixer(x, _soft_targets(labels, info), mix_seed)

    mapped = batches.enumerate().map(transform, num_parallel_calls=AUTOTUNE)
    return without_autotuning(mapped.prefetch(AUTOTUNE))


def without_autotuning(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``dataset`` with tf.data's autotuning off (its ``AUTOTUNE`` parallelism and buffer
    sizes then take TensorFlow's fixed defaults instead of tuned ones).

    The autotuner's model thread re-optimises the pipeline while training runs, on the same
    cores; when the iterator is destroyed (at each ``fit`` / ``predict`` return: the trainer
    runs one epoch per ``fit``) the main thread waits for an optimisation in progress to
    finish: 0-18 s per epoch measured, about half the epochs, on 2 cores with a 5,000-image
    split at 112 px (experiments/cpu_speed/README.md, "the tf.data autotuner's teardown").
    Every source's pipeline (in memory, streamed shards, TFDS) ends in ``_finish``, which
    applies this: the in-memory one does a few ms of work per batch, and the streamed and
    TFDS ones at 224 px delivered 2,146 / 1,610 images/s without the autotuner vs 1,884 /
    1,458 with it (medians of 3 alternating rounds), far above what training consumes.
    ``TLMED_KERAS_DATA_AUTOTUNE=1`` turns it back on (for measurements).
    """
    if os.environ.get("TLMED_KERAS_DATA_AUTOTUNE", "0") == "1":
        return dataset
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def _gather_rows(images: np.ndarray):
    """``rows -> images[rows]`` inside tf.data, read straight from the numpy array.

    The array is never copied into TensorFlow (no per-epoch constant): each batch copies
    just its own rows, so memory stays at the arrays' size however many epochs run.
    """
    row_shape = images.shape[1:]

    def gather(rows):
        batch = tf.numpy_function(lambda r: images[r], [rows], tf.uint8, stateful=False)
        batch.set_shape([None, *row_shape])
        return batch

    return gather


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    info: DatasetInfo,
    options: PipelineOptions,
    rows: np.ndarray | None = None,
) -> tf.data.Dataset:
    """A dataset of one split held in memory (``load_arrays(...)[split]``).

    Shuffling is of row indices over the whole split (exactly one visit per image per epoch),
    seeded, and only when ``options.training``; every iteration of the dataset repeats its
    order (build one per epoch with that epoch's seed, as the trainer does). Batches are
    gathered from the arrays by index, so images are never copied one by one.

    Args:
        images: uint8 ``[N, H, W]`` or ``[N, H, W, C]``.
        labels: ``[N, 1]`` class ids or ``[N, L]`` 0/1 (multi-label), as stored.
        info: the dataset's catalog entry (task, number of classes).
        options: batch size, preprocessing, training or not, seed, augmentation.
        rows: the row indices to read, in order (e.g. padded with repeats of the last row
            to whole batches); None: every row once.

    Returns:
        ``tf.data.Dataset`` of ``(x float32 [B,S,S,3], y)``, y as ``task_labels``.

    Raises:
        ValueError: mismatched images/labels or bad label shape.
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels: they must match.")
    all_labels = tf.constant(task_labels(labels, info))  # small: [N] or [N, L]
    gather = _gather_rows(np.asarray(images))
    if rows is not None:
        order = tf.data.Dataset.from_tensor_slices(np.asarray(rows, np.int64))
    else:
        order = tf.data.Dataset.range(len(images))
    if options.training:
        # One order per dataset, however often it is iterated: Keras' JAX trainer reads a
        # batch to build a fresh compile's metrics and then rewinds, so a reshuffle would
        # give a resumed epoch other batches. The trainer builds one dataset (seed) per epoch.
        order = order.shuffle(len(images), seed=options.seed, reshuffle_each_iteration=False)
    batches = order.batch(options.batch_size, drop_remainder=options.drop_remainder).map(
        lambda r: (gather(r), tf.gather(all_labels, r)), num_parallel_calls=AUTOTUNE
    )
    return _finish(batches, options, info)


def make_dataset_from_tfds(
    name: str,
    size: int = 28,
    split: str = "train",
    *,
    options: PipelineOptions,
    tfds_dir: os.PathLike | str | None = None,
    npz_dir: os.PathLike | str | None = None,
    shuffle_buffer: int | None = None,
    **builder_kwargs,
) -> tf.data.Dataset:
    """A dataset of one split streamed from the TFDS copy of ``name`` at ``size`` px.

    Prepares the TFDS copy first if needed (from the verified npz, see ``tfds_builder``).
    Memory holds ``shuffle_buffer`` images, not the split. When training, file order and a
    seeded shuffle buffer randomise the order.

    Args:
        name, size, split: the dataset and split ("train", "val" or "test").
        options: batch size, preprocessing, training or not, seed, augmentation.
        tfds_dir: TFDS data folder (TFDS's default, ~/tensorflow_datasets, when None).
        npz_dir: where to find / download the npz when preparing (see ``files``).
        shuffle_buffer: images in the shuffle buffer (training only). None: as many as fit
            in ``SHUFFLE_BUFFER_BYTES`` (256 MiB), at most 10,000 (all of a 28 px set's
            shuffle quality at a bounded memory cost for 224 px sets).
        **builder_kwargs: passed to the builder (``cache_dir``, ``verify``, ``download``).

    Returns:
        ``tf.data.Dataset`` of ``(x float32 [B,S,S,3], y)``, y as ``task_labels``.

    Raises:
        ValueError: unknown split; errors of ``files``.
    """
    from tlmed_keras.data import tfds_builder

    _check_split(split)
    builder = tfds_builder.prepared_builder(
        name, size, tfds_dir=tfds_dir, npz_dir=npz_dir, **builder_kwargs
    )
    info = builder.catalog_info
    training, seed = options.training, options.seed
    examples = tfds_builder.as_supervised(builder, split, shuffle=training, seed=seed)
    if training:
        buffer = shuffle_buffer or default_shuffle_buffer(info)
        examples = examples.shuffle(buffer, seed=seed, reshuffle_each_iteration=False)
    batches = examples.batch(
        options.batch_size, drop_remainder=options.drop_remainder, num_parallel_calls=AUTOTUNE
    ).map(lambda x, y: (x, _batch_task_labels(y, info)), num_parallel_calls=AUTOTUNE)
    return _finish(batches, options, info)


def _shard_reader(shard_set, split: str):
    """``shard index -> (image bytes, row in the split)`` records of that shard."""
    info = shard_set.info
    paths = tf.constant(shard_set.paths(split))
    starts = tf.constant(shard_set.starts(split), tf.int64)
    counts = tf.constant([shard.count for shard in shard_set.splits[split]], tf.int64)
    image_bytes = math.prod(info.image_shape)

    def read(shard):
        images = tf.data.FixedLengthRecordDataset(
            paths[shard], image_bytes, buffer_size=STREAM_READ_BUFFER
        )
        rows = tf.data.Dataset.range(starts[shard], starts[shard] + counts[shard])
        return tf.data.Dataset.zip(images, rows)

    return read


def _decode_batch(info: DatasetInfo, labels: tf.Tensor):
    """Records ``([B] image bytes, [B] rows)`` -> ``(images uint8 [B, *image_shape], labels)``."""

    def decode(records, rows):
        images = tf.reshape(tf.io.decode_raw(records, tf.uint8), [-1, *info.image_shape])
        return images, tf.gather(labels, rows)

    return decode


def _shard_order(shards: list[int], seed: int) -> list[int]:
    """The epoch's seeded shard order (numpy: the same on every machine and run)."""
    order = np.random.default_rng(seed).permutation(len(shards))
    return [shards[i] for i in order]


def make_stream_dataset(
    shard_set,
    split: str,
    *,
    options: PipelineOptions,
    shuffle_buffer: int | None = None,
    num_hosts: int = 1,
    host_index: int = 0,
    pad_to: int = 0,
) -> tf.data.Dataset:
    """A dataset of one split streamed from its image shards (``shards.prepare_shards``).

    Training: the shard order is shuffled with the seed (one seed per epoch, as the trainer
    passes it), shards are read in parallel and interleaved deterministically, and a
    seeded, bounded shuffle buffer mixes the records: every image once per epoch, the
    same batches for the same seed (a resumed run repeats them), memory bounded by the
    buffer. Evaluation keeps the stored order.

    Args:
        shard_set: the converted shards (``shards.ShardSet``).
        split: "train", "val" or "test".
        options: batch size, preprocessing, training or not, seed, augmentation.
        shuffle_buffer: records in the shuffle buffer; None: ``default_shuffle_buffer``.
        num_hosts, host_index: multi-host: this host reads only every num_hosts-th shard
            (the batch size is then this host's share of the global batch).
        pad_to: pad the split with repeats of its first image to this many images
            (whole evaluation batches; the caller cuts the padding off).

    Raises:
        ValueError: unknown split, too few shards for hosts.
    """
    _check_split(split)
    info = shard_set.info
    read = _shard_reader(shard_set, split)
    labels = tf.constant(task_labels(shard_set.read_labels(split), info))  # small: [N] or [N, L]
    indices = shard_set.host_shards(split, num_hosts, host_index)
    if options.training:
        records = tf.data.Dataset.from_tensor_slices(_shard_order(indices, options.seed))
        records = records.interleave(
            read,
            cycle_length=min(len(indices), STREAM_CYCLE),
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )
        buffer = shuffle_buffer or default_shuffle_buffer(info)
        records = records.shuffle(buffer, seed=options.seed, reshuffle_each_iteration=False)
    else:
        # One after another: the stored order.
        records = tf.data.Dataset.from_tensor_slices(indices).flat_map(read)
    padding = pad_to - shard_set.count(split)
    if padding > 0:
        records = records.concatenate(records.take(1).repeat(padding))
    count = shard_set.count(split, indices) + max(padding, 0)
    batches = records.batch(options.batch_size, drop_remainder=options.drop_remainder)
    # Interleaved / flat-mapped records have no known length; stated, Keras ends each epoch
    # on the last batch instead of reading past it and warning "Your input ran out of data"
    # every epoch, and a shard that yields fewer images than its manifest says is an error.
    batches = batches.apply(
        tf.data.experimental.assert_cardinality(
            batch_count(count, options.batch_size, options.drop_remainder)
        )
    )
    return _finish(
        batches.map(_decode_batch(info, labels), num_parallel_calls=AUTOTUNE), options, info
    )


def batch_count(images: int, batch_size: int, drop_remainder: bool) -> int:
    """Batches of ``batch_size`` in ``images`` (a last partial one unless ``drop_remainder``)."""
    return images // batch_size if drop_remainder else -(-images // batch_size)
