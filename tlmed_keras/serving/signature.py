"""What the serving signature takes and returns, and the python-side input check.

The signature takes raw MedMNIST pixels exactly as the official npz stores them (uint8, native
size), with an explicit channel axis: ``[batch, H, W, C]``, C = 1 for grayscale sets. All
preprocessing (the ``Preprocess`` layer of training) runs inside the exported graph.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from tlmed_keras.data.catalog import DatasetInfo

INPUT_NAME = "images"
PROBABILITIES = "probabilities"  # raw: softmax / sigmoid of the model's logits
# softmax / sigmoid of logits / T, T the run's temperature fitted on val (docs/calibration.md)
PROBABILITIES_CALIBRATED = "probabilities_calibrated"
CLASS_ID = "class_id"  # single-label: [batch] int32, argmax of the probabilities
PREDICTIONS = "predictions"  # multi-label: [batch, labels] int32 0/1, probability > 0.5
MULTILABEL_THRESHOLD = 0.5  # medmnist.evaluator.getACC uses y_score > 0.5


@dataclasses.dataclass(frozen=True)
class ServingSpec:
    """The contract of one exported model: input shape/dtype, outputs, label names."""

    dataset: str
    task: str
    label_names: tuple[str, ...]
    image_shape: tuple[int, int, int]  # (H, W, C), C explicit even for grayscale

    @property
    def size(self) -> int:
        """The dataset's MedMNIST size: the side of its square images (not stored twice, so
        it cannot disagree with ``image_shape``)."""
        return self.image_shape[0]

    @property
    def multilabel(self) -> bool:
        return self.task.startswith("multi-label")

    @property
    def output_names(self) -> tuple[str, str, str]:
        return (
            PROBABILITIES,
            PREDICTIONS if self.multilabel else CLASS_ID,
            PROBABILITIES_CALIBRATED,
        )

    def to_json(self) -> dict:
        return {
            "dataset": self.dataset,
            "size": self.size,
            "task": self.task,
            "label_names": list(self.label_names),
            "input": {"name": INPUT_NAME, "dtype": "uint8", "shape": [None, *self.image_shape]},
            "outputs": {
                PROBABILITIES: "float32 [batch, classes]: "
                + ("sigmoid per label" if self.multilabel else "softmax over classes"),
                self.output_names[1]: (
                    f"int32 [batch, labels]: 1 where probability > {MULTILABEL_THRESHOLD}"
                    if self.multilabel
                    else "int32 [batch]: index into label_names"
                ),
                PROBABILITIES_CALIBRATED: f"float32 [batch, classes]: {PROBABILITIES} with the "
                "logits divided by the temperature fitted on the validation split "
                "(metadata.json: temperature); same argmax and ranking",
            },
        }


def serving_spec(info: DatasetInfo) -> ServingSpec:
    """The serving contract of a dataset at its catalog size."""
    return ServingSpec(
        dataset=info.name,
        task=info.task,
        label_names=tuple(info.label_names),
        image_shape=(info.size, info.size, info.channels),
    )


def head(logits, multilabel: bool, temperature: float = 1.0) -> dict:
    """Logits ``[B, classes]`` -> the named serving outputs (backend ops, traceable).
    Decisions come from the raw probabilities; dividing by ``temperature > 0`` changes
    neither the argmax nor the 0.5 threshold."""
    ops = keras.ops
    scale = ops.sigmoid if multilabel else (lambda z: ops.softmax(z, axis=-1))
    probs = scale(logits)
    calibrated = scale(ops.divide(logits, ops.cast(temperature, logits.dtype)))
    if multilabel:
        decided = {PREDICTIONS: ops.cast(ops.greater(probs, MULTILABEL_THRESHOLD), "int32")}
    else:
        decided = {CLASS_ID: ops.cast(ops.argmax(probs, axis=-1), "int32")}
    return {PROBABILITIES: probs, **decided, PROBABILITIES_CALIBRATED: calibrated}


def validate_images(images, spec: ServingSpec) -> np.ndarray:
    """Checks raw images against the serving contract and returns ``[B, H, W, C]`` uint8.

    Grayscale images may come as stored in the MedMNIST npz, ``[B, H, W]``; a channel axis is
    added. A single image without the batch axis is refused (ambiguous with a batch).

    Raises:
        TypeError: not uint8 (e.g. already preprocessed floats).
        ValueError: wrong rank, size or channels, or an empty batch.
    """
    arr = np.asarray(images)
    h, w, c = spec.image_shape
    expected = f"[batch, {h}, {w}, {c}]" + (f" (or [batch, {h}, {w}])" if c == 1 else "")
    if arr.dtype != np.uint8:
        raise TypeError(
            f"The {spec.dataset} export takes raw uint8 pixels {expected}, got dtype {arr.dtype}. "
            "Pass the images exactly as the MedMNIST npz stores them: resizing and "
            "normalisation run inside the exported model."
        )
    if c == 1 and arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or tuple(arr.shape[1:]) != (h, w, c):
        raise ValueError(
            f"The {spec.dataset} export (size {spec.size}) takes images {expected}, got shape "
            f"{list(arr.shape)}. Use the {spec.size} px files of {spec.dataset}, or export a "
            "model trained on the size you have."
        )
    if arr.shape[0] == 0:
        raise ValueError("Got an empty batch (0 images); pass at least one image.")
    return arr
