"""What predicts: a finished run directory or an exported SavedModel, behind one interface.

A ``Predictor`` has ``spec`` (the serving contract: dataset, stored size, channels, task,
label names), ``probabilities(images)`` on raw uint8 ``[B, size, size, C]`` images, and
``calibration``, which says which probabilities those are: calibrated by the run's
temperature (fitted on the validation split, ``runs.calibration``) unless ``raw=True``.
``mean_probabilities`` takes a list of predictors, so an ensemble of runs is a list of them
(it checks they agree on the dataset and size). Import after ``runtime.setup``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from tlmed_keras.serving.signature import (  # after runtime.setup
    PROBABILITIES,
    PROBABILITIES_CALIBRATED,
    ServingSpec,
)

RAW = "raw (uncalibrated)"


class Predictor(Protocol):
    spec: ServingSpec
    source: str
    calibration: str  # which probabilities: RAW or "calibrated, temperature T"
    workdir: str | None  # the training run's directory, when known

    def probabilities(self, images: np.ndarray) -> np.ndarray: ...


class RunPredictor:
    """A finished training run (``--workdir``): model.keras + the training Preprocess."""

    def __init__(self, workdir: os.PathLike | str, batch_size: int = 64, raw: bool = False):
        from tlmed_keras.runs.rundir import load_run
        from tlmed_keras.serving.signature import serving_spec

        self.run = load_run(workdir)
        self.spec = serving_spec(self.run.info)
        self.source = os.fspath(workdir)
        self.workdir = self.source  # where its training images' statistics are cached
        self.batch_size = batch_size
        self.temperature, self.calibration = None, RAW
        if not raw:
            self.temperature, self.calibration = _run_temperature(self.run, workdir)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        from tlmed_keras.serving.verify import keras_reference

        out = keras_reference(
            self.run.model,
            self.run.preprocess,
            images,
            self.spec,
            self.batch_size,
            temperature=self.temperature or 1.0,
        )
        name = PROBABILITIES if self.temperature is None else PROBABILITIES_CALIBRATED
        return np.asarray(out[name], dtype=np.float32)


def _run_temperature(run, workdir) -> tuple[float | None, str]:
    """``(temperature, what the probabilities are)`` of the run without test-time
    augmentation (predict applies none): stored, or fitted now on the run's validation split
    and stored (``runs.calibration``); raw when neither is possible."""
    from tlmed_keras.runs.calibration import FitOptions, temperature_for

    try:
        entry, _ = temperature_for([run], [workdir], FitOptions())
    except FileNotFoundError as e:  # no temperature stored and no validation data here
        return None, f"{RAW}: no temperature stored and none can be fitted ({e})"
    if entry is None:
        return None, f"{RAW}: no held-out split to fit a temperature on"
    return float(entry["temperature"]), f"calibrated, temperature {entry['temperature']:.3f}"


class SavedModelPredictor:
    """An exported SavedModel version folder (``--saved_model``), read by TF's loader."""

    def __init__(self, path: os.PathLike | str, batch_size: int = 64, raw: bool = False):
        from tlmed_keras.serving.layout import read_metadata, read_temperature

        self.spec = read_metadata(path)
        self.source = os.fspath(path)
        self.workdir = exported_from(path)
        self.batch_size = batch_size
        temperature = None if raw else read_temperature(path)
        self.output = PROBABILITIES if temperature is None else PROBABILITIES_CALIBRATED
        if raw:
            self.calibration = RAW
        elif temperature is None:  # exported before calibration existed
            self.calibration = RAW + ": this export has no calibrated output; export it again"
        else:
            self.calibration = f"calibrated, temperature {temperature:.3f}"

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        from tlmed_keras.serving.verify import predict

        out = predict(self.source, images, self.spec, self.batch_size)
        return np.asarray(out[self.output], dtype=np.float32)


def exported_from(version_dir: os.PathLike | str) -> str | None:
    """The run directory an export's metadata names (``workdir``), or None."""
    from tlmed_keras.serving.layout import EXTRA, METADATA_FILE

    path = os.path.join(version_dir, EXTRA, METADATA_FILE)
    with open(path) as f:
        workdir = json.load(f).get("workdir")
    return str(workdir) if workdir else None


def common_spec(predictors: Sequence[Predictor]) -> ServingSpec:
    """The spec every predictor shares.

    Raises:
        ValueError: no predictor, or predictors of other datasets, sizes or label sets.
    """
    if not predictors:
        raise ValueError("No model given: pass --workdir=RUN or --saved_model=DIR.")
    first = predictors[0].spec
    for other in predictors[1:]:
        if (other.spec.dataset, other.spec.size, other.spec.label_names) != (
            first.dataset,
            first.size,
            first.label_names,
        ):
            raise ValueError(
                f"{other.source} predicts {other.spec.dataset} at {other.spec.size} px but "
                f"{predictors[0].source} predicts {first.dataset} at {first.size} px: "
                "combine models of one dataset and size only."
            )
    return first


def mean_probabilities(predictors: Sequence[Predictor], images: np.ndarray) -> np.ndarray:
    """Probabilities ``[B, classes]`` averaged over ``predictors`` (one: its own)."""
    common_spec(predictors)
    return np.mean([p.probabilities(images) for p in predictors], axis=0)
