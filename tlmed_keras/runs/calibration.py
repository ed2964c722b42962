"""Where a run's or an ensemble's temperature is stored, and fitting it on the validation
split when it is missing (runs trained before calibration existed, an ensemble, a new
test-time augmentation mode). Below the jobs: ``evaluate``, ``export`` and ``predict`` all find
a temperature through ``temperature_for``, so all three apply the same one.

Storage (``tlmed_keras.calibration.FILE``, one entry per TTA mode): a single run's in its run
directory (training writes the entry of its own ``--tta`` at its end); an ensemble's in
``<common parent of the runs>/eval_ensemble/``, with the member list, refitted when the members
change.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tlmed_keras import calibration as cal
from tlmed_keras import metrics as mm

ENSEMBLE_DIR = "eval_ensemble"


@dataclasses.dataclass(frozen=True)
class FitOptions:
    """How the validation split is read when a temperature must be fitted (``evaluate``'s
    ``EvalOptions`` carries the same fields).

    Attributes:
        tta: the test-time augmentation mode the temperature is for (one entry per mode).
        data_dir, download: where the npz file is / whether to fetch it (default: the run's).
        batch_size: prediction batch size.
    """

    tta: str = "none"
    data_dir: str | None = None
    download: bool | None = None
    batch_size: int = 256


def calibration_path(workdirs: Sequence[os.PathLike | str]) -> Path:
    """Where the temperature of ``workdirs`` (one run, or an ensemble) is stored."""
    if len(workdirs) == 1:
        return Path(workdirs[0]) / cal.FILE
    common = Path(os.path.commonpath([os.path.abspath(w) for w in workdirs]))
    return common / ENSEMBLE_DIR / cal.FILE


def combined_logits(member_logits: Sequence[np.ndarray], task: str) -> np.ndarray:
    """One run's logits, or an ensemble's: the log of its mean probability, clipped as the
    exported ensemble clips it (``runs.ensemble.Averaged``)."""
    from tlmed_keras.runs.ensemble import EPSILON

    if len(member_logits) == 1:
        return np.asarray(member_logits[0], dtype=np.float64)
    mean = np.mean([mm.probabilities(z, task) for z in member_logits], axis=0)
    p = np.clip(mean, EPSILON, 1.0 - EPSILON)
    if task == mm.MULTILABEL:
        return np.log(p) - np.log(1.0 - p)
    return np.log(p)


def member_logits(runs: Sequence[Any], split: str, options: Any):
    """``(y_true, [logits of each run])`` on ``split`` (read once), each run with
    ``options.tta``."""
    from tlmed_keras.runs.ensemble import with_tta
    from tlmed_keras.runs.passes import run_logits
    from tlmed_keras.runs.split import load_split

    images, labels = load_split(runs[0], split, options.data_dir, options.download)
    found = []
    for run in runs:
        model = with_tta(run.model, run.info.task, options.tta)
        y_true, logits = run_logits(run, images, labels, options.batch_size, model=model)
        found.append(logits)
    return y_true, found


def _members(workdirs) -> list[str]:
    return [os.path.abspath(w) for w in workdirs]


def _stored(path: Path, workdirs, tta: str) -> dict | None:
    entry = cal.read_entries(path).get(tta)
    if entry is None or (len(workdirs) > 1 and entry.get("members") != _members(workdirs)):
        return None
    return entry


def temperature_for(
    runs: Sequence[Any], workdirs, options: Any, val: tuple | None = None
) -> tuple[dict | None, Path]:
    """``(calibration.json entry, its path)`` of the runs under ``options.tta``: the stored
    one, else fitted on the validation split now and stored. ``val``: ``(y_true, member
    logits)`` of the val split when the caller has them. The entry is None for members whose
    "val" splits differ (cross-fitted on different folds): no split is held out from all of
    them.
    """
    from tlmed_keras.runs.ensemble import check_split_shared

    path = calibration_path(workdirs)
    entry = _stored(path, workdirs, options.tta)
    if entry is not None:
        return entry, path
    try:
        check_split_shared(runs, "val")
    except ValueError:
        return None, path
    y_val, logits = val if val is not None else member_logits(runs, "val", options)
    task = runs[0].info.task
    facts = {"tta": options.tta}
    if len(workdirs) > 1:
        facts["members"] = _members(workdirs)
    entry = cal.fit_entry(combined_logits(logits, task), y_val, task, **facts)
    path.parent.mkdir(parents=True, exist_ok=True)
    cal.store_entry(path, options.tta, entry)
    return entry, path
