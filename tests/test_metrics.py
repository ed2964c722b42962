"""Our MedMNIST ACC/AUC equal medmnist.evaluator's getACC/getAUC on the same predictions."""

import math

import numpy as np
import pytest

from tlmed_keras import metrics
from tlmed_keras._medmnist import evaluator_module

TASKS = {
    "binary-class": 2,
    "multi-class": 8,
    "ordinal-regression": 5,
    "multi-label, binary-class": 14,
}


def _predictions(task, num_classes, n=200, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, num_classes))
    if task == metrics.MULTILABEL:
        y = rng.integers(0, 2, size=(n, num_classes))
        logits += 1.5 * y  # informative but imperfect scores
    else:
        y = (np.arange(n) % num_classes)[:, None]
        rng.shuffle(y)
        logits[np.arange(n), y[:, 0]] += 1.0
    return y, metrics.probabilities(logits, task)


@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("seed", [0, 1])
def test_equal_to_medmnist_evaluator(task, seed):
    evaluator = evaluator_module()
    y, score = _predictions(task, TASKS[task], seed=seed)
    assert metrics.medmnist_auc(y, score, task) == pytest.approx(
        evaluator.getAUC(y, score, task), abs=1e-12
    )
    assert metrics.medmnist_acc(y, score, task) == pytest.approx(
        evaluator.getACC(y, score, task), abs=1e-12
    )
    # Not trivially 0.5 / 1.0: the test exercises a real ranking.
    assert 0.55 < metrics.medmnist_auc(y, score, task) < 0.99


def test_binary_uses_positive_class_only():
    y = np.array([[0], [1], [1], [0]])
    score = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    # positive-class scores 0.1, 0.8, 0.4, 0.7 -> pairs (pos, neg): (0.8>0.1, 0.8>0.7,
    # 0.4>0.1, 0.4<0.7) = 3/4.
    assert metrics.medmnist_auc(y, score, "binary-class") == pytest.approx(0.75)
    assert metrics.medmnist_acc(y, score, "binary-class") == pytest.approx(0.5)


def test_probabilities_softmax_and_sigmoid():
    logits = np.array([[0.0, np.log(3.0)]])
    np.testing.assert_allclose(metrics.probabilities(logits, "multi-class"), [[0.25, 0.75]])
    np.testing.assert_allclose(
        metrics.probabilities(logits, metrics.MULTILABEL), [[0.5, 0.75]], rtol=1e-12
    )


def test_undefined_class_is_left_out_not_crashing():
    y = np.array([[0], [0], [1], [1]])  # class 2 never occurs
    score = metrics.probabilities(np.eye(3)[[0, 0, 1, 1]] * 2.0, "multi-class")
    assert metrics.medmnist_auc(y, score, "multi-class") == pytest.approx(1.0)
    assert math.isnan(metrics.medmnist_auc(np.zeros((4, 1)), score[:, :2], "binary-class"))


def test_per_class_report_names_and_values():
    y, score = _predictions("multi-class", 3, n=30)
    report = metrics.per_class_report(y, score, "multi-class", ["a", "b", "c"])
    assert list(report) == ["a", "b", "c"]
    assert sum(r["support"] for r in report.values()) == 30
    aucs = metrics.per_class_auc(y, score, "multi-class")
    assert report["b"]["auc"] == pytest.approx(aucs[1])


def test_row_mismatch_is_an_error():
    with pytest.raises(ValueError, match="rows"):
        metrics.medmnist_acc(np.zeros((3, 1)), np.zeros((4, 2)), "binary-class")


# --- per-class numbers: one computation, two formats (metrics.json and evaluate's report) ---


def _with_empty_class(task, num_classes):
    """Predictions where class/label 1 is never true and never predicted (0 / 0 ratios)."""
    y, score = _predictions(task, num_classes, n=60)
    if task == metrics.MULTILABEL:
        y[:, 1], score[:, 1] = 0, 0.1
    else:
        y[y == 1] = 0
        score[:, 1] = 0.0
    return y, score


@pytest.mark.parametrize("task", list(TASKS))
def test_evaluate_per_class_equals_scikit_learn(task):
    from sklearn.metrics import precision_recall_fscore_support

    from tlmed_keras.evaluate.evaluation import evaluate_scores, predictions

    y, score = _with_empty_class(task, TASKS[task])
    names = [f"c{i}" for i in range(TASKS[task])]
    table = evaluate_scores(y, score, task=task, label_names=names).per_class
    y_true = y if task == metrics.MULTILABEL else y.reshape(-1)
    expected = precision_recall_fscore_support(
        y_true,
        predictions(score, task),
        labels=list(range(len(names))),
        average=None,
        zero_division=0,
    )
    for key, values in zip(("precision", "recall", "f1", "support"), expected, strict=True):
        assert [table[n][key] for n in names] == values.tolist(), key  # the same floats
    assert list(table["c0"]) == ["precision", "recall", "f1", "support", "auc"]
    assert table["c1"]["auc"] is None and table["c1"]["f1"] == 0.0


@pytest.mark.parametrize("task", list(TASKS))
def test_metrics_json_per_class_keys_and_undefined_values(task):
    y, score = _with_empty_class(task, TASKS[task])
    names = [f"c{i}" for i in range(TASKS[task])]
    report = metrics.per_class_report(y, score, task, names)
    counts = metrics.class_counts(y, score, task)
    if task == metrics.MULTILABEL:
        assert list(report["c0"]) == ["auc", "acc", "support"]
        assert report["c1"] == {"auc": None, "acc": 1.0, "support": 0}
        decided = score[:, 0] > 0.5
        assert report["c0"]["acc"] == pytest.approx(float((decided == (y[:, 0] == 1)).mean()))
    else:
        assert list(report["c0"]) == ["auc", "recall", "precision", "support"]
        assert report["c1"] == {"auc": None, "recall": None, "precision": None, "support": 0}
        true0, pred0 = y[:, 0] == 0, score.argmax(axis=-1) == 0
        assert report["c0"]["recall"] == pytest.approx((true0 & pred0).sum() / true0.sum())
    assert [r["support"] for r in report.values()] == counts.support.tolist()
