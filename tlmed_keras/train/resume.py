"""Resuming a run: the checks on a run directory that already holds one, the data source it
started with, its EMA, and variables to and from checkpoint arrays. (One trainer per run
directory: ``housekeeping.RunLock``, taken in ``trainer.train_and_evaluate``.)"""

from __future__ import annotations

import keras
import numpy as np

from tlmed_keras.errors import CheckpointError
from tlmed_keras.runs import rundir
from tlmed_keras.runs.config import Config
from tlmed_keras.train import ema
from tlmed_keras.train.setup import Setup


def arrays_of(variables) -> list[np.ndarray]:
    """Copies of ``variables``' values, as a checkpoint stores them."""
    return [np.array(keras.ops.convert_to_numpy(v.value)) for v in variables]


def assign_arrays(variables, arrays, what: str) -> None:
    """Assigns checkpoint ``arrays`` to ``variables``.

    Raises:
        CheckpointError: the arrays do not match the variables in number or shape (``what``
            names the group: model, optimizer).
    """
    variables = list(variables)
    shapes = [tuple(v.shape) for v in variables]
    if len(arrays) != len(variables) or any(
        tuple(a.shape) != s for a, s in zip(arrays, shapes, strict=True)
    ):
        raise CheckpointError(
            f"The checkpoint's {what} variables do not match the model built from the flags "
            "(was the model code changed?). Use a new --workdir."
        )
    for v, a in zip(variables, arrays, strict=True):
        v.assign(a)


def check_workdir(run: rundir.RunDir, config: Config) -> str | None:
    """Raises ConfigMismatchError when ``run`` finished epochs with other flags; returns the
    notice to print when it holds a run with other flags that never finished an epoch (it is
    replaced once the new model is built)."""
    if not run.has_config():
        return None
    try:
        run.check_same_config(config)
    except rundir.ConfigMismatchError as e:
        if run.has_progress():
            raise
        return (
            f"{run.root} holds a run with other flags that never finished an epoch; "
            f"replacing it ({e.diff})."
        )
    return None


def recorded_source(run: rundir.RunDir, replacing: str | None) -> str | None:
    """The data source the run in ``run`` started with (config.json), unless it is replaced."""
    if replacing or not run.has_config():
        return None
    return run.read_config().get("data_source")


def start_ema(config: Config, s: Setup, model) -> ema.WeightEMA | None:
    """The EMA of ``--ema_epochs`` (None when 0), started from ``model``'s weights now."""
    if not config.ema_epochs:
        return None
    return ema.WeightEMA(model, ema.decay_per_step(config.ema_epochs, s.steps))


def restore_ema(average: ema.WeightEMA | None, saved: dict, path) -> None:
    """Restores the EMA of a resumed run from its checkpoint, or refuses to resume."""
    if average is None:
        return
    if "ema" not in saved or not average.load(saved["ema"]):
        raise CheckpointError(
            f"{path} holds no EMA of the weights that fits this model; a run with "
            "--ema_epochs needs one to resume. Use a new --workdir (or delete the run's "
            "ckpt/ folder)."
        )
