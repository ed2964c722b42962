"""Shared test set-up: backend, the ../shared material, synthetic MedMNIST files, and the
tiny training fixtures every package's tests use (``tiny_config``, ``tiny_run``; the model is
the test-only ``tiny_cnn`` of tests/tiny_registry).

Area-specific fixtures live in a conftest.py inside that area's test folder.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

# Keras fixes its backend at import: set it before any test module imports keras.
# JAX is the project's primary backend; tests of other backends run in subprocesses.
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # tests never use an accelerator

import dataclasses  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tests import tiny_registry  # noqa: E402
from tlmed_keras.data import catalog  # noqa: E402
from tlmed_keras.runs.config import Config  # noqa: E402  (dataclasses only, no Keras)

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("TLMED_SHARED", REPO.parent / "shared"))


def run_python(*args: str, cwd=REPO, timeout: float = 600, **env: str):
    """``python ARGS`` in a child process with this interpreter (see ``run_command``)."""
    return run_command([sys.executable, *args], cwd=cwd, timeout=timeout, **env)


def run_command(command: list[str] | str, cwd=REPO, timeout: float = 600, **env: str):
    """``command`` (an argument list, or one line for ``sh``, as a scheduler runs it) in a
    child process (this checkout first on the path, no accelerator, ``env`` added): a
    ``CompletedProcess`` with text output; the exit code is the test's to check."""
    return subprocess.run(
        command,
        shell=isinstance(command, str),
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


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


TINY_SPLITS = {"train": 32, "val": 16, "test": 16}
TINY_RUN_DATA = ("breastmnist", "retinamnist")  # tiny runs on the official files in ../shared
TINY_RUN_IMAGE_SIZE = 32  # != 28: the exported graph must resize, as real backbones need


def make_tiny_config(data: str, data_dir: os.PathLike | str, **overrides) -> Config:
    """The tiny ``tiny_cnn`` config on ``data_dir``: one epoch per phase, batch 8, seconds on a
    CPU. ``overrides`` are Config fields."""
    base = Config(
        model=tiny_registry.NAME,
        data=data,
        weights="none",
        data_dir=str(data_dir),
        verify_data=False,
        batch_size=8,
        eval_batch_size=8,
        head_epochs=1,
        head_lr=1e-2,
        finetune_epochs=1,
        finetune_lr=1e-2,
        warmup_epochs=0,
        batchnorm="frozen",
        backend="jax",
    )
    return dataclasses.replace(base, **overrides)


def tiny_run_config(data: str, data_dir: os.PathLike | str, verify: bool) -> Config:
    """The config of ``tiny_run``: head phase only, three steps, images resized to 32."""
    return make_tiny_config(
        data,
        data_dir,
        image_size=TINY_RUN_IMAGE_SIZE,
        verify_data=verify,
        batch_size=16,
        eval_batch_size=64,
        head_lr=3e-2,
        finetune_epochs=0,
        max_steps_per_epoch=3,
    )


@pytest.fixture
def tiny_config(make_npz):
    """``tiny_config(data="bloodmnist", n=None, **overrides) -> Config`` (``make_tiny_config``)
    on a fresh synthetic file of ``n`` images per split (default ``TINY_SPLITS``)."""

    def _make(data: str = "bloodmnist", n: dict | None = None, **overrides) -> Config:
        path = make_npz(data, 28, n or TINY_SPLITS)
        return make_tiny_config(data, path.parent, **overrides)

    return _make


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, medmnist_dir):
    """Factory: ``tiny_run(name) -> workdir`` of a finished tiny run of the real trainer
    (cached per session): the official files in ../shared for breastmnist (grayscale) and
    retinamnist (RGB), synthetic official-shaped files otherwise."""
    from tlmed_keras.train.trainer import train_and_evaluate  # Keras: only where used

    cache: dict[str, pathlib.Path] = {}

    def _make(name: str) -> pathlib.Path:
        if name not in cache:
            root = tmp_path_factory.mktemp(f"run_{name}")
            if name in TINY_RUN_DATA:
                data_dir, verify = medmnist_dir, True
            else:
                data_dir, verify = root / "data", False
                data_dir.mkdir()
                info = catalog.get_info(name)
                np.savez_compressed(data_dir / info.filename, **synthetic_arrays(name))
            config = tiny_run_config(name, data_dir, verify)
            train_and_evaluate(
                config, root / "run", registry=tiny_registry, say=lambda *a, **k: None
            )
            cache[name] = root / "run"
        return cache[name]

    return _make
