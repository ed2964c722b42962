"""Training-throughput benchmark: images/s of compiled training steps, full backbone trainable.

    python -m tlmed_keras.bench --target=train --model=resnet50 --image_size=64 --batch_size=32

The model, loss, optimizer and compiled step are the trainer's own
(``trainer.compile_phase`` for phase 2, ``--unfreeze=all``); so is the data: synthetic uint8
images shaped like BloodMNIST's (``--source_size`` px, ``--num_images`` of them; both flags
of the pipeline target) are written as an official-layout npz and read back through the
trainer's set-up (``load_arrays``, ``Preprocess``, ``make_dataset``, ``--augment``); with
``--data`` (and ``--data_dir``) the real file's train split is used instead. Weights are
random by default (``--train_weights``: speed does not depend on their values; no download).

Two measurements, in one process, on one model:

1. ``no pipeline``: one preprocessed batch repeated from memory, so only the step is timed.
   The first step's time (tracing + XLA compilation + the step) is reported as ``compile_s``.
2. ``pipeline``: the real training pipeline (seeded shuffle, Preprocess resize/normalise,
   augmentation if asked, prefetch) feeding the same compiled step.

Each runs ``--warmup_steps`` untimed steps then ``--steps`` timed ones inside one ``fit``
call; step ends are synchronised (the loss is fetched every step, as the trainer's progress
bar does). The headline (last line) is the pipeline-fed rate: ``train_images_per_s=<n>``.
"""

from __future__ import annotations

import os
import pathlib
import sys
import tempfile
import time

from absl import flags

SYNTHETIC_LIKE = "bloodmnist"  # synthetic images are shaped like this dataset's (RGB, 8 classes)


def define_flags() -> None:
    """This target's own flags (``bench`` calls it before parsing)."""
    flags.DEFINE_string(
        "train_weights", "none", "target=train: backbone weights (none, imagenet or a file)."
    )
    flags.DEFINE_bool("train_mixed_precision", False, "target=train: mixed_bfloat16 compute.")
    flags.DEFINE_enum(
        "train_batchnorm",
        "auto",
        ["auto", "frozen", "train"],
        "target=train: the trainer's --batchnorm (auto: train from random weights, frozen "
        "from pretrained ones, as fine-tuning runs it).",
    )


_DEFAULT_SOURCE_SIZE = 28
_DEFAULT_NUM_IMAGES = 1024


def _flag(name: str, default):
    """A flag defined by another target (e.g. pipeline's --source_size), or ``default``."""
    return flags.FLAGS[name].value if name in flags.FLAGS else default


def write_synthetic_npz(folder: os.PathLike | str, name: str, size: int, num_train: int):
    """Writes random uint8 images with valid labels in the official npz layout of ``name`` at
    ``size`` px (``num_train`` train images, 8 val, 8 test). Returns the DatasetInfo."""
    import numpy as np

    from tlmed_keras.data import catalog

    info = catalog.get_info(name, size)
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in (("train", num_train), ("val", 8), ("test", 8)):
        arrays[f"{split}_images"] = rng.integers(
            0, 256, size=(count, *info.image_shape), dtype=np.uint8
        )
        if info.is_multilabel:
            labels = rng.integers(0, 2, size=(count, info.num_classes))
        else:
            labels = rng.integers(0, info.num_classes, size=(count, 1))
        arrays[f"{split}_labels"] = labels.astype(np.uint8)
    np.savez(pathlib.Path(folder) / info.filename, **arrays)
    return info


def _step_clock():
    """A Keras callback noting the wall-clock time at the end of every (synchronised) step."""
    import keras

    class StepClock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.start = time.perf_counter()
            self.ends: list[float] = []

        def on_train_batch_end(self, batch, logs=None):
            if logs and "loss" in logs:  # waits for the step (async dispatch)
                float(keras.ops.convert_to_numpy(logs["loss"]))
            self.ends.append(time.perf_counter())

    return StepClock()


def timed_fit(model, dataset, warmup_steps: int, steps: int) -> dict[str, float]:
    """Runs ``warmup_steps + steps`` steps in one ``fit``; returns the first step's seconds
    and images/s over the last ``steps`` (batch size read from the dataset)."""
    clock = _step_clock()
    batch = int(next(iter(dataset.take(1)))[0].shape[0])
    model.fit(
        dataset,
        epochs=1,
        steps_per_epoch=warmup_steps + steps,
        callbacks=[clock],
        verbose=0,
        shuffle=False,
    )
    first = clock.ends[0] - clock.start
    begin = clock.ends[warmup_steps - 1] if warmup_steps else clock.start
    seconds = clock.ends[-1] - begin
    return {
        "first_step_s": first,
        "timed_s": seconds,
        "step_ms": 1000 * seconds / steps,
        "images_per_s": steps * batch / seconds,
    }


def benchmark(
    model: str,
    image_size: int,
    batch_size: int,
    *,
    steps: int,
    warmup_steps: int,
    data: str = SYNTHETIC_LIKE,
    data_dir: str | None = None,
    synthetic: bool = True,
    source_size: int = 28,
    num_images: int = 1024,
    weights: str = "none",
    augment: str = "none",
    mixed_precision: bool = False,
    batchnorm: str = "auto",
    data_source: str = "memory",
    registry=None,
    say=print,
) -> dict[str, float]:
    """Measures the trainer's compiled training step without and with the data pipeline.

    Returns:
        ``compile_s`` (first step, incl. compilation), ``no_pipeline_images_per_s``,
        ``pipeline_images_per_s``, ``step_ms`` of each, ``trainable_params``.

    Raises:
        ValueError: a bad model / size / batch (the trainer's own checks), or steps < 1.
    """
    import keras
    import tensorflow as tf

    from tlmed_keras.runs.config import Config
    from tlmed_keras.train import schedule, trainer
    from tlmed_keras.train.banner import count_params

    if steps < 1 or warmup_steps < 1:
        raise ValueError(f"Bad --steps={steps} / --warmup_steps={warmup_steps}: both must be >= 1.")
    # Whole batches only: a smaller last batch would be a second compiled shape.
    num_train = max(num_images // batch_size, 1) * batch_size
    with tempfile.TemporaryDirectory(prefix="bench_train_") as folder:
        config = Config(
            model=model,
            data=data,
            size=source_size,
            image_size=image_size,
            weights=weights,
            data_dir=folder if synthetic else (data_dir or ""),
            verify_data=not synthetic,
            download=False,
            head_epochs=0,
            finetune_epochs=1,
            warmup_epochs=0,
            unfreeze="all",
            batch_size=batch_size,
            augment=augment or "none",
            mixed_precision=mixed_precision,
            batchnorm=batchnorm,
            distribute="none",
            data_source=data_source,
        )
        if synthetic:
            write_synthetic_npz(folder, data, source_size, num_train)
        keras.utils.set_random_seed(0)
        compiled = trainer.compile_phase(config, schedule.FINETUNE, registry=registry)
        net = compiled.model
        # weights, not variables: a dropout's random-seed state is not a parameter.
        trainable = count_params(net.trainable_weights)
        frozen = count_params(net.non_trainable_weights)
        say(
            f"model={model} input={compiled.setup.preprocess.image_size}px batch={batch_size} "
            f"source={'synthetic ' if synthetic else ''}{data}@{source_size}px "
            f"backend={keras.backend.backend()} "
            f"trainable_params={trainable} non_trainable={frozen} "
            f"load_before={os.getloadavg()[0]:.2f} cpus={os.cpu_count()}"
        )
        piped = compiled.train_dataset(epoch=0).repeat()
        one_batch = next(iter(piped.take(1)))
        memory = tf.data.Dataset.from_tensors(one_batch).repeat()
        bare = timed_fit(net, memory, warmup_steps, steps)
        fed = timed_fit(net, piped, warmup_steps, steps)
    result = {
        "compile_s": bare["first_step_s"],
        "no_pipeline_images_per_s": bare["images_per_s"],
        "no_pipeline_step_ms": bare["step_ms"],
        "pipeline_images_per_s": fed["images_per_s"],
        "pipeline_step_ms": fed["step_ms"],
        "trainable_params": trainable,
    }
    say(
        f"compile_s={result['compile_s']:.2f} (first step: tracing + compilation + the step)\n"
        f"no_pipeline: images_per_s={result['no_pipeline_images_per_s']:.1f} "
        f"step_ms={result['no_pipeline_step_ms']:.1f}\n"
        f"pipeline:    images_per_s={result['pipeline_images_per_s']:.1f} "
        f"step_ms={result['pipeline_step_ms']:.1f} load_after={os.getloadavg()[0]:.2f}"
    )
    return result


def check_flags() -> None:
    """Exits with a one-line error when this target's flags cannot work (before any import of
    a backend: ``bench`` calls it first)."""
    if not flags.FLAGS.model:
        sys.exit("tlmed_keras.bench: error: --target=train needs --model=NAME.")


def run() -> tuple[str, float]:
    """``python -m tlmed_keras.bench --target=train``: the pipeline-fed training rate."""
    f = flags.FLAGS
    check_flags()
    try:
        result = benchmark(
            f.model,
            f.image_size,
            f.batch_size,
            steps=f.steps,
            warmup_steps=f.warmup_steps,
            data=f.data or SYNTHETIC_LIKE,
            data_dir=f.data_dir,
            synthetic=not f.data,
            source_size=_flag("source_size", _DEFAULT_SOURCE_SIZE),
            num_images=int(_flag("num_images", [_DEFAULT_NUM_IMAGES])[0]),
            weights=f.train_weights,
            augment=f.augment or "none",
            mixed_precision=f.train_mixed_precision,
            batchnorm=f.train_batchnorm,
            data_source=f.data_source,
        )
    except ValueError as e:
        sys.exit(f"tlmed_keras.bench: error: {e}")
    return "train_images_per_s", result["pipeline_images_per_s"]
