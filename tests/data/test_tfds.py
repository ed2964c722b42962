"""The TFDS builder and the TFDS-backed pipeline, prepared from the real BreastMNIST file."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tlmed_keras.data import catalog, load_arrays, tfds_builder
from tlmed_keras.data.errors import ChecksumError
from tlmed_keras.data.pipeline import PipelineOptions, make_dataset_from_tfds
from tlmed_keras.data.preprocess import Preprocess


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory, medmnist_dir):
    """A TFDS folder with breastmnist_28 prepared once for the module."""
    folder = tmp_path_factory.mktemp("tfds")
    tfds_builder.prepared_builder(
        "breastmnist", 28, tfds_dir=folder, npz_dir=medmnist_dir, cache_dir=None
    )
    return folder


@pytest.fixture(scope="module")
def breast(medmnist_dir):
    return load_arrays("breastmnist", data_dir=medmnist_dir, download=False, cache_dir=None)


def test_configs_cover_every_dataset_and_size():
    names = {config.name for config in tfds_builder.MedMNIST.BUILDER_CONFIGS}
    assert len(names) == len(catalog.dataset_names()) * len(catalog.SIZES)
    assert {"breastmnist_28", "tissuemnist_224", "chestmnist_64"} <= names


def test_tfds_load_gives_official_splits_and_images(tfds_dir, breast, medmnist_dir):
    builder = tfds.builder("medmnist/breastmnist_28", data_dir=tfds_dir, npz_dir=medmnist_dir)
    assert {s: builder.info.splits[s].num_examples for s in catalog.SPLITS} == (
        breast.info.split_sizes
    )
    assert builder.info.features["label"].names == list(breast.info.label_names)
    for split in catalog.SPLITS:
        examples = list(tfds.load("medmnist/breastmnist_28", split=split, data_dir=tfds_dir))
        index = np.array([int(e["index"]) for e in examples])
        assert sorted(index) == list(range(breast.info.split_sizes[split]))
        images, labels = breast[split]
        stored = np.stack([e["image"].numpy() for e in examples])
        assert stored.dtype == np.uint8 and stored.shape[1:] == (28, 28)
        np.testing.assert_array_equal(stored, images[index])
        np.testing.assert_array_equal([int(e["label"]) for e in examples], labels[index, 0])


def _breast_dataset(tfds_dir, medmnist_dir, split: str, options, shuffle_buffer=None):
    """The TFDS-backed pipeline over the module's prepared breastmnist_28 copy."""
    return make_dataset_from_tfds(
        "breastmnist",
        28,
        split,
        options=options,
        tfds_dir=tfds_dir,
        npz_dir=medmnist_dir,
        shuffle_buffer=shuffle_buffer,
        cache_dir=None,
    )


def _indices_of_epoch(tfds_dir, medmnist_dir, breast, seed) -> np.ndarray:
    """Train-split order as rows of the npz, recovered from the unnormalised pixels."""
    options = PipelineOptions(
        batch_size=100, preprocess=Preprocess(28, "unit"), training=True, seed=seed
    )
    dataset = _breast_dataset(tfds_dir, medmnist_dir, "train", options, shuffle_buffer=200)
    row_of = {img.tobytes(): i for i, img in enumerate(breast["train"][0])}
    passes = []
    for _ in range(2):  # the same dataset iterated twice (Keras' JAX trainer may rewind it)
        order = []
        for x, y in dataset.as_numpy_iterator():
            assert x.shape[1:] == (28, 28, 3) and x.dtype == np.float32 and y.dtype == np.int32
            raw = np.rint(x[..., 0] * 255).astype(np.uint8)
            order += [row_of[img.tobytes()] for img in raw]
        passes.append(np.array(order))
    np.testing.assert_array_equal(passes[0], passes[1])  # one order per dataset
    return passes[0]


def test_tfds_pipeline_epoch_holds_every_image_once_and_is_seeded(tfds_dir, medmnist_dir, breast):
    first = _indices_of_epoch(tfds_dir, medmnist_dir, breast, seed=5)
    assert sorted(first) == list(range(546))
    np.testing.assert_array_equal(first, _indices_of_epoch(tfds_dir, medmnist_dir, breast, 5))
    assert not np.array_equal(first, _indices_of_epoch(tfds_dir, medmnist_dir, breast, 6))


def test_tfds_pipeline_eval_split_counts_and_labels(tfds_dir, medmnist_dir, breast):
    options = PipelineOptions(batch_size=64, preprocess=Preprocess(64, "torch"), training=False)
    dataset = _breast_dataset(tfds_dir, medmnist_dir, "test", options)
    batches = list(dataset.as_numpy_iterator())
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    assert x.shape == (156, 64, 64, 3) and -2.2 < x.min() < x.max() < 2.7
    assert np.bincount(y).tolist() == np.bincount(breast["test"][1][:, 0]).tolist()


def test_multilabel_synthetic_prepares_with_label_vectors(make_npz, tmp_path):
    path = make_npz("chestmnist", n={"train": 6, "val": 2, "test": 2})
    dataset = make_dataset_from_tfds(
        "chestmnist",
        28,
        "train",
        options=PipelineOptions(
            batch_size=3, preprocess=Preprocess(32), training=True, augment="flip"
        ),
        tfds_dir=tmp_path / "tfds",
        npz_dir=path.parent,
        cache_dir=None,
        verify=False,
    )
    (x1, y1), (x2, y2) = dataset.as_numpy_iterator()
    assert x1.shape == (3, 32, 32, 3) and y1.shape == (3, 14) and y1.dtype == np.float32
    assert dataset.options().autotune.enabled is False  # pipeline.without_autotuning


def test_preparation_refuses_a_file_with_wrong_md5(make_npz, tmp_path):
    path = make_npz("pneumoniamnist")
    with pytest.raises(ChecksumError):
        tfds_builder.prepared_builder(
            "pneumoniamnist", 28, tfds_dir=tmp_path / "tfds", npz_dir=path.parent, cache_dir=None
        )


def test_default_shuffle_buffer_is_bounded_by_memory():
    from tlmed_keras.data.pipeline import SHUFFLE_BUFFER_BYTES, default_shuffle_buffer

    assert default_shuffle_buffer(catalog.get_info("breastmnist", 28)) == 10_000
    big = default_shuffle_buffer(catalog.get_info("pathmnist", 224))
    assert big == SHUFFLE_BUFFER_BYTES // (224 * 224 * 3) and big * 224 * 224 * 3 <= 256 << 20
    assert default_shuffle_buffer(catalog.get_info("tissuemnist", 224)) == 5349  # grey: 3x


def test_preparation_streams_the_npz_without_loading_whole_arrays(make_npz, tmp_path, monkeypatch):
    """Generation reads members chunk by chunk; np.load (whole arrays) is never called."""
    path = make_npz("dermamnist", n={"train": 9, "val": 3, "test": 3})

    def refuse(*args, **kwargs):
        raise AssertionError("np.load would hold a whole array in memory")

    monkeypatch.setattr(np, "load", refuse)
    monkeypatch.setattr(tfds_builder, "ROWS_PER_CHUNK", 2)
    builder = tfds_builder.prepared_builder(
        "dermamnist",
        28,
        tfds_dir=tmp_path / "tfds",
        npz_dir=path.parent,
        cache_dir=None,
        verify=False,
    )
    assert builder.info.splits["train"].num_examples == 9
    monkeypatch.undo()
    with np.load(path) as data:
        expected = data["train_images"]
    examples = tfds.as_numpy(builder.as_dataset(split="train"))
    by_index = {int(e["index"]): e["image"] for e in examples}
    np.testing.assert_array_equal(np.stack([by_index[i] for i in range(9)]), expected)
