"""Benchmarks: a thin entry point that dispatches on ``--target``.

    python -m tlmed_keras.bench --target=pipeline --image_size=224 --channels=1

Targets are the other modules of ``tlmed_keras.bench`` (see its docstring for the protocol).
The last printed line is always ``<metric>=<number>``, for scripts to parse.
"""

from __future__ import annotations

import importlib
import pkgutil
import time

from absl import flags

from tlmed_keras import bench, cli, runtime


def _discover_targets() -> dict:
    """Imports every target module and defines its flags (before parsing)."""
    targets = {
        module.name: importlib.import_module(f"{bench.__name__}.{module.name}")
        for module in pkgutil.iter_modules(bench.__path__)
        if not module.name.startswith("_")
    }
    for target in targets.values():
        # A target may instead define its flags at import (module level): both work.
        if hasattr(target, "define_flags"):
            target.define_flags()
    return targets


TARGETS = _discover_targets()

# Flags shared by the targets.
_TARGET = flags.DEFINE_enum("target", None, sorted(TARGETS), "What to benchmark.")
flags.DEFINE_string("model", None, "Model name (models.model_names()), for model targets.")
flags.DEFINE_integer("image_size", 224, "Side of the square images fed to the model.")
flags.DEFINE_integer("batch_size", 128, "Images per batch.")
flags.DEFINE_integer("steps", 50, "Timed batches.")
flags.DEFINE_integer("warmup_steps", 5, "Untimed batches first (tracing, autotuning).")
flags.DEFINE_enum("backend", "auto", list(runtime.BACKENDS), "Keras backend.")
flags.DEFINE_string("data", None, "MedMNIST dataset to read (targets use synthetic data if unset).")
flags.DEFINE_string("data_dir", None, "Folder of the npz files (see python -m tlmed_keras.data).")
flags.DEFINE_string("augment", None, "Augmentation preset (basic, flip) or none.")
flags.DEFINE_enum(
    "data_source",
    "memory",
    ["auto", "memory", "stream"],
    "Images from memory (arrays) or streamed from image shards (as train's --data_source).",
)
flags.DEFINE_list(
    "num_images",
    ["4096"],
    "Synthetic train images; target=memory takes a list (e.g. 2000,8000), others the first.",
)
flags.mark_flag_as_required("target")


def main(argv: list[str]) -> None:
    del argv
    target = TARGETS[_TARGET.value]
    if hasattr(target, "check_flags"):
        target.check_flags()  # bad flags fail at once, before the backend's heavy imports
    backend = runtime.setup(flags.FLAGS.backend)
    print(f"target={_TARGET.value} backend={backend} start={time.strftime('%Y-%m-%d %H:%M:%S')}")
    name, value = target.run()
    print(f"{name}={value:.1f}")


if __name__ == "__main__":
    cli.run(main)
