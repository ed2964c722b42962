"""Export a trained classifier as a verified SavedModel version, atomically.

The version is written to a hidden temporary folder beside its final place (same file system,
so the final ``rename`` is atomic), reloaded with TensorFlow's loader and compared with the
Keras model, and only then renamed to ``EXPORT_DIR/<name>/<version>``. Any failure before the
rename removes the temporary folder: TF Serving never sees a half-written version (it ignores
non-integer folder names anyway, so even a killed process leaves nothing it would load).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

import keras

from tlmed_keras.data.catalog import DatasetInfo
from tlmed_keras.export.archive import DEFAULT_PLATFORMS, check_platforms, write_archive
from tlmed_keras.serving import layout
from tlmed_keras.serving.signature import serving_spec, validate_images
from tlmed_keras.serving.verify import (
    DEFAULT_ATOL,
    describe_signature,
    keras_reference,
    verify_savedmodel,
)

REQUEST_IMAGES = 2  # images in the sample request.json


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """Where an export went and how it verified."""

    path: Path  # EXPORT_DIR/<name>/<version>
    name: str
    version: int
    max_abs_diff: float  # reloaded vs Keras probabilities, on the verification images
    num_verified: int
    signature: str  # readable description of serving_default
    models_config: Path
    request: Path


def export_savedmodel(
    model: keras.Model,
    preprocess: keras.layers.Layer,
    info: DatasetInfo,
    export_dir: str | Path,
    images,
    *,
    name: str | None = None,
    version: int | None = None,
    overwrite: bool = False,
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
    atol: float = DEFAULT_ATOL,
    metadata: dict | None = None,
    serving_base_path: str | None = None,
    temperature: float = 1.0,
) -> ExportResult:
    """Exports ``preprocess`` + ``model`` + output head as ``EXPORT_DIR/<name>/<version>/``.

    Args:
        model: classifier on preprocessed input returning logits (the run's model.keras).
        preprocess: the run's ``Preprocess`` layer; it runs inside the exported graph.
        info: the dataset the model was trained on (native size, channels, task, labels).
        export_dir: TF Serving model root; ``models.config`` is (re)written there.
        images: real raw images of the dataset (uint8, native size) to verify the export on;
            the first ones also make the sample ``request.json``.
        name: TF Serving model name (default: the dataset name).
        version: positive integer (default: one above the highest existing version).
        overwrite: replace an existing version (otherwise it is refused).
        platforms: jax2tf serialization platforms (JAX backend only).
        atol: tolerance on probabilities between the reloaded SavedModel and Keras.
        metadata: extra facts for ``assets.extra/metadata.json`` (run, model, ...).
        serving_base_path: where the server sees ``export_dir`` (for ``models.config``).
        temperature: the run's fitted temperature (``runs.calibration.temperature_for``):
            ``probabilities_calibrated`` is the softmax / sigmoid of the logits divided by it.

    Returns:
        An ``ExportResult``.

    Raises:
        FileExistsError: the version exists and ``overwrite`` is False.
        TypeError / ValueError: bad images, name, version or platforms.
        ExportVerificationError: the reloaded SavedModel disagrees with Keras.
    """
    spec = serving_spec(info)
    raw = validate_images(images, spec)
    name = layout.check_name(name or info.name)
    base = Path(export_dir) / name
    version = layout.resolve_version(base, version)
    final = base / str(version)
    if final.exists() and not overwrite:
        raise FileExistsError(
            f"{final} already exists. Choose another --version, omit it to take the next one "
            f"({max(layout.versions(base)) + 1}), or pass --overwrite to replace it."
        )
    if keras.backend.backend() == "jax":
        platforms = check_platforms(platforms)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}.")
    reference = keras_reference(model, preprocess, raw, spec, temperature=temperature)

    base.mkdir(parents=True, exist_ok=True)
    # The pid lets a later export tell a killed writer's folder from a live one (housekeeping).
    tmp = base / f".tmp-{version}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        write_archive(tmp, model, preprocess, spec, platforms, temperature)
        extras = {"temperature": float(temperature), **(metadata or {})}
        layout.write_extras(tmp, spec, _metadata(extras, platforms))
        diff = verify_savedmodel(tmp, reference, raw, spec, atol=atol)
        signature = describe_signature(tmp)
        _publish(tmp, final, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    request = layout.write_request(base, raw[:REQUEST_IMAGES])
    config = layout.write_models_config(export_dir, serving_base_path)
    return ExportResult(
        path=final,
        name=name,
        version=version,
        max_abs_diff=diff,
        num_verified=len(raw),
        signature=signature.replace(str(tmp), str(final)),
        models_config=config,
        request=request,
    )


def _metadata(extra: dict | None, platforms) -> dict:
    backend = keras.backend.backend()
    meta = {
        "keras_version": keras.__version__,
        "backend": backend,
        "exported_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    if backend == "jax":
        meta["jax2tf_native_serialization_platforms"] = list(platforms)
    return {**meta, **(extra or {})}


def _publish(tmp: Path, final: Path, overwrite: bool) -> None:
    """Renames the verified ``tmp`` to ``final``; an old version is set aside, then removed."""
    if not final.exists():
        os.rename(tmp, final)
        return
    if not overwrite:  # appeared while we were exporting
        raise FileExistsError(f"{final} appeared during the export; nothing was overwritten.")
    old = final.with_name(f".old-{final.name}-{uuid.uuid4().hex[:8]}")
    os.rename(final, old)
    try:
        os.rename(tmp, final)
    except BaseException:
        os.rename(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)
