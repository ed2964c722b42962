"""Pipeline benchmark: images per second the tf.data pipeline delivers, fully materialised.

Feeds synthetic uint8 images (``--source_size`` px, ``--channels`` channels; or the train split
of a real file with ``--data``) through the pipeline exactly as training does (shuffle, batch,
Preprocess to ``--image_size`` x 3 float32, optional augmentation, prefetch) and converts
every batch to numpy, touching it, so nothing is left lazily unevaluated. ``--source=arrays``
(default) holds the images in memory (``make_dataset``); ``--source=tfds`` prepares a TFDS
copy first (untimed) and streams it from disk (``make_dataset_from_tfds``);
``--data_source=stream`` converts the npz into the trainer's image shards first (untimed)
and streams them (``make_stream_dataset``), as ``train --data_source=stream`` does.
"""

from __future__ import annotations

import os
import tempfile
import time

from absl import flags

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines this target's own flags (``bench`` calls it once, before parsing)."""
    flags.DEFINE_enum("channels", "3", ["1", "3"], "Channels of the source images.")
    flags.DEFINE_integer("source_size", 28, "Side of the source images (MedMNIST).")
    flags.DEFINE_string("interpolation", "bilinear", "Resize interpolation.")
    flags.DEFINE_string("normalization", "torch", "Preprocess normalization.")
    flags.DEFINE_enum("source", "arrays", ["arrays", "tfds"], "In-memory arrays or TFDS.")
    flags.DEFINE_string("tfds_dir", None, "TFDS folder for --source=tfds (default: a temp one).")


def _synthetic_arrays() -> tuple:
    """Random uint8 train images and labels shaped by the flags, and a matching catalog entry."""
    import numpy as np

    from tlmed_keras.data import catalog

    name = "breastmnist" if FLAGS.channels == "1" else "bloodmnist"
    info = catalog.get_info(name, FLAGS.source_size)
    count = int(FLAGS.num_images[0])
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(count, *info.image_shape), dtype=np.uint8)
    labels = rng.integers(0, info.num_classes, size=(count, 1), dtype=np.uint8)
    return images, labels, info


def _write_synthetic_npz(folder: str) -> str:
    """The synthetic train split (plus 8-image val/test) as an official-layout npz."""
    import numpy as np

    images, labels, info = _synthetic_arrays()
    arrays = {"train_images": images, "train_labels": labels}
    for split in ("val", "test"):
        arrays |= {f"{split}_images": images[:8], f"{split}_labels": labels[:8]}
    np.savez(os.path.join(folder, info.filename), **arrays)
    return info.name


def _timed_options(preprocess, augment: str | None):
    """The training-pipeline options every source is timed with, so the sources compare."""
    from tlmed_keras.data.pipeline import PipelineOptions

    return PipelineOptions(
        batch_size=FLAGS.batch_size,
        preprocess=preprocess,
        training=True,
        augment=augment,
        drop_remainder=True,
    )


def _arrays_dataset(preprocess, augment: str | None, scratch: str):
    from tlmed_keras.data import load_arrays
    from tlmed_keras.data.pipeline import make_dataset

    del scratch
    if FLAGS.data:
        splits = load_arrays(FLAGS.data, FLAGS.source_size, FLAGS.data_dir)
        images, labels, info = (*splits["train"], splits.info)
    else:
        images, labels, info = _synthetic_arrays()
    print(f"source=arrays {images.shape} {images.dtype}")
    return make_dataset(images, labels, info=info, options=_timed_options(preprocess, augment))


def _tfds_dataset(preprocess, augment: str | None, scratch: str):
    """The TFDS-backed pipeline; the copy is prepared first (untimed) in ``--tfds_dir``."""
    from tlmed_keras.data.pipeline import make_dataset_from_tfds

    if FLAGS.data:
        name, npz_dir, builder_options = FLAGS.data, FLAGS.data_dir, {}
    else:  # synthetic: no catalog MD5 to check against
        name, npz_dir, builder_options = _write_synthetic_npz(scratch), scratch, {"verify": False}
        builder_options["cache_dir"] = None
    tfds_dir = FLAGS.tfds_dir or os.path.join(scratch, "tfds")
    print(f"source=tfds {name} {FLAGS.source_size} px in {tfds_dir}")
    return make_dataset_from_tfds(
        name,
        FLAGS.source_size,
        "train",
        options=_timed_options(preprocess, augment),
        tfds_dir=tfds_dir,
        npz_dir=npz_dir,
        **builder_options,
    )


def _stream_dataset(preprocess, augment: str | None, scratch: str):
    """The streamed pipeline (``--data_source=stream``): the npz is converted into image
    shards first (untimed), as the trainer does once per file."""
    from tlmed_keras.data import catalog, files, shards
    from tlmed_keras.data.pipeline import make_stream_dataset

    if FLAGS.data:
        info = catalog.get_info(FLAGS.data, FLAGS.source_size)
        path = files.find_or_download(info, FLAGS.data_dir, download=False)
    else:
        name = _write_synthetic_npz(scratch)
        info = catalog.get_info(name, FLAGS.source_size)
        path = os.path.join(scratch, info.filename)
    shard_set = shards.prepare_shards(path, info)
    print(f"source=stream {len(shard_set.splits['train'])} train shards in {shard_set.folder}")
    return make_stream_dataset(shard_set, "train", options=_timed_options(preprocess, augment))


def measure(dataset, steps: int, warmup_steps: int) -> float:
    """Images per second over ``steps`` batches after ``warmup_steps`` untimed ones.

    Also prints images per CPU-second of this process (all threads): on a shared machine the
    wall-clock rate depends on the neighbours' load, the CPU cost much less.
    """
    checksum = 0.0
    batches = dataset.repeat().as_numpy_iterator()
    for _ in range(warmup_steps):
        next(batches)
    images = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(steps):
        x, y = next(batches)
        checksum += float(x[:, -1, -1, -1].sum()) + float(y.sum())  # touch every batch
        images += len(x)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    print(
        f"checksum={checksum:.3f} images={images} seconds={elapsed:.2f} cpu_seconds={cpu:.2f} "
        f"images_per_cpu_s={images / cpu:.1f} load_after={os.getloadavg()[0]:.2f}"
    )
    return images / elapsed


def run() -> tuple[str, float]:
    """Builds the pipeline from the flags and returns ``("pipeline_images_per_s", value)``."""
    from tlmed_keras.data.preprocess import Preprocess

    preprocess = Preprocess(FLAGS.image_size, FLAGS.normalization, FLAGS.interpolation)
    augment = None if (FLAGS.augment or "none").lower() == "none" else FLAGS.augment
    build = _tfds_dataset if FLAGS.source == "tfds" else _arrays_dataset
    if FLAGS.data_source == "stream":
        build = _stream_dataset
    with tempfile.TemporaryDirectory(prefix="tlmed_bench_") as scratch:
        dataset = build(preprocess, augment, scratch)
        print(
            f"-> [{FLAGS.batch_size}, {FLAGS.image_size}, {FLAGS.image_size}, 3] float32 "
            f"augment={augment} cpus={os.cpu_count()} load={os.getloadavg()[0]:.2f}"
        )
        rate = measure(dataset, FLAGS.steps, FLAGS.warmup_steps)
    return "pipeline_images_per_s", rate
