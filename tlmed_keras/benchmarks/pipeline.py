"""Pipeline benchmark: images per second the tf.data pipeline delivers, fully materialised.

Feeds synthetic uint8 images (``--source_size`` px, ``--channels`` channels; or the train split
of a real file with ``--data``) through ``make_dataset`` exactly as training does (shuffle, batch,
Preprocess to ``--image_size`` x 3 float32, optional augmentation, prefetch) and converts
every batch to numpy, touching it, so nothing is left lazily unevaluated.
"""

from __future__ import annotations

import os
import time

from absl import flags

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines this target's own flags (``bench`` calls it once, before parsing)."""
    flags.DEFINE_enum("channels", "3", ["1", "3"], "Channels of the source images.")
    flags.DEFINE_integer("source_size", 28, "Side of the source images (MedMNIST).")
    flags.DEFINE_integer("num_images", 4096, "Synthetic images held in memory.")
    flags.DEFINE_string("interpolation", "bilinear", "Resize interpolation.")
    flags.DEFINE_string("normalization", "torch", "Preprocess normalization.")


def _source():
    """Train images and labels, and their catalog entry."""
    import numpy as np

    from tlmed_keras.data import catalog, load_arrays

    if FLAGS.data:
        splits = load_arrays(FLAGS.data, FLAGS.source_size, FLAGS.data_dir)
        return (*splits["train"], splits.info)
    name = "breastmnist" if FLAGS.channels == "1" else "bloodmnist"
    info = catalog.get_info(name, 28)
    size, count = FLAGS.source_size, FLAGS.num_images
    shape = (count, size, size) if FLAGS.channels == "1" else (count, size, size, 3)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=shape, dtype=np.uint8)
    labels = rng.integers(0, info.num_classes, size=(count, 1), dtype=np.uint8)
    return images, labels, info


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
    from tlmed_keras.data.pipeline import make_dataset
    from tlmed_keras.data.preprocess import Preprocess

    images, labels, info = _source()
    preprocess = Preprocess(FLAGS.image_size, FLAGS.normalization, FLAGS.interpolation)
    augment = None if (FLAGS.augment or "none").lower() == "none" else FLAGS.augment
    dataset = make_dataset(
        images,
        labels,
        info=info,
        batch_size=FLAGS.batch_size,
        preprocess=preprocess,
        training=True,
        augment=augment,
        drop_remainder=True,
    )
    print(
        f"source={images.shape} {images.dtype} -> [{FLAGS.batch_size}, "
        f"{FLAGS.image_size}, {FLAGS.image_size}, 3] float32 augment={augment} "
        f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.2f}"
    )
    rate = measure(dataset, FLAGS.steps, FLAGS.warmup_steps)
    return "pipeline_images_per_s", rate
