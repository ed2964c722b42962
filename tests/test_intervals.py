"""Bootstrap intervals of ACC / AUC (tlmed_keras.intervals): the vectorised statistics equal
the project's metric functions, perfect and identical models give degenerate intervals, and
the 95 % interval covers a known ACC about 95 % of the time."""

from __future__ import annotations

import numpy as np
import pytest

from tlmed_keras import intervals as iv
from tlmed_keras import metrics as mm

ORDINAL = "ordinal-regression"


def _task_data(task: str, n: int, rng):
    if task == mm.MULTILABEL:
        y = (rng.random((n, 4)) < 0.3).astype(int)
        p = np.clip(0.35 * y + 0.65 * rng.random((n, 4)), 0, 1)
    else:
        classes = 2 if task == mm.BINARY else 5
        y = rng.integers(0, classes, n)
        z = rng.normal(size=(n, classes))
        z[np.arange(n), y] += 1.0
        p = mm.probabilities(z, task)
    return y, np.round(p, 2)  # rounding makes ties, which AUC counts one half


@pytest.mark.parametrize("task", [mm.BINARY, "multi-class", ORDINAL, mm.MULTILABEL])
def test_vectorised_statistics_equal_the_project_metrics_on_explicit_resamples(task):
    rng = np.random.default_rng(0)
    y, p = _task_data(task, 400, rng)
    scorer = iv._Scorer(y, p, task)
    rows = rng.integers(0, len(y), (4, len(y)))
    counts = np.stack([np.bincount(r, minlength=len(y)) for r in rows]).astype(float)
    acc, auc = scorer(counts)
    for k, r in enumerate(rows):
        assert acc[k] == pytest.approx(mm.medmnist_acc(y[r], p[r], task), abs=1e-12)
        assert auc[k] == pytest.approx(mm.medmnist_auc(y[r], p[r], task), abs=1e-12)


@pytest.mark.parametrize("task", [mm.BINARY, "multi-class"])
def test_a_perfect_classifier_has_the_interval_1_1(task):
    rng = np.random.default_rng(1)
    classes = 2 if task == mm.BINARY else 4
    y = rng.integers(0, classes, 150)
    p = np.eye(classes)[y] * 0.9 + 0.1 / classes
    found = iv.metric_intervals(y, p, task)
    for name in ("acc", "auc"):
        assert (found[name].estimate, found[name].low, found[name].high) == (1.0, 1.0, 1.0)


def test_interval_brackets_the_estimate_is_seeded_and_narrows_with_more_images():
    rng = np.random.default_rng(2)
    y, p = _task_data(mm.BINARY, 300, rng)
    a = iv.metric_intervals(y, p, mm.BINARY, seed=3)
    assert a == iv.metric_intervals(y, p, mm.BINARY, seed=3)
    assert a != iv.metric_intervals(y, p, mm.BINARY, seed=4)
    for name in ("acc", "auc"):
        assert a[name].low < a[name].estimate < a[name].high
    big_y, big_p = np.tile(y, 9), np.tile(p, (9, 1))
    b = iv.metric_intervals(big_y, big_p, mm.BINARY)
    assert (b["auc"].high - b["auc"].low) < 0.5 * (a["auc"].high - a["auc"].low)


def test_95_percent_interval_covers_a_known_acc_in_90_to_99_percent_of_test_sets():
    """200 simulated test sets of 150 images from a classifier whose ACC is 0.8 in each class
    (so ACC is 0.8 whatever the class mix): the share of intervals holding 0.8."""
    true_acc, n, covered = 0.8, 150, 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 2, n)
        right = rng.random(n) < true_acc
        predicted = np.where(right, y, 1 - y)
        p = np.where(predicted == 1, 0.7, 0.3)
        found = iv.metric_intervals(y, np.stack([1 - p, p], axis=1), mm.BINARY, seed=seed)
        covered += found["acc"].low <= true_acc <= found["acc"].high
    assert 0.90 <= covered / 200 <= 0.99


def test_paired_interval_of_identical_models_is_0_0():
    rng = np.random.default_rng(4)
    for task in (mm.BINARY, ORDINAL, mm.MULTILABEL):
        y, p = _task_data(task, 200, rng)
        found = iv.paired_difference(y, p, p.copy(), task)
        for name in ("acc", "auc"):
            assert (found[name].estimate, found[name].low, found[name].high) == (0.0, 0.0, 0.0)


def test_paired_interval_separates_a_better_model_and_is_narrower_than_unpaired_ones():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 400)
    noise = rng.normal(size=400)
    good = 1 / (1 + np.exp(-(2.0 * (2 * y - 1) + noise)))
    worse = 1 / (1 + np.exp(-(1.2 * (2 * y - 1) + noise)))  # same noise: correlated
    a, b = np.stack([1 - good, good], 1), np.stack([1 - worse, worse], 1)
    diff = iv.paired_difference(y, a, b, mm.BINARY)["auc"]
    assert diff.estimate > 0 and diff.low > 0
    flipped = iv.paired_difference(y, b, a, mm.BINARY)["auc"]
    assert flipped.estimate == pytest.approx(-diff.estimate) and flipped.high < 0
    # pairing removes the shared noise: narrower than two independent intervals combine to
    width_a, width_b = (
        (found.high - found.low)
        for found in (iv.metric_intervals(y, s, mm.BINARY)["auc"] for s in (a, b))
    )
    assert diff.high - diff.low < np.hypot(width_a, width_b)
    with pytest.raises(ValueError, match="same images and classes"):
        iv.paired_difference(y, a, b[:-1], mm.BINARY)


def test_multilabel_undefined_label_leaves_the_mean_as_in_the_metrics():
    rng = np.random.default_rng(6)
    y, p = _task_data(mm.MULTILABEL, 200, rng)
    y[:, 0] = 0  # label 0 never positive: its AUC is undefined everywhere
    found = iv.metric_intervals(y, p, mm.MULTILABEL)
    assert found["auc"].estimate == pytest.approx(mm.medmnist_auc(y, p, mm.MULTILABEL))
    assert found["auc"].low < found["auc"].estimate < found["auc"].high
    assert found["auc"].undefined == 0


def test_class_with_one_image_falls_back_to_unstratified_and_counts_undefined():
    y = np.array([0] * 30 + [1])  # one positive: many resamples lack it, AUC undefined there
    p = np.linspace(0.1, 0.9, 31)
    found = iv.metric_intervals(y, np.stack([1 - p, p], 1), mm.BINARY)
    assert 0 < found["auc"].undefined < iv.RESAMPLES
    assert found["auc"].low <= found["auc"].estimate <= found["auc"].high
