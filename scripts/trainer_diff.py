"""Before/after check of a trainer change: tiny seeded runs, their files compared.

    python scripts/trainer_diff.py train OUT               # with the code as it is now
    python scripts/trainer_diff.py compare BEFORE AFTER    # the code under test, after

``train`` writes three runs of the test-only ``tiny_cnn`` on the official BreastMNIST file in
../shared (both phases, a few steps an epoch, seconds on a CPU):

- ``whole``: head + fine-tune, EMA, ``--tta=flip``, run without a break;
- ``resumed``: selection on val loss with ``--patience``, killed after epoch 2 and resumed;
- ``half``: the same flags as ``resumed``, killed after epoch 2 and left unfinished.

``compare`` diffs BEFORE's and AFTER's ``whole`` and ``resumed``, then finishes a copy of
BEFORE's ``half`` with the code now installed (an old run directory resumed by new code) and
diffs it against BEFORE's ``resumed``. Compared: config.json, metrics.json, history.csv and
the weights in model.keras. Left out: the wall-clock timings (metrics.json's ``timings``,
history.csv's ``seconds``), and two readings of the process rather than the code in
config.json: ``data_source_reason`` (it quotes the RAM available when the run started) and the
Preprocess layer's ``name`` (Keras numbers layers per process: ``preprocess_3`` for the third
run of one process). Exits 1 when anything differs, printing each difference.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

SHARED = pathlib.Path(os.environ.get("TLMED_SHARED", REPO.parent / "shared"))
RUNS = ("whole", "resumed")
KILL_AFTER = 2  # epochs
TIMING_FIELDS = {"metrics.json": ("timings",), "history.csv": ("seconds",)}
PROCESS_FIELDS = ("data_source_reason",)  # config.json: the RAM available at the start


# Both phases, two epochs each, three steps an epoch: seconds on a CPU.
TINY_RUN = {"image_size": 32, "head_epochs": 2, "finetune_epochs": 2, "max_steps_per_epoch": 3}
TINY_RUN |= {"batch_size": 16, "eval_batch_size": 64}


class _Killed(Exception):
    """Stands for a kill after an epoch's checkpoint is on disk."""


def _configs() -> dict:
    from tests.conftest import make_tiny_config

    data_dir = SHARED / "data" / "medmnist"
    if not (data_dir / "breastmnist.npz").is_file():
        raise SystemExit(f"{data_dir}/breastmnist.npz is missing: set TLMED_SHARED.")
    base = make_tiny_config("breastmnist", data_dir, **TINY_RUN)
    whole = dataclasses.replace(base, ema_epochs=1.0, tta="flip", label_smoothing=0.1)
    resumed = dataclasses.replace(base, select_on="loss", patience=1, seed=1)
    return {"whole": whole, "resumed": resumed, "half": resumed}


def _train(config, workdir: pathlib.Path, kill_after: int | None = None) -> None:
    from tests import tiny_registry
    from tlmed_keras.train.trainer import train_and_evaluate

    def hook(epoch, phase, model):
        if epoch == kill_after:
            raise _Killed

    with contextlib.suppress(_Killed):
        train_and_evaluate(
            config, workdir, registry=tiny_registry, say=lambda *a, **k: None, epoch_end_hook=hook
        )


def train(out: pathlib.Path) -> None:
    """Writes ``out/whole``, ``out/resumed`` and ``out/half`` (see the module docstring)."""
    configs = _configs()
    _train(configs["whole"], out / "whole")
    _train(configs["resumed"], out / "resumed", kill_after=KILL_AFTER)
    _train(configs["resumed"], out / "resumed")
    _train(configs["half"], out / "half", kill_after=KILL_AFTER)


def _config(run: pathlib.Path) -> dict:
    config = json.loads((run / "config.json").read_text())
    for field in PROCESS_FIELDS:
        config.pop(field, None)
    config["normalization"].pop("name", None)
    return config


def _metrics(run: pathlib.Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    for field in TIMING_FIELDS["metrics.json"]:
        metrics.pop(field, None)
    return metrics


def _history(run: pathlib.Path) -> list[dict]:
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    return [{k: v for k, v in row.items() if k not in TIMING_FIELDS["history.csv"]} for row in rows]


def _weights(run: pathlib.Path) -> str:
    """SHA-256 of the arrays in model.keras's weights file (the files themselves carry save
    times)."""
    import io
    import zipfile

    import h5py

    digest = hashlib.sha256()
    with (
        zipfile.ZipFile(run / "model.keras") as z,
        h5py.File(io.BytesIO(z.read("model.weights.h5")), "r") as h5,
    ):
        names: list[str] = []
        h5.visit(lambda name: names.append(name) if isinstance(h5[name], h5py.Dataset) else None)
        for name in sorted(names):
            digest.update(name.encode() + h5[name][()].tobytes())
    return digest.hexdigest()


def _differences(before: pathlib.Path, after: pathlib.Path) -> list[str]:
    readers = {
        "config.json": _config,
        "metrics.json": _metrics,
        "history.csv": _history,
        "model.keras weights": _weights,
    }
    return [
        f"{name}: {before} != {after}"
        for name, read in readers.items()
        if read(before) != read(after)
    ]


def compare(before: pathlib.Path, after: pathlib.Path) -> int:
    """Prints every difference between the runs of ``before`` and ``after``; 1 if any."""
    finished = after / "half_finished_by_this_code"
    shutil.rmtree(finished, ignore_errors=True)
    shutil.copytree(before / "half", finished)
    _train(_configs()["half"], finished)
    pairs = [(before / name, after / name) for name in RUNS]
    pairs.append((before / "resumed", finished))
    found = [line for b, a in pairs for line in _differences(b, a)]
    for b, a in pairs:
        print(f"compared {b} with {a}")
    print(
        "\n".join(
            found
            or ["identical (left out: timings, data_source_reason, the Preprocess layer's name)"]
        )
    )
    return 1 if found else 0


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[1] == "train":
        train(pathlib.Path(argv[2]))
        return 0
    if len(argv) == 4 and argv[1] == "compare":
        return compare(pathlib.Path(argv[2]), pathlib.Path(argv[3]))
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
