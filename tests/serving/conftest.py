"""Fixtures of the export / evaluate tests: tiny finished runs of the real trainer.

``tiny_run(name)`` returns the workdir of ``train_and_evaluate`` (the test-only ``tiny_cnn``
of tests/training/tiny_registry, a couple of steps) on dataset ``name``: the official files in
../shared for breastmnist (grayscale) and retinamnist (RGB), synthetic official-shaped files
otherwise. Runs are trained once per session.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from tests.conftest import synthetic_arrays
from tests.training import tiny_registry
from tlmed_keras.data import catalog
from tlmed_keras.training.config import Config
from tlmed_keras.training.trainer import train_and_evaluate

OFFICIAL = ("breastmnist", "retinamnist")
IMAGE_SIZE = 32  # != 28: the exported graph must resize, as real backbones need


def tiny_config(name: str, data_dir: pathlib.Path, verify: bool) -> Config:
    return Config(
        model=tiny_registry.NAME,
        data=name,
        image_size=IMAGE_SIZE,
        weights="none",
        data_dir=str(data_dir),
        verify_data=verify,
        batch_size=16,
        eval_batch_size=64,
        head_epochs=1,
        head_lr=3e-2,
        finetune_epochs=0,
        warmup_epochs=0,
        max_steps_per_epoch=3,
    )


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, medmnist_dir):
    """Factory: ``tiny_run(name) -> workdir`` of a finished tiny run (cached per session)."""
    cache: dict[str, pathlib.Path] = {}

    def _make(name: str) -> pathlib.Path:
        if name not in cache:
            root = tmp_path_factory.mktemp(f"run_{name}")
            if name in OFFICIAL:
                data_dir, verify = medmnist_dir, True
            else:
                data_dir, verify = root / "data", False
                data_dir.mkdir()
                info = catalog.get_info(name)
                np.savez_compressed(data_dir / info.filename, **synthetic_arrays(name))
            config = tiny_config(name, data_dir, verify)
            train_and_evaluate(
                config, root / "run", registry=tiny_registry, say=lambda *a, **k: None
            )
            cache[name] = root / "run"
        return cache[name]

    return _make
