"""Calibration (tlmed_keras.calibration): temperature scaling recovers a known factor and
changes no decision or ranking; ECE and Brier by hand; calibration.json."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tlmed_keras import calibration as cal
from tlmed_keras import metrics as mm


def _calibrated_logits(task: str, n: int, classes: int, seed: int):
    """Logits and labels drawn from those very logits' probabilities: calibrated at T = 1."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=1.5, size=(n, classes))
    p = mm.probabilities(z, task)
    if task == mm.MULTILABEL:
        y = (rng.random(p.shape) < p).astype(int)
    else:
        y = (rng.random((n, 1)) > np.cumsum(p, axis=1)).sum(axis=1)
    return z, y


@pytest.mark.parametrize(
    ("task", "classes"), [(mm.BINARY, 2), ("multi-class", 5), (mm.MULTILABEL, 6)]
)
@pytest.mark.parametrize("factor", [0.5, 2.5])
def test_temperature_recovers_a_known_overconfidence_factor_within_5_percent(task, classes, factor):
    z, y = _calibrated_logits(task, 20_000, classes, seed=0)
    fitted = cal.fit_temperature(z * factor, y, task)  # logits over-/under-confident x factor
    assert fitted == pytest.approx(factor, rel=0.05)
    entry = cal.fit_entry(z * factor, y, task)
    assert entry["val_nll_after"] < entry["val_nll_before"]
    assert entry["val_ece_after"] < entry["val_ece_before"] / 2
    assert entry["shared_across_labels"] is (task == mm.MULTILABEL)


@pytest.mark.parametrize(("task", "classes"), [(mm.BINARY, 2), (mm.MULTILABEL, 4)])
def test_temperature_changes_neither_decision_nor_ranking_so_acc_and_auc_stay(task, classes):
    z, y = _calibrated_logits(task, 500, classes, seed=1)
    raw = cal.scaled(z, task, 1.0)
    for temperature in (0.3, 1.7, 8.0):
        hot = cal.scaled(z, task, temperature)
        assert not np.allclose(hot, raw)
        assert mm.medmnist_acc(y, hot, task) == mm.medmnist_acc(y, raw, task)
        assert mm.medmnist_auc(y, hot, task) == pytest.approx(
            mm.medmnist_auc(y, raw, task), abs=1e-12
        )
        # each score column keeps its order across images: the ranking AUC reads
        for c in range(classes):
            col = slice(None), (c if task == mm.MULTILABEL else -1)
            np.testing.assert_array_equal(np.argsort(hot[col]), np.argsort(raw[col]))


def test_multiclass_temperature_keeps_each_images_class_order_and_acc():
    """With 3+ classes, softmax(z / T)_c is not a monotone function of one number, so the
    order of class c's probability ACROSS images (one-vs-rest AUC) can move slightly; every
    image's own class order (argmax, top-k) cannot. evaluate reports AUC of the raw output."""
    z, y = _calibrated_logits("ordinal-regression", 500, 5, seed=1)
    raw = cal.scaled(z, "ordinal-regression", 1.0)
    for temperature in (0.3, 1.7, 8.0):
        hot = cal.scaled(z, "ordinal-regression", temperature)
        np.testing.assert_array_equal(np.argsort(hot, axis=1), np.argsort(raw, axis=1))
        assert mm.medmnist_acc(y, hot, "multi-class") == mm.medmnist_acc(y, raw, "multi-class")


def test_logits_from_probabilities_give_the_same_temperature_and_probabilities():
    z, y = _calibrated_logits("multi-class", 2000, 4, seed=2)
    back = cal.logits_from_probabilities(mm.probabilities(z, "multi-class"), "multi-class")
    np.testing.assert_allclose(
        cal.scaled(back, "multi-class", 1.7), cal.scaled(z, "multi-class", 1.7)
    )
    zl, yl = _calibrated_logits(mm.MULTILABEL, 2000, 3, seed=3)
    np.testing.assert_allclose(
        cal.logits_from_probabilities(mm.probabilities(zl, mm.MULTILABEL), mm.MULTILABEL), zl
    )


def test_ece_and_brier_by_hand():
    # top-class confidences 0.9, 0.9 (one right, one wrong) and 0.6 (right): two bins
    p = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4]])
    y = np.array([0, 0, 0])
    # bin (0.867, 0.933]: confidence 0.9, accuracy 0.5; bin (0.533, 0.6]: 0.6 vs 1.0
    assert cal.ece(y, p, mm.BINARY) == pytest.approx((2 * 0.4 + 1 * 0.4) / 3)
    assert cal.brier(y, p, mm.BINARY) == pytest.approx((0.02 + 1.62 + 0.32) / 3)
    bins = cal.reliability_bins(y, p, mm.BINARY)
    assert sum(bins["count"]) == 3 and len(bins["edges"]) == cal.BINS + 1
    # multi-label: each (image, label) is a decision; confidence max(p, 1 - p)
    pl, yl = np.array([[0.8, 0.3]]), np.array([[1, 1]])
    assert cal.ece(yl, pl, mm.MULTILABEL) == pytest.approx((0.2 + 0.7) / 2)
    assert cal.brier(yl, pl, mm.MULTILABEL) == pytest.approx((0.04 + 0.49) / 2)


def test_calibration_file_round_trip_and_bad_files(tmp_path):
    path = tmp_path / cal.FILE
    assert cal.read_entries(path) == {}
    z, y = _calibrated_logits(mm.BINARY, 300, 2, seed=4)
    entry = cal.fit_and_store(path, y, mm.probabilities(3 * z, mm.BINARY), mm.BINARY, "flip")
    cal.store_entry(path, "none", {**entry, "temperature": 2.0})
    entries = cal.read_entries(path)
    assert entries["flip"]["temperature"] == pytest.approx(entry["temperature"])
    assert entries["none"]["temperature"] == 2.0 and entries["flip"]["fitted_on"] == "val"
    path.write_text(json.dumps({"temperatures": {"none": {"temperature": -1}}}))
    with pytest.raises(ValueError, match="is not a calibration file.*Delete it"):
        cal.read_entries(path)
    with pytest.raises(ValueError, match="finite logits"):
        cal.fit_temperature(np.array([[np.inf, 0.0]]), [0], mm.BINARY)
