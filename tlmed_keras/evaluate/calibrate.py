"""Temperature scaling of a run or an ensemble: where its temperature is stored, fitting it on
the validation split when it is missing (runs trained before calibration existed, an ensemble,
a new test-time augmentation mode), and the calibration part of ``evaluate``'s report.

Storage (``tlmed_keras.calibration.FILE``, one entry per TTA mode): a single run's in its run
directory (training writes the entry of its own ``--tta`` at its end); an ensemble's in
``<common parent of the runs>/eval_ensemble/``, with the member list, refitted when the members
change. ``evaluate``, ``predict`` and ``export`` all find a temperature through
``temperature_for``, so all three apply the same one.
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
class Calibration:
    """A split's calibration before and after dividing the logits by ``temperature``."""

    temperature: float
    entry: dict  # the calibration.json entry (fitted on val)
    source: Path  # the calibration.json it is stored in
    before: dict[str, float]  # {"ece", "brier"} of the raw probabilities
    after: dict[str, float]
    raw: np.ndarray = dataclasses.field(repr=False)  # probabilities [N, C]
    calibrated: np.ndarray = dataclasses.field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "fitted_on": self.entry.get("fitted_on"),
            "shared_across_labels": self.entry.get("shared_across_labels"),
            "file": str(self.source),
            "ece_bins": cal.BINS,
            "before": self.before,
            "after": self.after,
        }

    def lines(self) -> list[str]:
        b, a = self.before, self.after
        return [
            f"Calibration (ECE {cal.BINS} bins / Brier): raw {b['ece']:.4f} / {b['brier']:.4f}"
            f"  ->  temperature {self.temperature:.3f} (fitted on val) {a['ece']:.4f} / "
            f"{a['brier']:.4f}"
        ]


def calibration_path(workdirs: Sequence[os.PathLike | str]) -> Path:
    """Where the temperature of ``workdirs`` (one run, or an ensemble) is stored."""
    if len(workdirs) == 1:
        return Path(workdirs[0]) / cal.FILE
    common = Path(os.path.commonpath([os.path.abspath(w) for w in workdirs]))
    return common / ENSEMBLE_DIR / cal.FILE


def combined_logits(member_logits: Sequence[np.ndarray], task: str) -> np.ndarray:
    """One run's logits, or an ensemble's: the log of its mean probability, clipped as the
    exported ensemble clips it (``evaluate.ensemble.Averaged``)."""
    from tlmed_keras.evaluate.ensemble import EPSILON

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
    from tlmed_keras.evaluate.ensemble import with_tta
    from tlmed_keras.evaluate.evaluation import predict_logits
    from tlmed_keras.evaluate.split import load_split

    images, labels = load_split(runs[0], split, options.data_dir, options.download)
    found = []
    for run in runs:
        model = with_tta(run.model, run.info.task, options.tta)
        y_true, logits = predict_logits(run, images, labels, options.batch_size, model=model)
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
    from tlmed_keras.evaluate.ensemble import check_split_shared

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


def calibrate(y_true, logits: np.ndarray, task: str, entry: dict, path: Path) -> Calibration:
    """The ``Calibration`` of ``logits`` (one split) under the stored ``entry``."""
    temperature = float(entry["temperature"])
    raw, calibrated = cal.scaled(logits, task, 1.0), cal.scaled(logits, task, temperature)
    return Calibration(
        temperature=temperature,
        entry=entry,
        source=path,
        before=cal.scores(y_true, raw, task),
        after=cal.scores(y_true, calibrated, task),
        raw=raw,
        calibrated=calibrated,
    )
