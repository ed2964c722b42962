"""The issue #12 budget check: one recipe run on a 5,000-image training split, timed.

    python -m experiments.recipe_budget [--image_size=112] [--train_images=5000]

The issue asks that one run of the recipe take <= 12 min on this 2-core machine for a
5,000-image training split; BreastMNIST and RetinaMNIST (546 / 1,080) are far smaller, so the
split is synthetic: PneumoniaMNIST-shaped (28 px grayscale, binary; official val / test sizes),
random pixels with a class-dependent brightness. Pixel values do not change the cost of an
epoch (there is no early stopping in the recipe), so the wall time is the recipe's. Run it on
an otherwise idle machine: the result (wall seconds, budget verdict, load average) is printed
and appended to experiments/results/recipe/budget.jsonl.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import flags

from tlmed_keras import cli
from tlmed_keras.data import catalog

REPO = pathlib.Path(__file__).resolve().parents[1]
RECIPE = REPO / "flags" / "recipes" / "mobilenet_v2_torchvision.cfg"
LOG = REPO / "experiments" / "results" / "recipe" / "budget.jsonl"
BUDGET_S = 12 * 60
DATA = "pneumoniamnist"
SWITCHES = ("TLMED_KERAS_FUSED_BN", "TLMED_KERAS_FOLD")

flags.DEFINE_integer("train_images", 5000, "Training split size of the synthetic set.")
flags.DEFINE_integer("image_size", 0, "Override the recipe's --image_size; 0 keeps it.")
flags.DEFINE_string("flagfile_path", str(RECIPE), "The recipe flagfile to time.")
FLAGS = flags.FLAGS


def synthetic_npz(folder: pathlib.Path, train_images: int, seed: int = 0) -> pathlib.Path:
    """A PneumoniaMNIST-shaped npz (official val / test sizes) named as medmnist names it."""
    info = catalog.get_info(DATA)
    sizes = {**info.split_sizes, "train": train_images}
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in sizes.items():
        labels = rng.integers(0, info.num_classes, size=(n, 1)).astype(np.uint8)
        noise = rng.integers(0, 60, size=(n, *info.image_shape))
        images = 60 + 80 * labels.reshape(n, 1, 1) + noise
        arrays[f"{split}_images"] = images.astype(np.uint8)
        arrays[f"{split}_labels"] = labels
    path = folder / info.filename
    np.savez_compressed(path, **arrays)
    return path


def timed_run(flagfile: str, data_dir: pathlib.Path, workdir: pathlib.Path, image_size: int):
    """Wall seconds of one training process (start-up, epochs, final evaluation)."""
    argv = [
        sys.executable,
        "-m",
        "tlmed_keras.train",
        f"--flagfile={flagfile}",
        f"--data={DATA}",
        f"--data_dir={data_dir}",
        "--noverify_data",  # synthetic: no official MD5
        f"--workdir={workdir}",
        "--verbose=2",
    ]
    if image_size:
        argv.append(f"--image_size={image_size}")
    start = time.perf_counter()
    subprocess.run(argv, cwd=REPO, check=True)
    return time.perf_counter() - start


def _commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


def main(argv: list[str]) -> None:
    del argv
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        synthetic_npz(tmp, FLAGS.train_images)
        load_before = os.getloadavg()[0]
        wall = timed_run(FLAGS.flagfile_path, tmp, tmp / "run", FLAGS.image_size)
        timings = json.loads((tmp / "run" / "metrics.json").read_text())["timings"]
    record = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "flagfile": os.path.relpath(FLAGS.flagfile_path, REPO),
        "image_size": FLAGS.image_size or "recipe",
        "train_images": FLAGS.train_images,
        "wall_s": round(wall, 1),
        "within_12_min": wall <= BUDGET_S,
        "load_avg_1min_before": round(load_before, 2),
        "cpus": os.cpu_count(),
        "timings": timings,  # the run's own: seconds per phase, final evaluation, session
        "commit": _commit(),
        # The TensorFlow routing switches (models.route_layers), for before/after runs.
        "switches": {k: os.environ.get(k, "1") for k in SWITCHES},
    }
    LOG.parent.mkdir(parents=True, exist_ok=True)
    with open(LOG, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    cli.run(main, prog="experiments.recipe_budget")
