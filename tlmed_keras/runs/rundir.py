"""The run directory (``--workdir``) of a fine-tuning run, and ``load_run``.

Layout::

    WORKDIR/
      flags.txt       the run's flags (``--flagfile=WORKDIR/flags.txt`` reruns it)
      config.json     resolved config: the flags with image_size, backend and data_source
                      resolved (+ data_source_reason: why auto picked it), normalization
                      (Preprocess config), devices, task, num_classes; under
                      "flags" the flags exactly as given (what a resume must match)
      tb/             TensorBoard: train/ and validation/ scalars per epoch
      history.csv     one row per epoch (both phases)
      ckpt/           resume state: state.json + ckpt-<epoch>.npz (model + optimizer
                      variables, + "ema": the weights' average with --ema_epochs) +
                      best-<epoch>.npz (model variables of the best val AUC; the average
                      with --ema_epochs);
                      state.json records each file's SHA-256 and the previous epoch's state,
                      whose files are kept, so a damaged latest checkpoint falls back to it.
                      (Named checkpoint/ before: TensorFlow's tools read a path of that name
                      as a file. Old run directories are still read, and renamed on resume.)
      LOCK            while a trainer runs: its pid, host and command (see housekeeping)
      model.keras     the selected model (best val AUC), on preprocessed input, uncompiled
      metrics.json    {"model","data","size","seed","val","test","per_class",...}
      DONE            written last: the run is finished

Every file is written to a temporary name and renamed (a kill never leaves half a file);
temporary files a killed run left are removed at the next start (``housekeeping``).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import os
import pathlib
import tempfile
import zipfile
from typing import Any

import numpy as np

from tlmed_keras.errors import CheckpointError, TlmedError
from tlmed_keras.runs.config import Config

FLAGS_FILE = "flags.txt"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
MODEL_FILE = "model.keras"
# Keras saves only to a ".keras" name; housekeeping.TEMP_FILE_PATTERNS removes a leftover one.
MODEL_TEMP_FILE = "model.tmp.keras"
DONE_FILE = "DONE"
TB_DIR = "tb"
CKPT_DIR = "ckpt"
LEGACY_CKPT_DIR = "checkpoint"  # before issue 17; still read, renamed to CKPT_DIR on resume
STATE_FILE = "state.json"
FLAGS_KEY = "flags"  # config.json: the flags as given (top level: resolved, e.g. image_size)
# Flags that only decide whether to stop or where a file is looked for, never what is
# computed: a rerun may change them and still resume (e.g. --on_divergence=warn to continue a
# run stopped for divergence, --weights_dir on another machine).
RESUME_NEUTRAL_FLAGS = frozenset({"on_divergence", "divergence_factor", "weights_dir"})


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


class DamagedFileError(TlmedError, ValueError):
    """A run directory's file (JSON, model.keras) cannot be parsed or loaded; names it."""


def read_json(path: os.PathLike | str) -> Any:
    """The parsed file. Raises DamagedFileError naming the file when it is not valid JSON."""
    with open(path) as f:
        try:
            return json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DamagedFileError(f"{path} is damaged (not valid JSON: {e}).") from e


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: os.PathLike | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ConfigMismatchError(ValueError):
    """The workdir holds a run with other flags; ``diff`` lists them."""

    def __init__(self, message: str, diff: str = ""):
        super().__init__(message)
        self.diff = diff


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
    # SHA-256 of the files named by ``checkpoint`` and ``best``, recorded when written.
    checksums: dict[str, str] = dataclasses.field(default_factory=dict)
    # The state saved one epoch before (without its own ``previous``); its files are kept
    # so that resume can fall back to it when the latest checkpoint is damaged.
    previous: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: os.PathLike | str) -> TrainState:
        """Raises CheckpointError naming ``source`` when ``values`` has unknown keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names) if isinstance(values, dict) else ["(not a dict)"]
        if unknown:
            raise CheckpointError(
                f"{source} is not a resume state this version writes (unknown keys: "
                f"{', '.join(unknown)}). {_START_OVER}"
            )
        return cls(**values)

    def snapshot(self) -> dict[str, Any]:
        """This state as a dict, without ``previous`` (one level of fallback is kept)."""
        values = dataclasses.asdict(self)
        values["previous"] = None
        return values


_START_OVER = (
    "To start over, delete the run's ckpt/ folder (the flags stay) or use a new --workdir."
)


class RunDir:
    """Paths and files of one run directory."""

    def __init__(self, workdir: os.PathLike | str):
        self.root = pathlib.Path(workdir)
        self._written: dict[str, str] = {}  # checkpoint file -> SHA-256, this session
        self._last_saved: dict[str, Any] | None = None  # the state on disk (snapshot)

    @property
    def ckpt(self) -> pathlib.Path:
        """The checkpoint folder: ``ckpt/``, or ``checkpoint/`` of a run started before."""
        legacy = self.root / LEGACY_CKPT_DIR
        if legacy.is_dir() and not (self.root / CKPT_DIR).exists():
            return legacy
        return self.root / CKPT_DIR

    def migrate_legacy_ckpt(self) -> bool:
        """Renames an old run's ``checkpoint/`` to ``ckpt/``; True when it did."""
        if self.ckpt.name != LEGACY_CKPT_DIR:
            return False
        os.replace(self.ckpt, self.root / CKPT_DIR)
        return True

    def has_progress(self) -> bool:
        """Whether the run finished at least one epoch (or the whole run)."""
        return self.is_done() or (self.ckpt / STATE_FILE).is_file()

    def clear_unfinished(self) -> None:
        """Removes what a run that never finished an epoch wrote (config, logs, folders)."""
        import shutil

        for name in (FLAGS_FILE, CONFIG_FILE, HISTORY_FILE, METRICS_FILE):
            with contextlib.suppress(FileNotFoundError):
                (self.root / name).unlink()
        for folder in (self.tb, self.ckpt):
            shutil.rmtree(folder, ignore_errors=True)

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
            f"--{k}: {old[k]!r} in the workdir, {new[k]!r} now"
            for k in old
            if old[k] != new[k] and k not in RESUME_NEUTRAL_FLAGS
        ]
        if diff:
            raise ConfigMismatchError(
                f"{self.root} holds a run with other flags ({'; '.join(diff)}). Use a new "
                "--workdir, or rerun with the flags of its flags.txt to resume it.",
                "; ".join(diff),
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
        """The saved state as written (no checks of its files; see ``resume_state``)."""
        path = self.ckpt / STATE_FILE
        if not path.is_file():
            return None
        try:
            values = read_json(path)
        except DamagedFileError as e:
            raise CheckpointError(f"{e} {_START_OVER}") from e
        return TrainState.from_dict(values, path)

    def resume_state(self, say=print) -> TrainState | None:
        """The newest state whose checkpoint files are intact (checksums as recorded).

        When the latest checkpoint is damaged or missing, says so in one line and returns the
        previous epoch's state (its files are kept until a newer one is verified on disk).

        Raises:
            CheckpointError: a damaged state.json, or no intact checkpoint (says how to
                start over).
        """
        latest = self.load_state()
        if latest is None:
            return None
        candidates = [latest]
        if latest.previous:
            candidates.append(TrainState.from_dict(latest.previous, self.ckpt / STATE_FILE))
        problems = []
        for state in candidates:
            problem = self.damaged_files(state)
            if problem is None:
                if problems:
                    say(
                        f"{problems[0]}; resuming from the checkpoint before it "
                        f"(after epoch {state.epoch})."
                    )
                self._last_saved = state.snapshot()
                return state
            problems.append(problem)
        raise CheckpointError(
            f"No intact checkpoint in {self.ckpt}: {'; '.join(problems)}. {_START_OVER}"
        )

    def damaged_files(self, state: TrainState) -> str | None:
        """Why ``state``'s checkpoint files can't be used, or None when they are intact."""
        for name in (state.checkpoint, state.best):
            if not name:
                continue
            path = self.ckpt / name
            if not path.is_file():
                return f"checkpoint {path} is missing"
            expected = state.checksums.get(name)
            if expected is None:  # written before checksums were recorded: try reading it
                try:
                    self.load_arrays(name)
                except CheckpointError:
                    return f"checkpoint {path} is damaged (cannot be read)"
            elif file_sha256(path) != expected:
                return f"checkpoint {path} is damaged (its SHA-256 differs from when written)"
        return None

    def save_state(self, state: TrainState) -> None:
        """Records the checksums of the state's files and the previous state, writes the
        state, then removes checkpoint files neither of the two names."""
        names = [n for n in (state.checkpoint, state.best) if n]
        state.checksums = {
            n: self._written.get(n) or state.checksums.get(n) or file_sha256(self.ckpt / n)
            for n in names
        }
        state.previous = self._last_saved
        write_json(self.ckpt / STATE_FILE, dataclasses.asdict(state))
        self._last_saved = state.snapshot()
        keep = set(names)
        if state.previous:
            keep |= {state.previous.get("checkpoint"), state.previous.get("best")}
        for f in self.ckpt.glob("*.npz"):
            if f.name not in keep:
                f.unlink()

    def save_arrays(self, name: str, groups: dict[str, list[np.ndarray]]) -> str:
        """Saves lists of arrays (e.g. model and optimizer variables) as ``ckpt/name``, then
        reads the file back and checks its SHA-256 (a bad disk fails here, not at resume)."""
        buffer = io.BytesIO()
        flat = {f"{g}/{i}": a for g, arrays in groups.items() for i, a in enumerate(arrays)}
        np.savez(buffer, **flat)
        data = buffer.getvalue()
        atomic_write(self.ckpt / name, data)
        digest = sha256(data)
        if file_sha256(self.ckpt / name) != digest:
            raise CheckpointError(
                f"{self.ckpt / name} reads back different from what was written: the disk "
                "is failing or full. Free space or use another --workdir, then rerun."
            )
        self._written[name] = digest
        return name

    def load_arrays(self, name: str) -> dict[str, list[np.ndarray]]:
        """Raises CheckpointError naming the file when it is missing or cannot be read."""
        path = self.ckpt / name
        try:
            with np.load(path, allow_pickle=False) as data:
                groups: dict[str, dict[int, np.ndarray]] = {}
                for key in data.files:
                    group, index = key.rsplit("/", 1)
                    groups.setdefault(group, {})[int(index)] = data[key]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise CheckpointError(f"Checkpoint {path} cannot be read ({e}). {_START_OVER}") from e
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

    def save_model(self, model) -> None:
        """Saves ``model`` as model.keras: to ``MODEL_TEMP_FILE``, then renamed (a kill never
        leaves half a model under the real name)."""
        temp = self.root / MODEL_TEMP_FILE
        model.save(temp)
        os.replace(temp, self.root / MODEL_FILE)

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


def check_finished_run(workdir: os.PathLike | str) -> RunDir:
    """The ``RunDir`` of ``workdir`` when it holds a finished run (config.json and
    model.keras); cheap (no Keras), so entry points call it before setting up a backend.

    Raises:
        FileNotFoundError: ``workdir`` is missing or holds no finished run (saying how to
            finish or train one).
    """
    run = RunDir(workdir)
    if not run.root.is_dir():
        raise FileNotFoundError(
            f"--workdir={workdir} does not exist. Pass the run directory a training run "
            "wrote (python -m tlmed_keras.train prints it at the end)."
        )
    for name in (CONFIG_FILE, MODEL_FILE):
        if not run.path(name).is_file():
            todo = (
                " (it holds an unfinished one: finish it by rerunning python -m "
                f"tlmed_keras.train --flagfile={run.path(FLAGS_FILE)} --workdir={workdir})"
                if run.has_config()
                else " (train one with python -m tlmed_keras.train --workdir=...)"
            )
            raise FileNotFoundError(
                f"{run.path(name)} is missing: {workdir} holds no finished training run{todo}."
            )
    return run


def load_run(workdir: os.PathLike | str) -> Run:
    """Loads a finished run's config, selected model, Preprocess layer and dataset info.

    The model is loaded with ``safe_mode=True`` and ``compile=False`` (it was saved
    uncompiled: it takes preprocessed images and returns logits).

    Raises:
        FileNotFoundError: ``workdir`` holds no finished run (no model.keras / config.json).
        DamagedFileError: config.json, metrics.json or model.keras cannot be read.
    """
    from tlmed_keras.data import catalog
    from tlmed_keras.data.preprocess import Preprocess

    run = check_finished_run(workdir)
    from tlmed_keras.models import register_layers, route_layers

    resolved = run.read_config()
    config = Config.from_dict(resolved)
    register_layers(config.model)  # model.keras may hold our own layers (AlexNet, BEiT, ...)
    model = _load_model(run.path(MODEL_FILE))
    route_layers(model)  # the trainer's fast kernels (TensorFlow), for evaluate and export
    preprocess = Preprocess.from_config(resolved["normalization"])
    info = catalog.get_info(config.data, config.size)
    metrics = run.read_metrics() if run.path(METRICS_FILE).is_file() else None
    return Run(config, model, preprocess, info, resolved, metrics, run.root)


def _load_model(path: pathlib.Path):
    """The run's model.keras (safe mode, uncompiled); a damaged file is named in one line."""
    import keras

    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        reason = " ".join(str(e).split())[:300]
        raise DamagedFileError(
            f"{path} cannot be loaded ({type(e).__name__}: {reason}); the file is damaged or "
            "not a Keras model. Retrain: delete the run's DONE, model.keras and metrics.json "
            "and rerun the same train command (it resumes), or restore the file."
        ) from e
