"""The metrics of a training epoch, as data (as in flax's ``examples/imagenet``).

Each split has the same metrics, ``METRICS``. Keras' compiled loss and ``keras_metrics``
(running estimates over the training batches) log them as ``name``;
``callbacks.ValidationMetrics`` (``callbacks.compute_metrics`` on the full validation
predictions) logs them as ``val_name``; ``callbacks.LearningRateLogger`` adds
``learning_rate``. The history rows, TensorBoard, the one-line epoch summary and
``--select_on`` loop over these names instead of spelling them.

Standard library only: ``config`` imports it (through ``selection``) before Keras is set up.
"""

from __future__ import annotations

import math

METRICS = ("loss", "acc", "auc")
VAL_PREFIX = "val_"
LEARNING_RATE = "learning_rate"
# history.csv's metric columns, in order (each row also has epoch, phase and seconds).
HISTORY_KEYS = (*METRICS, *(VAL_PREFIX + name for name in METRICS), LEARNING_RATE)


def val_key(name: str) -> str:
    """The epoch-log key of validation metric ``name`` (``"auc"`` -> ``"val_auc"``)."""
    return VAL_PREFIX + name


def val_logs(metrics: dict[str, float]) -> dict[str, float]:
    """A split's metrics dict as validation entries of the epoch logs."""
    return {val_key(name): value for name, value in metrics.items()}


def undefined() -> dict[str, float]:
    """Every metric NaN: a split that was not evaluated (the training loss is not finite)."""
    return dict.fromkeys(METRICS, math.nan)


def epoch_row(logs: dict) -> dict[str, float | None]:
    """``HISTORY_KEYS`` of the epoch logs, as floats (None where missing)."""
    return {key: None if logs.get(key) is None else float(logs[key]) for key in HISTORY_KEYS}


def by_split(logs: dict) -> dict[str, dict[str, float]]:
    """The logged values per TensorBoard run, ``{"train": ..., "validation": ...}``, keyed by
    metric name (the learning rate goes with train); missing values are left out."""
    splits = {
        "train": {name: logs.get(name) for name in (*METRICS, LEARNING_RATE)},
        "validation": {name: logs.get(val_key(name)) for name in METRICS},
    }
    return {
        split: {name: float(value) for name, value in values.items() if value is not None}
        for split, values in splits.items()
    }


def summary_text(logs: dict) -> str:
    """``loss L acc A auc U | val loss L acc A auc U`` (4 decimals, n/a where missing)."""

    def values(key) -> str:
        return " ".join(f"{name} {_short(logs.get(key(name)))}" for name in METRICS)

    return f"{values(lambda name: name)} | val {values(val_key)}"


def _short(value) -> str:
    return "n/a" if value is None else f"{float(value):.4f}"
