"""Evaluation of a finished run: training's ACC/AUC, per-class numbers, figures, CLI."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from tests.conftest import run_python
from tlmed_keras.evaluate.evaluation import evaluate_scores, summary
from tlmed_keras.evaluate.report import EvalOptions, evaluate_run

PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path: pathlib.Path) -> bool:
    return path.read_bytes()[:8] == PNG and path.stat().st_size > 5000


def test_test_split_metrics_equal_those_training_reported(tiny_run):
    workdir = tiny_run("breastmnist")
    report = evaluate_run(workdir, "test")
    trained = json.loads((workdir / "metrics.json").read_text())["test"]
    ev = report.evaluation
    assert ev.acc == pytest.approx(trained["acc"], abs=1e-6)
    assert ev.auc == pytest.approx(trained["auc"], abs=1e-6)
    assert list(ev.per_class) == ["malignant", "normal, benign"]
    assert sum(m["support"] for m in ev.per_class.values()) == 156
    assert report.out_dir == workdir / "eval" / "test"
    assert _is_png(report.files["confusion_matrix"]) and _is_png(report.files["roc_curves"])
    saved = json.loads(report.files["report"].read_text())
    assert saved["acc"] == pytest.approx(ev.acc) and saved["num_images"] == 156
    assert np.array(saved["confusion_matrix"]).sum() == 156
    assert "malignant" in report.text and f"ACC {ev.acc:.4f}" in report.text


def test_per_class_numbers_by_hand():
    # 3 classes; true 0,0,1,1,2,2 ; predicted 0,1,1,1,2,0
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    scores = np.full((6, 3), 0.1)
    scores[np.arange(6), pred] = 0.8
    ev = evaluate_scores(y, scores, task="multi-class", label_names=["a", "b", "c"])
    assert ev.acc == pytest.approx(4 / 6)
    a, b, c = (ev.per_class[k] for k in "abc")
    assert (a["precision"], a["recall"], a["support"]) == (0.5, 0.5, 2)
    assert (b["precision"], b["recall"]) == (pytest.approx(2 / 3), 1.0)
    assert b["f1"] == pytest.approx(0.8)
    assert (c["precision"], c["recall"]) == (1.0, 0.5)
    np.testing.assert_array_equal(ev.confusion, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    text = summary(ev)
    assert "macro avg" in text and "precision" in text


def test_bad_scores_refused():
    with pytest.raises(ValueError, match=r"scores must be \[N, 3\]"):
        evaluate_scores([0, 1], np.zeros((2, 2)), task="multi-class", label_names="abc")
    with pytest.raises(ValueError, match="2 labels but 3 score rows"):
        evaluate_scores([0, 1], np.zeros((3, 3)), task="multi-class", label_names="abc")


def test_multilabel_run_gets_per_label_report(tiny_run, tmp_path):
    report = evaluate_run(tiny_run("chestmnist"), "val", EvalOptions(out_dir=tmp_path))
    ev = report.evaluation
    assert ev.confusion.shape == (14, 2, 2)
    assert len(ev.per_class) == 14
    assert _is_png(tmp_path / "confusion_matrix.png") and _is_png(tmp_path / "roc_curves.png")


def test_bad_split_and_missing_run(tiny_run, tmp_path):
    with pytest.raises(ValueError, match="Unknown split 'dev'"):
        evaluate_run(tiny_run("breastmnist"), "dev")
    with pytest.raises(FileNotFoundError, match="holds no finished training run"):
        evaluate_run(tmp_path, "test")


def test_eval_options_are_checked_when_built_and_choose_the_folder(tmp_path):
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        EvalOptions(batch_size=0)
    with pytest.raises(ValueError, match="Bad --tta='mirror'"):
        EvalOptions(tta="mirror")
    assert EvalOptions().out_path(tmp_path, "val") == tmp_path / "val"
    assert EvalOptions(tta="flip").out_path(tmp_path, "val") == tmp_path / "val_tta-flip"
    assert EvalOptions(out_dir=tmp_path / "mine").out_path(tmp_path, "val") == tmp_path / "mine"


def test_cli_offline_with_data_dir(tiny_run, medmnist_dir):
    workdir = tiny_run("retinamnist")
    proc = run_python(
        "-m",
        "tlmed_keras.evaluate",
        f"--workdir={workdir}",
        "--split=val",
        f"--data_dir={medmnist_dir}",
        "--nodownload",
        "--backend=jax",
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "retinamnist (ordinal-regression), val split, 120 images" in proc.stdout
    assert "macro avg" in proc.stdout
    out = workdir / "eval" / "val"
    assert _is_png(out / "confusion_matrix.png") and _is_png(out / "roc_curves.png")
    assert json.loads((out / "report.json").read_text())["num_images"] == 120
