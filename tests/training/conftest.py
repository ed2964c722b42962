"""Fixtures of the training tests: a tiny config on synthetic data, with the tiny registry."""

from __future__ import annotations

import dataclasses

import pytest

from tlmed_keras.training.config import Config

SPLITS = {"train": 32, "val": 16, "test": 16}


@pytest.fixture
def tiny_config(make_npz):
    """``tiny_config(data="bloodmnist", **overrides) -> Config`` on a fresh synthetic file:
    one epoch per phase, batch 8, the test-only ``tiny_cnn`` (tests/training/tiny_registry)."""

    def _make(data: str = "bloodmnist", n: dict | None = None, **overrides) -> Config:
        path = make_npz(data, 28, n or SPLITS)
        base = Config(
            model="tiny_cnn",
            data=data,
            weights="none",
            data_dir=str(path.parent),
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

    return _make
