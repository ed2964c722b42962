"""Loading and validating npz contents: every task type, the official files, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import synthetic_arrays
from tests.data.conftest import snapshot
from tlmed_keras.data import catalog, load_arrays
from tlmed_keras.data.errors import (
    BadArrayError,
    BadLabelsError,
    MissingKeysError,
    NotAnNpzError,
)

TASK_EXAMPLES = {
    "binary-class": "breastmnist",
    "multi-class": "bloodmnist",
    "ordinal-regression": "retinamnist",
    "multi-label, binary-class": "chestmnist",
}


@pytest.mark.parametrize("task,name", TASK_EXAMPLES.items())
def test_synthetic_file_of_each_task_loads(make_npz, task, name):
    path = make_npz(name, n={"train": 6, "val": 3, "test": 4})
    splits = load_arrays(name, data_dir=path.parent, download=False, verify=False, cache_dir=None)
    info = catalog.get_info(name)
    assert info.task == task and splits.info == info and splits.path == path
    assert splits.sizes() == {"train": 6, "val": 3, "test": 4}
    images, labels = splits["train"]
    assert images.dtype == np.uint8 and images.shape == (6, *info.image_shape)
    assert labels.shape == (6, info.num_classes if info.is_multilabel else 1)


@pytest.mark.parametrize("name,shape", [("breastmnist", (28, 28)), ("retinamnist", (28, 28, 3))])
def test_official_files_load_with_official_split_sizes(medmnist_dir, name, shape):
    splits = load_arrays(name, data_dir=medmnist_dir, download=False, cache_dir=None)
    info = splits.info
    assert splits.sizes() == info.split_sizes
    for images, labels in splits.values():
        assert images.dtype == np.uint8 and images.shape[1:] == shape
        assert labels.min() >= 0 and labels.max() == info.num_classes - 1
    assert splits["train"][0].max() > 200  # real pixels, not an empty array


def test_unknown_split_is_named(make_npz):
    path = make_npz("breastmnist")
    splits = load_arrays("breastmnist", data_dir=path.parent, verify=False, cache_dir=None)
    with pytest.raises(KeyError, match="Accepted: train, val, test"):
        splits["validation"]


def _write(make_npz, name, mutate) -> tuple:
    """A synthetic file of ``name`` rewritten after ``mutate(arrays)`` changed its arrays."""
    path = make_npz(name)
    arrays = synthetic_arrays(name)
    mutate(arrays)
    np.savez(path, **arrays)
    return path, snapshot(path)


def _load(path, name):
    return load_arrays(name, data_dir=path.parent, download=False, verify=False, cache_dir=None)


BAD_CONTENTS = {
    "missing key": (lambda a: a.pop("val_labels"), MissingKeysError, "val_labels"),
    "image shape": (
        lambda a: a.update(train_images=a["train_images"][:, :27]),
        BadArrayError,
        r"\(N, 28, 28\)",
    ),
    "image dtype": (
        lambda a: a.update(test_images=a["test_images"].astype(np.float32)),
        BadArrayError,
        "must be uint8",
    ),
    "label width": (
        lambda a: a.update(val_labels=np.zeros((8, 2), np.uint8)),
        BadArrayError,
        r"needs \(N, 1\)",
    ),
    "count mismatch": (
        lambda a: a.update(val_labels=a["val_labels"][:5]),
        BadArrayError,
        "8 images but 5 labels",
    ),
    "label range": (
        lambda a: a["train_labels"].__setitem__((3, 0), 7),
        BadLabelsError,
        "row 3 = 7",
    ),
}


@pytest.mark.parametrize("case", BAD_CONTENTS)
def test_bad_contents_get_specific_errors_and_file_is_untouched(make_npz, case):
    mutate, error, pattern = BAD_CONTENTS[case]
    path, before = _write(make_npz, "breastmnist", mutate)
    with pytest.raises(error, match=pattern):
        _load(path, "breastmnist")
    assert snapshot(path) == before


def test_multilabel_values_must_be_0_or_1(make_npz):
    path, before = _write(make_npz, "chestmnist", lambda a: a["test_labels"].__setitem__((0, 4), 2))
    with pytest.raises(BadLabelsError, match="0 or 1"):
        _load(path, "chestmnist")
    assert snapshot(path) == before


def test_not_an_npz(tmp_path):
    path = tmp_path / "breastmnist.npz"
    path.write_bytes(b"<html>rate limited</html>")
    before = snapshot(path)
    with pytest.raises(NotAnNpzError, match="not an npz"):
        _load(path, "breastmnist")
    assert snapshot(path) == before


def test_pickled_object_arrays_are_refused(tmp_path):
    path = tmp_path / "breastmnist.npz"
    arrays = synthetic_arrays("breastmnist")
    arrays["train_labels"] = np.array([[object()]] * 24, dtype=object)
    np.savez(path, **arrays)
    with pytest.raises(BadArrayError, match="unpickling"):
        _load(path, "breastmnist")
