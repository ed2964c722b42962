"""TF Serving's on-disk layout: ``EXPORT_DIR/<name>/<version>/`` plus what travels beside it.

tensorflow_model_server watches ``base_path = EXPORT_DIR/<name>`` and loads the children whose
names are integers (versions); anything else there (our ``request.json``, hidden temporary
folders) is ignored. Each version holds ``saved_model.pb``, ``variables/`` and
``assets.extra/`` (files for the server's operators: ``labels.txt``, ``metadata.json``).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from tlmed_keras.serving.signature import INPUT_NAME, ServingSpec

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
EXTRA = "assets.extra"
LABELS_FILE = "labels.txt"
METADATA_FILE = "metadata.json"
REQUEST_FILE = "request.json"
MODELS_CONFIG = "models.config"
REST_PORT = 8501


def check_name(name: str) -> str:
    """A model name usable in TF Serving URLs (``/v1/models/<name>:predict``)."""
    if not NAME_PATTERN.match(name or ""):
        raise ValueError(
            f"Invalid model name {name!r}: use letters, digits, '_', '-', '.' "
            "(it becomes the TF Serving URL /v1/models/<name>:predict)."
        )
    return name


def versions(model_base: str | Path) -> list[int]:
    """Integer version folders under ``model_base`` (the ones TF Serving would load)."""
    base = Path(model_base)
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())


def resolve_version(model_base: str | Path, version: int | None) -> int:
    """``version`` checked (a positive integer), or one above the highest existing one."""
    if version is None:
        return max(versions(model_base), default=0) + 1
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"--version must be a positive integer, got {version!r}.")
    return version


def write_extras(version_dir: str | Path, spec: ServingSpec, metadata: dict) -> None:
    """Writes ``assets.extra/labels.txt`` (one label per line, index order) and
    ``assets.extra/metadata.json`` (the contract plus ``metadata``) into a version folder."""
    extra = Path(version_dir) / EXTRA
    extra.mkdir(parents=True, exist_ok=True)
    (extra / LABELS_FILE).write_text("".join(f"{name}\n" for name in spec.label_names))
    (extra / METADATA_FILE).write_text(
        json.dumps({**spec.to_json(), **metadata}, indent=2, sort_keys=True) + "\n"
    )


def read_temperature(version_dir: str | Path) -> float | None:
    """The temperature of an export's ``probabilities_calibrated`` (metadata.json), or None
    for an export made before that output existed."""
    path = Path(version_dir) / EXTRA / METADATA_FILE
    value = json.loads(path.read_text()).get("temperature") if path.is_file() else None
    return None if value is None else float(value)


def read_metadata(version_dir: str | Path) -> ServingSpec:
    """The ``ServingSpec`` stored in an export's ``assets.extra/metadata.json``."""
    path = Path(version_dir) / EXTRA / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: is {version_dir} a version folder written by "
            "`python -m tlmed_keras.export`?"
        )
    meta = json.loads(path.read_text())
    return ServingSpec(
        dataset=meta["dataset"],
        task=meta["task"],
        label_names=tuple(meta["label_names"]),
        image_shape=tuple(int(d) for d in meta["input"]["shape"][1:]),
    )


def read_labels(version_dir: str | Path) -> list[str]:
    """Label names of an export, index order."""
    return (Path(version_dir) / EXTRA / LABELS_FILE).read_text().splitlines()


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_models_config(export_dir: str | Path, base_path: str | None = None) -> Path:
    """Writes ``EXPORT_DIR/models.config`` listing every model folder with a version.

    Args:
        export_dir: the folder holding ``<name>/<version>/`` trees.
        base_path: where the server sees ``export_dir`` (e.g. ``/models`` inside the
            tensorflow/serving container); defaults to its absolute path here.
    """
    root = Path(export_dir).resolve()
    seen_as = (base_path or str(root)).rstrip("/")
    names = sorted(
        p.name for p in root.iterdir() if p.is_dir() and NAME_PATTERN.match(p.name) and versions(p)
    )
    entries = "".join(
        "  config {\n"
        f'    name: "{name}"\n'
        f'    base_path: "{seen_as}/{name}"\n'
        '    model_platform: "tensorflow"\n'
        "  }\n"
        for name in names
    )
    path = root / MODELS_CONFIG
    _atomic_write(path, "model_config_list {\n" + entries + "}\n")
    return path


def write_request(model_base: str | Path, images: np.ndarray) -> Path:
    """Writes ``<name>/request.json``: a REST ``:predict`` body (row format) of ``images``."""
    body = {
        "signature_name": "serving_default",
        "instances": [{INPUT_NAME: image.tolist()} for image in np.asarray(images)],
    }
    path = Path(model_base) / REQUEST_FILE
    _atomic_write(path, json.dumps(body, separators=(",", ":")) + "\n")
    return path


def curl_line(name: str, request: str | Path = REQUEST_FILE, host: str = "localhost") -> str:
    """The command that posts ``request`` to a running tensorflow_model_server."""
    return (
        f"curl -s -X POST http://{host}:{REST_PORT}/v1/models/{name}:predict "
        f"-H 'Content-Type: application/json' -d @{request}"
    )
