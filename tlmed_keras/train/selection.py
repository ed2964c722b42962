"""Checkpoint selection on a validation metric (``--select_on``): which epoch's weights the
trainer keeps, evaluates on test and lets ``--patience`` watch. Any of the epoch's metrics
(``epoch_metrics.METRICS``) can select."""

from __future__ import annotations

import math

from tlmed_keras.runs.config import SELECT_ON
from tlmed_keras.train import epoch_metrics

DEFAULT = SELECT_ON[0]  # --select_on's choices are the run config's: the default first
LOWER_IS_BETTER = ("loss",)


def selection_value(logs: dict, select_on: str) -> float | None:
    """The epoch's ``val_<select_on>`` from Keras' logs, or None when missing or not finite
    (e.g. AUC of a split with one class)."""
    value = logs.get(epoch_metrics.val_key(select_on))
    if value is None or not math.isfinite(float(value)):
        return None
    return float(value)


def improves(value: float | None, best: float | None, select_on: str) -> bool:
    """Whether ``value`` beats ``best`` (strictly: ties keep the earlier epoch)."""
    if value is None:
        return False
    if best is None:
        return True
    return value < best if select_on in LOWER_IS_BETTER else value > best
