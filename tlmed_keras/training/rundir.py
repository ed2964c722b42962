"""The run directory (``--workdir``) of a fine-tuning run, and ``load_run``.

Layout::

    WORKDIR/
      flags.txt       the run's flags (``--flagfile=WORKDIR/flags.txt`` reruns it)
      config.json     resolved config: the flags with image_size and backend resolved, +
                      normalization (Preprocess config), devices, task, num_classes; under
                      "flags" the flags exactly as given (what a resume must match)
      tb/             TensorBoard: train/ and validation/ scalars per epoch
      history.csv     one row per epoch (both phases)
      checkpoint/     resume state: state.json + ckpt-<epoch>.npz (model + optimizer
                      variables) + best-<epoch>.npz (model variables of the best val AUC)
      model.keras     the selected model (best val AUC), on preprocessed input, uncompiled
      metrics.json    {"model","data","size","seed","val","test","per_class",...}
      DONE            written last: the run is finished

Every file is written to a temporary name and renamed (a kill never leaves half a file).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import pathlib
import tempfile
from typing import Any

import numpy as np

from tlmed_keras.training.config import Config

FLAGS_FILE = "flags.txt"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
MODEL_FILE = "model.keras"
DONE_FILE = "DONE"
TB_DIR = "tb"
CKPT_DIR = "checkpoint"
STATE_FILE = "state.json"
FLAGS_KEY = "flags"  # config.json: the flags as given (top level: resolved, e.g. image_size)


def atomic_write(path: os.PathLike | str, data: str | bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file in the same folder + rename."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: os.PathLike | str, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def read_json(path: os.PathLike | str) -> Any:
    with open(path) as f:
        return json.load(f)


class ConfigMismatchError(ValueError):
    """The workdir holds a run with other flags."""


@dataclasses.dataclass
class TrainState:
    """What resuming needs, saved after every completed epoch.

    ``epoch`` counts completed epochs over both phases (the global epoch index of the next
    one); ``stopped`` lists phases ended early by patience.
    """

    epoch: int = 0
    phase: str = ""
    best_auc: float | None = None
    best_epoch: int | None = None
    wait: int = 0
    stopped: list[str] = dataclasses.field(default_factory=list)
    checkpoint: str | None = None
    best: str | None = None
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)


class RunDir:
    """Paths and files of one run directory."""

    def __init__(self, workdir: os.PathLike | str):
        self.root = pathlib.Path(workdir)
        self.ckpt = self.root / CKPT_DIR

    def path(self, name: str) -> pathlib.Path:
        return self.root / name

    @property
    def tb(self) -> pathlib.Path:
        return self.root / TB_DIR

    def is_done(self) -> bool:
        return (self.root / DONE_FILE).is_file()

    def has_config(self) -> bool:
        return (self.root / CONFIG_FILE).is_file()

    def check_same_config(self, config: Config) -> None:
        """Raises ConfigMismatchError when the workdir's run used other flags."""
        stored = Config.from_dict(read_json(self.root / CONFIG_FILE)[FLAGS_KEY])
        old, new = stored.to_dict(), config.to_dict()
        diff = [
            f"--{k}: {old[k]!r} in the workdir, {new[k]!r} now" for k in old if old[k] != new[k]
        ]
        if diff:
            raise ConfigMismatchError(
                f"{self.root} holds a run with other flags ({'; '.join(diff)}). Use a new "
                "--workdir, or rerun with the flags of its flags.txt to resume it."
            )

    def write_config(self, config: Config, resolved: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write(self.root / FLAGS_FILE, config.to_flagfile())
        values = config.to_dict()
        write_json(self.root / CONFIG_FILE, {**values, **resolved, FLAGS_KEY: values})

    def read_config(self) -> dict[str, Any]:
        return read_json(self.root / CONFIG_FILE)

    # Resume state.
    def load_state(self) -> TrainState | None:
        path = self.ckpt / STATE_FILE
        if not path.is_file():
            return None
        return TrainState(**read_json(path))

    def save_state(self, state: TrainState) -> None:
        """Writes the state, then removes checkpoint files it no longer names."""
        write_json(self.ckpt / STATE_FILE, dataclasses.asdict(state))
        keep = {state.checkpoint, state.best}
        for f in self.ckpt.glob("*.npz"):
            if f.name not in keep:
                f.unlink()

    def save_arrays(self, name: str, groups: dict[str, list[np.ndarray]]) -> str:
        """Saves lists of arrays (e.g. model and optimizer variables) as ``checkpoint/name``."""
        buffer = io.BytesIO()
        flat = {f"{g}/{i}": a for g, arrays in groups.items() for i, a in enumerate(arrays)}
        np.savez(buffer, **flat)
        atomic_write(self.ckpt / name, buffer.getvalue())
        return name

    def load_arrays(self, name: str) -> dict[str, list[np.ndarray]]:
        with np.load(self.ckpt / name) as data:
            groups: dict[str, dict[int, np.ndarray]] = {}
            for key in data.files:
                group, index = key.rsplit("/", 1)
                groups.setdefault(group, {})[int(index)] = data[key]
        return {g: [items[i] for i in range(len(items))] for g, items in groups.items()}

    def write_history(self, rows: list[dict[str, Any]]) -> None:
        keys: list[str] = []
        for row in rows:
            keys += [k for k in row if k not in keys]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.root / HISTORY_FILE, out.getvalue())

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        write_json(self.root / METRICS_FILE, metrics)

    def read_metrics(self) -> dict[str, Any]:
        return read_json(self.root / METRICS_FILE)

    def mark_done(self) -> None:
        atomic_write(self.root / DONE_FILE, "done\n")


@dataclasses.dataclass
class Run:
    """A finished run, loaded back: what evaluate/export need."""

    config: Config  # the flags, with image_size and backend resolved
    model: Any  # keras.Model on preprocessed input, returns logits
    preprocess: Any  # tlmed_keras.data.preprocess.Preprocess
    info: Any  # tlmed_keras.data.catalog.DatasetInfo
    resolved: dict[str, Any]  # everything in config.json
    metrics: dict[str, Any] | None
    workdir: pathlib.Path


def load_run(workdir: os.PathLike | str) -> Run:
    """Loads a finished run's config, selected model, Preprocess layer and dataset info.

    The model is loaded with ``safe_mode=True`` and ``compile=False`` (it was saved
    uncompiled: it takes preprocessed images and returns logits).

    Raises:
        FileNotFoundError: ``workdir`` holds no finished run (no model.keras / config.json).
    """
    import keras

    from tlmed_keras.data import catalog
    from tlmed_keras.data.preprocess import Preprocess

    run = RunDir(workdir)
    for name in (CONFIG_FILE, MODEL_FILE):
        if not run.path(name).is_file():
            raise FileNotFoundError(
                f"{run.path(name)} is missing: {workdir} holds no finished training run "
                "(train one with python -m tlmed_keras.train --workdir=...)."
            )
    with contextlib.suppress(ImportError):  # registers the models' custom layers
        import tlmed_keras.models.registry  # noqa: F401
    resolved = run.read_config()
    config = Config.from_dict(resolved)
    model = keras.saving.load_model(run.path(MODEL_FILE), safe_mode=True, compile=False)
    preprocess = Preprocess.from_config(resolved["normalization"])
    info = catalog.get_info(config.data, config.size)
    metrics = run.read_metrics() if run.path(METRICS_FILE).is_file() else None
    return Run(config, model, preprocess, info, resolved, metrics, run.root)
