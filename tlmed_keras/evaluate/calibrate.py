"""The calibration part of ``evaluate``'s report: ECE and Brier before and after the
temperature that ``tlmed_keras.runs.calibration`` stores (fitted on the validation split).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from tlmed_keras import calibration as cal
from tlmed_keras.runs.calibration import (  # noqa: F401 (evaluate's calibration API)
    calibration_path,
    combined_logits,
    member_logits,
    temperature_for,
)


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
