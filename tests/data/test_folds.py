"""Cross-fitting folds (``--cv_folds``): stratified, fixed, covering train + val exactly once."""

from __future__ import annotations

import numpy as np
import pytest

from tlmed_keras.data import catalog, folds, load_arrays
from tlmed_keras.data.arrays import Splits


def _splits(labels_train, labels_val, name="bloodmnist") -> Splits:
    """Splits whose image i is filled with its own row number (train first, then val)."""
    n_train, n_val = len(labels_train), len(labels_val)
    rows = np.arange(n_train + n_val)
    images = np.broadcast_to(rows[:, None, None] % 256, (len(rows), 2, 2)).astype(np.int64)
    images = images + 256 * (rows[:, None, None] // 256)  # unique even past 255 rows
    test = (np.zeros((3, 2, 2), np.int64), np.zeros((3, 1), np.uint8))
    arrays = {
        "train": (images[:n_train], np.asarray(labels_train)),
        "val": (images[n_train:], np.asarray(labels_val)),
        "test": test,
    }
    return Splits(arrays, catalog.get_info(name), "x.npz")


def _labels(counts: dict[int, int], seed: int = 0) -> np.ndarray:
    labels = np.concatenate([np.full(n, c) for c, n in counts.items()])[:, None]
    return np.random.default_rng(seed).permutation(labels).astype(np.uint8)


def test_folds_are_balanced_per_class_and_overall():
    labels = _labels({0: 50, 1: 7, 2: 3, 3: 101})
    ids = folds.fold_ids(labels, 5)
    assert set(ids) == set(range(5))
    sizes = np.bincount(ids, minlength=5)
    assert sizes.max() - sizes.min() <= 1
    for c in range(4):
        per_fold = np.bincount(ids[labels[:, 0] == c], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1, (c, per_fold)


def test_small_classes_do_not_all_land_in_fold_zero():
    """Groups smaller than the fold count start dealing where the previous group stopped."""
    labels = _labels({0: 2, 1: 2, 2: 2, 3: 2, 4: 2})
    ids = folds.fold_ids(labels, 5)
    assert np.bincount(ids, minlength=5).tolist() == [2, 2, 2, 2, 2]


def test_folds_are_fixed_by_their_seed():
    labels = _labels({0: 40, 1: 40})
    np.testing.assert_array_equal(folds.fold_ids(labels, 4), folds.fold_ids(labels, 4))
    assert not np.array_equal(folds.fold_ids(labels, 4), folds.fold_ids(labels, 4, seed=1))


def test_multilabel_rows_are_stratified_by_label_combination():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=(200, 3)).astype(np.uint8)
    ids = folds.fold_ids(labels, 4)
    for column in range(3):
        positives = np.bincount(ids[labels[:, column] == 1], minlength=4)
        assert positives.max() - positives.min() <= 4  # one per combination at most


def test_cross_fit_covers_train_and_val_once_and_keeps_test():
    splits = _splits(_labels({0: 30, 1: 12}), _labels({0: 6, 1: 4}, seed=1), "breastmnist")
    seen = []
    for fold in range(3):
        fit = folds.cross_fit(splits, 3, fold)
        assert fit["test"] is splits["test"]
        train_rows = set(fit["train"][0][:, 0, 0].tolist())
        val_rows = fit["val"][0][:, 0, 0].tolist()
        assert not train_rows & set(val_rows)
        assert len(train_rows) + len(val_rows) == 52
        seen += val_rows
        # labels travel with their images
        originals = np.concatenate([splits["train"][1], splits["val"][1]])
        np.testing.assert_array_equal(fit["val"][1], originals[val_rows])
    assert sorted(seen) == list(range(52))


def test_bad_folds_are_refused_by_name():
    with pytest.raises(ValueError, match=r"--cv_folds=1\b.*K >= 2"):
        folds.check_fold(1, 0)
    with pytest.raises(ValueError, match=r"--cv_fold=5\b.*0 to 4"):
        folds.check_fold(5, 5)
    with pytest.raises(ValueError, match=r"--cv_fold=2\b.*--cv_folds is 0"):
        folds.check_fold(0, 2)
    folds.check_fold(0, 0)
    tiny = _splits(_labels({0: 2}), _labels({0: 1}))
    with pytest.raises(ValueError, match="only 3 train \\+ val images"):
        folds.cross_fit(tiny, 4, 0)


def test_a_class_rarer_than_the_folds_is_refused_by_name():
    """Every validation fold must hold every class, or its AUC is undefined."""
    train = _labels({0: 30, 1: 3, 2: 20, 3: 6, 4: 6})
    splits = _splits(train, _labels({0: 5, 1: 1, 2: 5, 3: 2, 4: 2}), "retinamnist")
    folds.cross_fit(splits, 4, 0)  # 4 images of grade 1: one per fold
    name = catalog.get_info("retinamnist").label_names[1]
    with pytest.raises(ValueError, match=rf"--cv_folds=5: .*'{name}' \(4\) has fewer .*<= 4"):
        folds.cross_fit(splits, 5, 0)


def test_multilabel_needs_positives_and_negatives_in_every_fold():
    info = catalog.get_info("chestmnist")
    labels = np.zeros((40, info.num_classes), np.uint8)
    labels[:, 0] = 1  # label 0: no negatives at all
    labels[:2, 1] = 1  # label 1: 2 positives
    labels[:, 2:] = np.arange(40)[:, None] % 2
    splits = _splits(labels[:30], labels[30:], name="chestmnist")
    with pytest.raises(
        ValueError, match=r"'atelectasis' \(0\), 'cardiomegaly' \(2\) have .*Use the official split"
    ):
        folds.cross_fit(splits, 3, 0)


def test_official_breastmnist_folds_hold_both_classes(medmnist_dir):
    """On the real file every fold can score AUC: both classes in each, sizes 124-125."""
    splits = load_arrays("breastmnist", 28, medmnist_dir, download=False)
    total = sum(len(splits[s][1]) for s in ("train", "val"))
    for fold in range(5):
        fit = folds.cross_fit(splits, 5, fold)
        counts = np.bincount(fit["val"][1][:, 0], minlength=2)
        assert len(fit["val"][1]) in (total // 5, total // 5 + 1)
        assert counts.min() > 0
        assert len(fit["train"][1]) + len(fit["val"][1]) == total
