"""Mixup and CutMix: images and targets blended by the same weight, seeded, post-Preprocess."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import synthetic_arrays
from tlmed_keras.data import catalog, load_arrays, mixing
from tlmed_keras.data.pipeline import PipelineOptions, make_dataset
from tlmed_keras.data.preprocess import Preprocess

BATCH, CLASSES = 8, 4


@pytest.fixture(scope="module")
def retina_arrays(medmnist_dir):
    return load_arrays("retinamnist", data_dir=medmnist_dir, download=False, cache_dir=None)


def _indexed_batch(size: int = 12):
    """Image i is constant i + 1 (so a pixel's value tells which images it mixes) and has
    class i % CLASSES, so partners i and B - 1 - i never share a class."""
    images = np.broadcast_to(
        np.arange(1, BATCH + 1, dtype=np.float32)[:, None, None, None], (BATCH, size, size, 3)
    ).copy()
    ids = np.arange(BATCH) % CLASSES
    assert all(ids[i] != ids[BATCH - 1 - i] for i in range(BATCH))
    return tf.constant(images), tf.one_hot(ids, CLASSES), ids


def _own_share(targets: np.ndarray, ids: np.ndarray) -> np.ndarray:
    return targets[np.arange(BATCH), ids]


def test_mixup_blends_images_and_targets_by_the_same_weight():
    images, targets, ids = _indexed_batch()
    mixed, soft = mixing.mixup_batch(images, targets, tf.constant([3, 4], tf.int64), 0.4)
    mixed, soft = mixed.numpy(), soft.numpy()
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-6)
    lam = _own_share(soft, ids)
    own, partner = np.arange(1, BATCH + 1), np.arange(BATCH, 0, -1)
    np.testing.assert_allclose(mixed[:, 0, 0, 0], lam * own + (1 - lam) * partner, rtol=1e-5)
    assert np.all(mixed == mixed[:, :1, :1, :1])  # the whole image takes one weight
    assert len(np.unique(np.round(lam, 6))) > 1  # a weight per image, not one per batch


def test_cutmix_pastes_one_box_and_targets_follow_its_area():
    images, targets, ids = _indexed_batch(size=20)
    mixed, soft = mixing.cutmix_batch(images, targets, tf.constant([5, 6], tf.int64), 1.0)
    mixed, soft = mixed.numpy()[..., 0], soft.numpy()
    pasted = 0
    for i in range(BATCH):
        from_partner = mixed[i] == BATCH - i
        assert np.all(from_partner | (mixed[i] == i + 1))  # no blending inside a CutMix
        rows, cols = np.nonzero(from_partner)
        if rows.size:  # the pasted pixels fill exactly their bounding box
            box = from_partner[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
            assert box.all()
            pasted += 1
        np.testing.assert_allclose(_own_share(soft, ids)[i], 1 - from_partner.mean(), atol=1e-6)
    assert pasted >= BATCH // 2


def test_mixing_is_a_pure_function_of_the_seed():
    images, targets, _ = _indexed_batch()
    mix = mixing.make_mixer(mixup=0.4, cutmix=1.0)
    first = [t.numpy() for t in mix(images, targets, tf.constant([1, 2], tf.int64))]
    again = [t.numpy() for t in mix(images, targets, tf.constant([1, 2], tf.int64))]
    other = [t.numpy() for t in mix(images, targets, tf.constant([1, 3], tf.int64))]
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[1], other[1])


def test_both_on_draws_mixup_or_cutmix_per_batch():
    images, targets, _ = _indexed_batch()
    mix = mixing.make_mixer(mixup=0.4, cutmix=1.0)
    kinds = set()
    for step in range(20):
        mixed = mix(images, targets, tf.constant([0, step], tf.int64))[0].numpy()
        is_cutmix = np.all(np.isin(mixed, np.arange(1, BATCH + 1)))  # whole pixel values
        kinds.add("cutmix" if is_cutmix else "mixup")
    assert kinds == {"mixup", "cutmix"}


def test_beta_draws_have_the_beta_mean_and_variance():
    alpha = 0.2
    lam = mixing.beta([20000], tf.constant([7, 8], tf.int64), alpha).numpy()
    assert lam.min() >= 0 and lam.max() <= 1
    assert abs(lam.mean() - 0.5) < 0.015
    expected_var = 1 / (4 * (2 * alpha + 1))  # Var of Beta(a, a)
    assert abs(lam.var() - expected_var) / expected_var < 0.05


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_bad_alpha_is_refused_by_name(bad):
    with pytest.raises(ValueError, match=r"--cutmix=.*0 \(off\) or a positive"):
        mixing.make_mixer(cutmix=bad)
    with pytest.raises(ValueError, match=r"--mixup="):
        PipelineOptions(batch_size=4, preprocess=Preprocess(28), training=True, mixup=bad)
    assert mixing.make_mixer(0.0, 0.0) is None


def test_pipeline_mixes_after_preprocess_and_keeps_augmentation(retina_arrays):
    """Outside each CutMix box a pixel is exactly the unmixed pipeline's (so the augmentation
    and its seeds are untouched by turning mixing on); targets are soft [B, classes]."""
    images, labels = retina_arrays["val"]
    info = retina_arrays.info
    common = dict(batch_size=40, preprocess=Preprocess(32, "torch"), seed=3, augment="basic")

    def collect(**extra):
        options = PipelineOptions(training=True, **common, **extra)
        batches = list(make_dataset(images, labels, info=info, options=options))
        return [(x.numpy(), y.numpy()) for x, y in batches]

    plain, cut = collect(), collect(cutmix=1.0)
    for (x, y), (x_cut, y_cut) in zip(plain, cut, strict=True):
        assert y.dtype == np.int32 and y_cut.shape == (len(y), info.num_classes)
        np.testing.assert_allclose(y_cut.sum(axis=1), 1.0, atol=1e-6)
        same = np.all(x_cut == x, axis=-1)
        partner = np.all(x_cut == x[::-1], axis=-1)
        assert np.all(same | partner)
        # Pixels that differ from the unmixed image lie in the box (a pasted pixel can
        # equal the own one by chance, never the reverse), so the image's own share is at
        # least its target's; where partners share a class both shares are one target.
        own_share = 1 - (~same).mean(axis=(1, 2))
        target_share = y_cut[np.arange(len(y)), y]
        differ = y != y[::-1]
        assert np.all(own_share[differ] >= target_share[differ] - 1e-6)
        assert np.mean(own_share[differ] - target_share[differ]) < 0.01
        assert np.any(target_share < 1)
    evaluation = PipelineOptions(training=False, **common, mixup=0.2)
    _, y_eval = next(iter(make_dataset(images, labels, info=info, options=evaluation)))
    assert y_eval.dtype == tf.int32 and y_eval.shape.rank == 1  # never mixed outside training


def test_multilabel_targets_are_blended_vectors():
    arrays = synthetic_arrays("chestmnist", n={"train": 16})
    images, labels = arrays["train_images"], arrays["train_labels"]
    info = catalog.get_info("chestmnist")
    options = PipelineOptions(
        batch_size=16, preprocess=Preprocess(28, "unit"), training=True, seed=1, mixup=1.0
    )
    x, y = next(iter(make_dataset(images, labels, info=info, options=options)))
    assert y.shape == (16, info.num_classes) and y.dtype == tf.float32
    y = y.numpy()
    assert np.all((y >= 0) & (y <= 1)) and np.any((y > 0) & (y < 1))
