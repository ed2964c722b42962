"""predict warns when an image is unlike the model's training images (pixel statistics after
the same conversion), with the range cached in the run directory."""

from __future__ import annotations

import dataclasses
import json
import types

import numpy as np
import pytest
from PIL import Image

from tests.conftest import make_tiny_config
from tlmed_keras.data import catalog
from tlmed_keras.predict import familiar
from tlmed_keras.predict.images import to_medmnist


@pytest.fixture(scope="module")
def breast(medmnist_dir):
    with np.load(medmnist_dir / "breastmnist.npz") as data:
        return {key: data[key] for key in ("train_images", "val_images", "test_images")}


def test_real_scans_pass_and_noise_white_and_a_photo_are_flagged(breast, shared_dir):
    known = familiar.pixel_range(breast["train_images"], "breastmnist", 28)
    assert known.names == ("mean", "sd", "texture") and known.images == 546
    held_out = np.concatenate([breast["val_images"], breast["test_images"]])[..., None]
    flagged = [familiar.outside(known, image) for image in held_out]
    assert sum(f is not None for f in flagged) / len(held_out) <= 0.05  # measured 1.7 %
    noise = np.random.default_rng(0).integers(0, 256, (20, 28, 28, 1), dtype=np.uint8)
    assert all("texture" in familiar.outside(known, image) for image in noise)
    white = np.full((28, 28, 1), 254, np.uint8)  # a 16-bit X-ray as convert("L") left it
    white[0, 0] = 0
    assert familiar.outside(known, white).startswith("mean 253.")
    cat = Image.open(shared_dir / "data" / "photos" / "chelsea_224.png")
    assert familiar.outside(known, to_medmnist(cat, 28, 1, centre_crop=False)) is not None


def test_colour_sets_get_one_mean_per_channel():
    images = np.random.default_rng(1).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    known = familiar.pixel_range(images, "retinamnist", 28)
    assert known.names == ("mean R", "mean G", "mean B", "sd", "texture")
    stats = familiar.statistics(images)
    np.testing.assert_allclose(known.low, stats.min(axis=0), rtol=1e-6)
    assert familiar.outside(known, images[2]) is None  # a training image lies inside
    assert "mean R" in familiar.outside(known, np.zeros((8, 8, 3), np.uint8))


def _run_dir(tmp_path, medmnist_dir, **overrides):
    """A run directory's config.json as training writes it (the range needs nothing else)."""
    config = make_tiny_config("breastmnist", medmnist_dir, verify_data=True, **overrides)
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / familiar.CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(config)))
    return workdir


def test_the_range_is_computed_once_and_cached_in_the_run(tmp_path, medmnist_dir, breast):
    workdir = _run_dir(tmp_path, medmnist_dir)
    known = familiar.range_for_run(workdir)
    assert known == familiar.pixel_range(breast["train_images"], "breastmnist", 28)
    cached = workdir / familiar.RANGE_FILE
    stored = json.loads(cached.read_text())
    stored["high"][0] = 1.0  # a cache that differs shows that the next call reads it
    cached.write_text(json.dumps(stored))
    assert familiar.range_for_run(workdir).high[0] == 1.0


def test_a_cross_fitted_run_uses_its_training_folds(tmp_path, medmnist_dir, breast):
    from tlmed_keras.data import folds, load_arrays

    known = familiar.range_for_run(_run_dir(tmp_path, medmnist_dir, cv_folds=5, cv_fold=2))
    splits = folds.cross_fit(load_arrays("breastmnist", 28, medmnist_dir), 5, 2)
    assert known.images == len(splits["train"][0]) != len(breast["train_images"])


def test_a_run_directory_the_cache_cannot_be_written_to_still_gets_the_range(
    tmp_path, medmnist_dir
):
    workdir = _run_dir(tmp_path, medmnist_dir)
    (workdir / familiar.RANGE_FILE).mkdir()  # the name taken (root ignores read-only modes)
    assert familiar.range_for_run(workdir).dataset == "breastmnist"
    assert sorted(p.name for p in workdir.iterdir()) == [familiar.CONFIG_FILE, familiar.RANGE_FILE]


def _export(dataset: str, workdir=None):
    """What ``training_range`` reads of a SavedModelPredictor: its spec and run directory."""
    from tlmed_keras.serving.signature import serving_spec

    return types.SimpleNamespace(spec=serving_spec(catalog.get_info(dataset)), workdir=workdir)


def test_an_export_without_its_run_uses_the_default_data_folder_or_says_so(
    tmp_path, medmnist_dir, monkeypatch
):
    empty = tmp_path / "medmnist_cache"
    empty.mkdir()
    monkeypatch.setattr(catalog, "default_root", lambda: str(empty))
    known, note = familiar.training_range([_export("breastmnist", str(tmp_path / "gone"))])
    assert known is None and "not compared with breastmnist's training images" in note
    assert "\n" not in note
    (empty / "breastmnist.npz").symlink_to(medmnist_dir / "breastmnist.npz")
    known, note = familiar.training_range([_export("breastmnist")])
    assert note is None and known.images == 546
    ran = _run_dir(tmp_path, medmnist_dir)
    known, _ = familiar.training_range([_export("breastmnist", str(ran))])
    assert (ran / familiar.RANGE_FILE).is_file()  # the run named in the export's metadata
