"""Shared test set-up: backend, the ../shared material, synthetic MedMNIST files.

Area-specific fixtures live in a conftest.py inside that area's test folder.
"""

from __future__ import annotations

import os
import pathlib

# Keras fixes its backend at import: set it before any test module imports keras.
# JAX is the project's primary backend; tests of other backends run in subprocesses.
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # tests never use an accelerator

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tlmed_keras.data import catalog  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("TLMED_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> pathlib.Path:
    """``../shared`` beside the checkout (CI has it too). Tests using it need its files."""
    if not SHARED.is_dir():
        pytest.fail(
            f"These tests need the shared material at {SHARED} (../shared beside the checkout, "
            "or set TLMED_SHARED)."
        )
    return SHARED


@pytest.fixture(scope="session")
def medmnist_dir(shared_dir) -> pathlib.Path:
    """Folder holding the official breastmnist.npz and retinamnist.npz."""
    return shared_dir / "data" / "medmnist"


def synthetic_arrays(name: str, size: int = 28, n: dict | None = None, seed: int = 0) -> dict:
    """Arrays shaped exactly like the official MedMNIST npz of ``name`` at ``size``.

    Images carry a class-dependent brightness so a model can learn something from them.
    """
    info = catalog.get_info(name, size)
    n = n or {"train": 24, "val": 8, "test": 8}
    rng = np.random.default_rng(seed)
    out = {}
    for split, count in n.items():
        if info.is_multilabel:
            labels = rng.integers(0, 2, size=(count, info.num_classes))
            level = labels[:, 0]
        else:
            labels = (np.arange(count) % info.num_classes)[:, None]
            rng.shuffle(labels)
            level = labels[:, 0]
        base = (level * (200 // max(info.num_classes - 1, 1)) + 20).astype(np.int64)
        noise = rng.integers(0, 30, size=(count, *info.image_shape))
        images = np.clip(base.reshape((count,) + (1,) * len(info.image_shape)) + noise, 0, 255)
        out[f"{split}_images"] = images.astype(np.uint8)
        out[f"{split}_labels"] = labels.astype(np.uint8)
    return out


@pytest.fixture
def make_npz(tmp_path):
    """Factory: ``make_npz("bloodmnist", size=28, n=None) -> path`` of a synthetic file
    named as medmnist names it, in a fresh folder (``path.parent`` is a valid data_dir)."""

    def _make(name: str, size: int = 28, n: dict | None = None, seed: int = 0) -> pathlib.Path:
        folder = tmp_path / f"data_{name}_{size}"
        folder.mkdir(exist_ok=True)
        path = folder / catalog.get_info(name, size).filename
        np.savez_compressed(path, **synthetic_arrays(name, size, n, seed))
        return path

    return _make
