"""The in-memory tf.data pipeline: shapes, values, labels, shuffling, augmentation."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import synthetic_arrays
from tlmed_keras.data import catalog, load_arrays
from tlmed_keras.data.pipeline import PipelineOptions, make_augmenter, make_dataset, task_labels
from tlmed_keras.data.preprocess import Preprocess

TORCH_LOW = (0 - 0.485) / 0.229  # the lowest value "torch" normalisation can give
TORCH_HIGH = (1 - 0.406) / 0.225


@pytest.fixture(scope="module")
def breast(medmnist_dir):
    return load_arrays("breastmnist", data_dir=medmnist_dir, download=False, cache_dir=None)


@pytest.fixture(scope="module")
def retina(medmnist_dir):
    return load_arrays("retinamnist", data_dir=medmnist_dir, download=False, cache_dir=None)


def _collect(dataset) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*dataset.as_numpy_iterator(), strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def _raw_from_unit(x: np.ndarray) -> np.ndarray:
    """Undo "unit" normalisation of an unresized grayscale batch: uint8 [N, 28, 28]."""
    return np.rint(x[..., 0] * 255).astype(np.uint8)


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_official_split_passes_whole_with_shapes_and_ranges(breast, split):
    images, labels = breast[split]
    options = PipelineOptions(batch_size=64, preprocess=Preprocess(32, "torch"), training=False)
    dataset = make_dataset(images, labels, info=breast.info, options=options)
    x, y = _collect(dataset)
    assert len(x) == breast.info.split_sizes[split]
    assert x.dtype == np.float32 and x.shape[1:] == (32, 32, 3)
    assert y.dtype == np.int32 and y.shape == (len(x),)
    np.testing.assert_array_equal(y, labels[:, 0])  # evaluation keeps the stored order
    assert TORCH_LOW - 1e-5 <= x.min() < -1.5 and 1.5 < x.max() <= TORCH_HIGH + 1e-5


def test_grayscale_is_tripled_and_rgb_kept(breast, retina):
    unit = PipelineOptions(batch_size=32, preprocess=Preprocess(28, "unit"), training=False)
    x, _ = _collect(make_dataset(*breast["val"], info=breast.info, options=unit))
    np.testing.assert_array_equal(x[..., 0], x[..., 1])
    np.testing.assert_array_equal(x[..., 0], x[..., 2])
    np.testing.assert_array_equal(_raw_from_unit(x), breast["val"][0])
    x, _ = _collect(make_dataset(*retina["val"], info=retina.info, options=unit))
    np.testing.assert_allclose(x * 255, retina["val"][0], atol=1e-3)


def test_nearest_resize_repeats_pixels(breast):
    images, labels = breast["val"]
    nearest = Preprocess(56, "unit", interpolation="nearest")
    options = PipelineOptions(batch_size=40, preprocess=nearest, training=False)
    x, _ = _collect(make_dataset(images, labels, info=breast.info, options=options))
    np.testing.assert_array_equal(_raw_from_unit(x[:, ::2, ::2]), images)
    np.testing.assert_array_equal(x[:, ::2, ::2], x[:, 1::2, 1::2])


def _train_order(splits, seed: int, epochs: int = 1) -> list[np.ndarray]:
    options = PipelineOptions(
        batch_size=100, preprocess=Preprocess(28, "unit"), training=True, seed=seed
    )
    dataset = make_dataset(*splits["train"], info=splits.info, options=options)
    return [_raw_from_unit(_collect(dataset)[0]) for _ in range(epochs)]


def _row_keys(images: np.ndarray) -> list[bytes]:
    return [row.tobytes() for row in images]


def test_shuffled_epoch_holds_every_image_once_and_seed_fixes_order(breast):
    first, second = _train_order(breast, seed=3, epochs=2)
    original = breast["train"][0]
    assert sorted(_row_keys(first)) == sorted(_row_keys(original))
    assert not np.array_equal(first, original)  # it was shuffled
    # Iterated again, the same dataset repeats its order (Keras' JAX trainer reads a batch and
    # rewinds before a fresh compile's first epoch; a resumed epoch must see the same batches).
    np.testing.assert_array_equal(first, second)
    (again,) = _train_order(breast, seed=3)
    (other,) = _train_order(breast, seed=4)  # the next epoch's seed: another order
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_multilabel_labels_are_float_vectors():
    info = catalog.get_info("chestmnist")
    arrays = synthetic_arrays("chestmnist", n={"train": 10})
    options = PipelineOptions(
        batch_size=4, preprocess=Preprocess(32), training=True, drop_remainder=True
    )
    dataset = make_dataset(
        arrays["train_images"], arrays["train_labels"], info=info, options=options
    )
    x, y = _collect(dataset)
    assert x.shape == (8, 32, 32, 3)
    assert y.dtype == np.float32 and y.shape == (8, 14) and set(np.unique(y)) <= {0.0, 1.0}


@pytest.mark.parametrize(
    "name,expected",
    [("breastmnist", np.int32), ("bloodmnist", np.int32), ("retinamnist", np.int32)],
)
def test_single_label_tasks_give_class_ids(name, expected):
    labels = synthetic_arrays(name, n={"val": 6})["val_labels"]
    out = task_labels(labels, catalog.get_info(name))
    assert out.dtype == expected and out.shape == (6,)
    np.testing.assert_array_equal(out, labels[:, 0])


def test_task_labels_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"shape \(N, 14\)"):
        task_labels(np.zeros((5, 1)), catalog.get_info("chestmnist"))


def test_augmentation_changes_train_pixels_only(retina):
    images, labels = retina["val"]
    common = dict(batch_size=60, preprocess=Preprocess(28, "unit"), seed=1)

    def dataset(**options):
        return make_dataset(
            images, labels, info=retina.info, options=PipelineOptions(**common, **options)
        )

    plain, y_plain = _collect(dataset(training=False))
    evaluated, _ = _collect(dataset(training=False, augment="basic"))
    np.testing.assert_array_equal(plain, evaluated)  # no augmentation outside training
    augmented, y_aug = _collect(dataset(training=True, augment="basic"))
    assert augmented.shape == plain.shape and augmented.dtype == np.float32
    assert augmented.min() >= 0.0 and augmented.max() <= 1.0 + 1e-6
    assert sorted(y_aug) == sorted(y_plain)
    unshuffled = _collect(dataset(training=True))[0]
    assert not np.allclose(np.sort(augmented.ravel()), np.sort(unshuffled.ravel()))


def test_bad_arguments_are_named(breast):
    images, labels = breast["val"]
    preprocess = Preprocess(28)
    with pytest.raises(ValueError, match="Unknown augmentation 'heavy'"):
        PipelineOptions(batch_size=4, preprocess=preprocess, training=True, augment="heavy")
    with pytest.raises(ValueError, match="batch_size"):
        PipelineOptions(batch_size=0, preprocess=preprocess, training=True)
    options = PipelineOptions(batch_size=4, preprocess=preprocess, training=True)
    with pytest.raises(ValueError, match="78 images but 10 labels"):
        make_dataset(images, labels[:10], info=breast.info, options=options)
    assert make_augmenter(None) is None


def test_model_with_preprocess_matches_the_pipeline(retina):
    """The exported model's front (Preprocess on raw uint8) equals what training saw."""
    images, labels = retina["test"][0][:16], retina["test"][1][:16]
    preprocess = Preprocess(48, "tf")
    options = PipelineOptions(batch_size=8, preprocess=preprocess, training=False)
    fed, _ = _collect(make_dataset(images, labels, info=retina.info, options=options))
    inputs = keras.Input((28, 28, 3), dtype="uint8")
    model = keras.Model(inputs, Preprocess.from_config(preprocess.get_config())(inputs))
    np.testing.assert_allclose(np.asarray(model.predict(images, verbose=0)), fed, atol=1e-5)


@pytest.mark.parametrize("name", ["flip", "basic"])
def test_augmentation_is_a_pure_function_of_seed_and_step(retina, name):
    """Stateless ops: the same (seed, step) gives the same batch however the parallel map
    schedules it; another seed (the next epoch's) gives another augmentation."""
    images, labels = retina["train"][0][:96], retina["train"][1][:96]

    def run(seed, augment=name):
        options = PipelineOptions(
            batch_size=8,
            preprocess=Preprocess(28, "unit"),
            training=True,
            seed=seed,
            augment=augment,
        )
        return _collect(make_dataset(images, labels, info=retina.info, options=options))

    first, again = run(5), run(5)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    plain = run(5, augment=None)[0]
    assert not np.array_equal(first[0], plain)  # augmentation is on
    if name == "flip":  # a flip only mirrors: every image is the plain one or its mirror
        mirrored = np.all(first[0] == plain[:, :, ::-1], axis=(1, 2, 3))
        kept = np.all(first[0] == plain, axis=(1, 2, 3))
        assert np.all(mirrored | kept) and 0 < mirrored.sum() < len(plain)
    augment = make_augmenter(name)
    x = images[:16].astype(np.float32)
    same = [np.asarray(augment(x, np.array([7, step]))) for step in (0, 0, 1)]
    np.testing.assert_array_equal(same[0], same[1])
    assert not np.array_equal(same[0], same[2])  # the next step draws anew


def test_sided_labels_are_read_from_the_catalog():
    organ = catalog.get_info("organamnist")
    assert {"kidney-left", "kidney-right", "lung-left", "femur-right"} <= set(organ.sided_labels)
    assert "liver" not in organ.sided_labels
    sided = {name for name in catalog.dataset_names() if catalog.get_info(name).sided_labels}
    assert sided == {"organamnist", "organcmnist", "organsmnist"}


@pytest.mark.parametrize("name", ["organamnist", "pneumoniamnist"])
def test_no_mirror_augmentation_where_labels_name_body_sides(name):
    """Both grayscale 28 px sets; with --augment=flip the batches of the set whose labels
    name body sides equal the unaugmented ones (no image mirrored), the other's differ."""
    arrays = synthetic_arrays(name, n={"train": 64})
    info = catalog.get_info(name)

    def batches(augment):
        options = PipelineOptions(
            batch_size=16, preprocess=Preprocess(28, "unit"), training=True, seed=5, augment=augment
        )
        return _collect(
            make_dataset(arrays["train_images"], arrays["train_labels"], info=info, options=options)
        )

    plain, flipped = batches(None), batches("flip")
    np.testing.assert_array_equal(plain[1], flipped[1])  # same order, same labels
    if info.sided_labels:
        np.testing.assert_array_equal(plain[0], flipped[0])
    else:
        assert not np.array_equal(plain[0], flipped[0])


def test_basic_without_flip_keeps_the_rest_of_basic():
    """Same seeds for rotation, zoom and contrast: on left-right symmetric images (which a
    flip leaves as they are) the two presets agree exactly; "flip" without mirrors is none."""
    half = np.random.default_rng(0).uniform(0, 255, size=(6, 16, 8, 1)).astype(np.float32)
    symmetric = tf.constant(np.concatenate([half, half[:, :, ::-1]], axis=2))
    seed = tf.constant([3, 4], tf.int64)
    with_flip = make_augmenter("basic")(symmetric, seed)
    without = make_augmenter("basic", mirror=False)(symmetric, seed)
    np.testing.assert_allclose(without.numpy(), with_flip.numpy(), atol=1e-4)
    assert not np.allclose(without.numpy(), symmetric.numpy())  # the rest still acts
    assert make_augmenter("flip", mirror=False) is None


def test_in_memory_pipeline_runs_without_the_autotuner_and_gives_the_same_batches(
    breast, monkeypatch
):
    """The autotuner's thread made every fit/predict return wait 0-18 s (pipeline.
    without_autotuning); switched off, the batches are the same, in the same order."""
    images, labels = breast["val"]
    info = catalog.get_info("breastmnist")
    options = PipelineOptions(
        batch_size=16, preprocess=Preprocess(32), training=True, seed=3, augment="flip"
    )
    plain = make_dataset(images, labels, info=info, options=options)
    assert plain.options().autotune.enabled is False
    monkeypatch.setenv("TLMED_KERAS_DATA_AUTOTUNE", "1")
    tuned = make_dataset(images, labels, info=info, options=options)
    assert tuned.options().autotune.enabled is not False
    x_plain, y_plain = _collect(plain)
    x_tuned, y_tuned = _collect(tuned)
    assert len(x_plain) == len(images)
    np.testing.assert_array_equal(x_plain, x_tuned)
    np.testing.assert_array_equal(y_plain, y_tuned)
