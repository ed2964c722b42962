"""Reload an exported SavedModel with TensorFlow's loader, compare it with Keras, describe it."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tlmed_keras.serving.signature import (
    CLASS_ID,
    INPUT_NAME,
    PROBABILITIES,
    PROBABILITIES_CALIBRATED,
    ServingSpec,
    head,
    validate_images,
)

DEFAULT_ATOL = 1e-4


class ExportVerificationError(RuntimeError):
    """The reloaded SavedModel does not behave like the Keras model it was exported from."""


def keras_reference(
    model: keras.Model,
    preprocess,
    images,
    spec: ServingSpec,
    batch_size: int = 64,
    temperature: float = 1.0,
) -> dict[str, np.ndarray]:
    """The Keras model's outputs on raw images, preprocessed the way training feeds them.

    The ``Preprocess`` layer is mapped over a tf.data pipeline (TF ops), exactly as in
    training, then the classifier runs in Keras; the exported graph runs the same layer with
    the backend's ops, so this comparison also catches preprocessing drift.
    """
    raw = np.asarray(images)
    dataset = tf.data.Dataset.from_tensor_slices(raw).batch(batch_size).map(preprocess)
    logits = model.predict(dataset, verbose=0)
    out = head(keras.ops.convert_to_tensor(logits), spec.multilabel, temperature)
    return {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}


def load_signature(path: str | Path):
    """``tf.saved_model.load(path).signatures["serving_default"]`` with a clear error."""
    path = Path(path)
    if not (path / "saved_model.pb").is_file():
        raise FileNotFoundError(
            f"No SavedModel at {path} (saved_model.pb missing). Pass a version folder "
            "EXPORT_DIR/<name>/<version>/ written by `python -m tlmed_keras.export`."
        )
    loaded = tf.saved_model.load(str(path))
    if "serving_default" not in loaded.signatures:
        raise ExportVerificationError(
            f"{path} has no serving_default signature (found: {list(loaded.signatures)})."
        )
    # Keep the loaded object alive: the signature only holds weak references to its variables.
    fn = loaded.signatures["serving_default"]
    fn._tlmed_owner = loaded
    return fn


def run_signature(fn, images: np.ndarray, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Runs a loaded signature over ``images`` in batches and concatenates the outputs."""
    parts: dict[str, list] = {}
    for start in range(0, len(images), batch_size):
        out = fn(**{INPUT_NAME: tf.constant(images[start : start + batch_size])})
        for key, value in out.items():
            parts.setdefault(key, []).append(value.numpy())
    return {key: np.concatenate(values) for key, values in parts.items()}


def describe_signature(path: str | Path) -> str:
    """A readable description of ``serving_default`` (like ``saved_model_cli show``)."""
    fn = load_signature(path)
    _, inputs = fn.structured_input_signature
    lines = [f"SavedModel {path}", "signature_def['serving_default']:", "  inputs:"]
    for name, spec in sorted(inputs.items()):
        lines.append(f"    {name}: {spec.dtype.name} {_shape(spec.shape)}")
    lines.append("  outputs:")
    for name, spec in sorted(fn.structured_outputs.items()):
        lines.append(f"    {name}: {spec.dtype.name} {_shape(spec.shape)}")
    return "\n".join(lines)


def _shape(shape: tf.TensorShape) -> str:
    return "[" + ", ".join("batch" if d is None else str(d) for d in shape.as_list()) + "]"


def check_signature(fn, spec: ServingSpec) -> None:
    """Checks the signature's input (name, uint8, native shape) and output names.

    Raises:
        ExportVerificationError: naming the mismatch.
    """
    _, inputs = fn.structured_input_signature
    want = tf.TensorSpec([None, *spec.image_shape], tf.uint8)
    got = inputs.get(INPUT_NAME)
    if set(inputs) != {INPUT_NAME} or got.dtype != tf.uint8 or got.shape != want.shape:
        raise ExportVerificationError(
            f"serving_default should take {INPUT_NAME}: uint8 {want.shape}, takes {inputs}."
        )
    if set(fn.structured_outputs) != set(spec.output_names):
        raise ExportVerificationError(
            f"serving_default should return {spec.output_names}, "
            f"returns {sorted(fn.structured_outputs)}."
        )


def verify_savedmodel(
    path: str | Path,
    reference: dict[str, np.ndarray],
    images,
    spec: ServingSpec,
    atol: float = DEFAULT_ATOL,
) -> float:
    """Reloads the SavedModel at ``path`` and compares it with ``reference`` on ``images``.

    Probabilities, raw and calibrated, must agree within ``atol``; class ids must agree
    wherever the reference's top two probabilities are more than ``atol`` apart (a near tie
    may flip either way); 0/1 multi-label predictions likewise away from the 0.5 threshold.

    Returns:
        The largest absolute difference of the probabilities.

    Raises:
        ExportVerificationError: a signature or output mismatch.
    """
    raw = validate_images(images, spec)
    fn = load_signature(path)
    check_signature(fn, spec)
    got = run_signature(fn, raw)
    diff = max(_probability_diff(got, reference, name, atol) for name in _PROBABILITY_OUTPUTS)
    ref_p = np.asarray(reference[PROBABILITIES], np.float32)
    second = spec.output_names[1]
    ref_id, got_id = np.asarray(reference[second]), got[second]
    if spec.multilabel:
        decisive = np.abs(ref_p - 0.5) > atol
    else:
        top2 = np.sort(ref_p, axis=-1)[:, -2:]
        decisive = (top2[:, -1] - top2[:, 0]) > atol
    if np.any((ref_id != got_id) & decisive):
        raise ExportVerificationError(
            f"SavedModel {second} differs from the Keras model's on "
            f"{int(np.sum((ref_id != got_id) & decisive))} of {len(raw)} images."
        )
    return diff


_PROBABILITY_OUTPUTS = (PROBABILITIES, PROBABILITIES_CALIBRATED)


def _probability_diff(got: dict, reference: dict, name: str, atol: float) -> float:
    """The largest |SavedModel - Keras| of output ``name``.

    Raises:
        ExportVerificationError: other shapes, or a difference above ``atol`` (or NaN).
    """
    want = np.asarray(reference[name], np.float32)
    if got[name].shape != want.shape:
        raise ExportVerificationError(
            f"{name} have shape {got[name].shape} in the SavedModel, {want.shape} in Keras."
        )
    diff = float(np.max(np.abs(got[name] - want)))
    if not diff <= atol:  # also catches NaN
        raise ExportVerificationError(
            f"SavedModel {name} differ from the Keras model's by {diff:.3g} > {atol:g} "
            f"on {len(want)} images."
        )
    return diff


def predict(path: str | Path, images, spec: ServingSpec | None = None, batch_size: int = 64):
    """Runs an exported model on raw images after checking them against its contract.

    Args:
        path: a version folder ``EXPORT_DIR/<name>/<version>/``.
        images: uint8 ``[B, H, W, C]`` (or ``[B, H, W]`` for grayscale sets), native size.
        spec: the contract; read from the export's ``assets.extra/metadata.json`` if omitted.
        batch_size: images per call.

    Returns:
        ``{"probabilities": float32 [B, classes], "class_id": int32 [B],
        "probabilities_calibrated": float32 [B, classes]}`` (``"predictions"`` int32
        [B, labels] instead of ``class_id`` for multi-label sets; exports made before
        calibration existed have no ``probabilities_calibrated``).

    Raises:
        TypeError / ValueError: images of the wrong dtype or shape (see ``validate_images``).
    """
    from tlmed_keras.serving.layout import read_metadata

    spec = spec or read_metadata(path)
    raw = validate_images(images, spec)
    return run_signature(load_signature(path), raw, batch_size)


__all__ = [
    "CLASS_ID",
    "DEFAULT_ATOL",
    "PROBABILITIES_CALIBRATED",
    "ExportVerificationError",
    "check_signature",
    "describe_signature",
    "keras_reference",
    "load_signature",
    "predict",
    "run_signature",
    "verify_savedmodel",
]
