"""Fixtures of the export / evaluate tests: tiny finished run directories.

``tiny_run(name)`` returns the workdir of a run of a tiny conv net on dataset ``name``: the
official files in ../shared for breastmnist (grayscale) and retinamnist (RGB), synthetic
official-shaped files otherwise. Runs are built once per session.
"""

from __future__ import annotations

import json
import pathlib

import keras
import numpy as np
import pytest

from tests.conftest import synthetic_arrays
from tlmed_keras.data import catalog
from tlmed_keras.data.preprocess import Preprocess
from tlmed_keras.training.config import Config

OFFICIAL = ("breastmnist", "retinamnist")
IMAGE_SIZE = 32  # != 28: the exported graph must resize


def _tiny_classifier(num_classes: int, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="image")
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="head")(x))


def _write_run(workdir: pathlib.Path, name: str, data_dir: pathlib.Path, verify: bool) -> None:
    """A finished run directory per docs/CONTRACTS.md, with a briefly fitted tiny model."""
    info = catalog.get_info(name)
    preprocess = Preprocess(IMAGE_SIZE, normalization="unit")
    model = _tiny_classifier(info.num_classes, seed=0)
    data = np.load(data_dir / info.filename)
    x = keras.ops.convert_to_numpy(preprocess(data["train_images"][:32]))
    y = data["train_labels"][:32]
    if info.is_multilabel:
        loss, y = keras.losses.BinaryCrossentropy(from_logits=True), y.astype("float32")
    else:
        loss, y = keras.losses.SparseCategoricalCrossentropy(from_logits=True), y[:, 0]
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    workdir.mkdir(parents=True)
    model.save(workdir / "model.keras", include_optimizer=False)
    config = Config(model="tiny_cnn", data=name, data_dir=str(data_dir), verify_data=verify)
    resolved = {
        **config.to_dict(),
        "image_size": IMAGE_SIZE,
        "normalization": preprocess.get_config(),
        "backend": keras.backend.backend(),
        "task": info.task,
        "num_classes": info.num_classes,
        "label_names": list(info.label_names),
    }
    (workdir / "config.json").write_text(json.dumps(resolved, indent=2))
    (workdir / "DONE").write_text("")


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
            _write_run(root / "run", name, data_dir, verify)
            cache[name] = root / "run"
        return cache[name]

    return _make
