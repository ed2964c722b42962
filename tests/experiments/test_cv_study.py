"""experiments.cv_study: paired fold-by-fold differences and rule 4's decision."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments import cv_study


@pytest.fixture
def out(tmp_path, monkeypatch):
    monkeypatch.setattr(cv_study, "OUT", tmp_path)
    return tmp_path


def _write(candidate: str, scores: dict[str, list[float]]) -> None:
    """metrics.json per fold with val ACC = AUC = the given cell score."""
    for data, per_fold in scores.items():
        for fold, score in enumerate(per_fold):
            folder = cv_study.run_dir(data, candidate, fold)
            folder.mkdir(parents=True)
            val = {"acc": score, "auc": score}
            (folder / "metrics.json").write_text(json.dumps({"val": val}))


REF = {"breastmnist": [0.90, 0.91, 0.92, 0.89, 0.90], "retinamnist": [0.66, 0.67, 0.68, 0.65, 0.66]}


def _shifted(shifts: list[float]) -> dict[str, list[float]]:
    cells = REF["breastmnist"] + REF["retinamnist"]
    moved = [c + s for c, s in zip(cells, shifts, strict=True)]
    return {"breastmnist": moved[:5], "retinamnist": moved[5:]}


def test_paired_difference_and_standard_error(out):
    _write(cv_study.REFERENCE, REF)
    shifts = [0.01, 0.02, 0.0, 0.03, 0.01, 0.02, -0.01, 0.01, 0.02, 0.0]
    _write("good", _shifted(shifts))
    result = cv_study.paired("good", cv_study.REFERENCE)
    assert result["diff"] == pytest.approx(np.mean(shifts))
    assert result["se"] == pytest.approx(np.std(shifts, ddof=1) / np.sqrt(10))
    assert result["clears"]
    assert cv_study.decision(["good"], cv_study.REFERENCE).startswith("good clears the score")


def test_a_noisy_or_small_gain_does_not_clear(out):
    _write(cv_study.REFERENCE, REF)
    _write("small", _shifted([0.004] * 10))  # below the 0.005 margin
    _write("noisy", _shifted([0.1, -0.08] * 5))  # mean 0.01 < its SE
    assert not cv_study.paired("small", cv_study.REFERENCE)["clears"]
    noisy = cv_study.paired("noisy", cv_study.REFERENCE)
    assert noisy["diff"] > cv_study.MARGIN and not noisy["clears"]
    assert cv_study.decision(["small", "noisy"], cv_study.REFERENCE).startswith(
        "no candidate clears"
    )


def test_unfinished_folds_leave_the_decision_pending(out):
    _write(cv_study.REFERENCE, REF)
    partial = _shifted([0.05] * 10)
    partial["retinamnist"] = partial["retinamnist"][:4]
    _write("partial", partial)
    assert cv_study.paired("partial", cv_study.REFERENCE) is None
    assert cv_study.decision(["partial"], cv_study.REFERENCE).startswith("pending")
    assert "(unfinished)" in cv_study.table(["partial"], cv_study.REFERENCE, with_pooled=False)


def test_the_reference_is_whichever_recipe_is_named(out):
    _write("c9_112px", REF)  # rule 5: c9 is the reference; c1 has no runs in this root
    _write("challenger", _shifted([0.01] * 10))
    assert cv_study.paired("challenger", "c9_112px")["diff"] == pytest.approx(0.01)
    assert cv_study.paired("challenger", cv_study.REFERENCE) is None
    text = cv_study.table(["challenger"], "c9_112px", with_pooled=False)
    assert "Paired against c9_112px" in text and "replaces c9_112px" in text


def test_a_tta_cell_scores_the_same_fold_models_again(out, tiny_run):
    """``CANDIDATE@MODE`` (rule 11): the candidate's own runs, evaluated again on val with
    that TTA mode; ``@none`` gives back what training wrote in metrics.json."""
    from tlmed_keras.evaluate.report import EvalOptions, evaluate_run

    run = tiny_run("breastmnist")
    for fold in range(cv_study.FOLDS):
        folder = cv_study.run_dir("breastmnist", "tiny", fold)
        folder.parent.mkdir(parents=True)
        folder.symlink_to(run, target_is_directory=True)
    trained = cv_study.cell_scores("breastmnist", "tiny")
    assert cv_study.cell_scores("breastmnist", "tiny@none") == pytest.approx(trained, abs=1e-6)
    shifted = evaluate_run(run, "val", EvalOptions(tta="shift")).evaluation
    expected = (shifted.acc + shifted.auc) / 2
    assert cv_study.cell_scores("breastmnist", "tiny@shift") == pytest.approx([expected] * 5)
    assert cv_study.cell_scores("retinamnist", "tiny@shift") is None  # no runs: unfinished


def test_a_rule_on_one_set_pairs_only_its_five_cells(out):
    _write(cv_study.REFERENCE, REF)
    shifts = [0.01, 0.02, 0.0, 0.03, 0.01]
    moved = [c + s for c, s in zip(REF["breastmnist"], shifts, strict=True)]
    _write("native", {"breastmnist": moved})  # no RetinaMNIST cells at all
    assert cv_study.paired("native", cv_study.REFERENCE) is None  # both sets: incomplete
    result = cv_study.paired("native", cv_study.REFERENCE, ("breastmnist",))
    assert result["diff"] == pytest.approx(np.mean(shifts))
    assert result["se"] == pytest.approx(np.std(shifts, ddof=1) / np.sqrt(5))
    text = cv_study.table(["native"], cv_study.REFERENCE, False, ("breastmnist",))
    assert "(5 cells;" in text and "retinamnist" not in text
