"""experiments.recipe_study --stage=later: a later candidate's val score, as a section of
val_candidates.md, by the rule written in its flagfile."""

from __future__ import annotations

import json

import pytest

from experiments import recipe_study

VALS = {  # (acc, auc) per seed; scores: breast 0.9, retina 0.7 -> 0.8
    "breastmnist": [(0.85, 0.95), (0.9, 0.9), (0.86, 0.94)],
    "retinamnist": [(0.6, 0.8), (0.55, 0.85), (0.5, 0.9)],
}


@pytest.fixture
def out(tmp_path, monkeypatch):
    monkeypatch.setattr(recipe_study, "OUT", tmp_path)
    (tmp_path / "val_candidates.md").write_text("# Recipe candidates\n\n**Chosen: c1**\n")
    return tmp_path


def _write_runs(candidate, vals):
    for data, per_seed in vals.items():
        for seed, (acc, auc) in enumerate(per_seed):
            folder = recipe_study.run_dir(data, candidate, seed)
            folder.mkdir(parents=True)
            metrics = {"val": {"acc": acc, "auc": auc}, "test": {"acc": None, "auc": None}}
            (folder / "metrics.json").write_text(json.dumps(metrics))
            (folder / "DONE").write_text("")


def test_later_candidate_scored_against_the_references_and_section_replaced(out, monkeypatch):
    _write_runs("c9", VALS)
    monkeypatch.setattr(recipe_study, "RECIPE_REFERENCES", {"a": 0.79, "b": 0.78})
    recipe_study.stage_later("c9")
    recipe_study.stage_later("c9")  # a rerun replaces its section
    text = (out / "val_candidates.md").read_text()
    assert text.startswith("# Recipe candidates\n\n**Chosen: c1**\n")
    assert text.count("## Later candidate c9") == 1
    assert "| breastmnist | 0.850, 0.900, 0.860 | 0.950, 0.900, 0.940 | 0.9000 |" in text
    assert "- c9: 0.8000" in text
    assert "**c9 beats the bar 0.7950" in text
    monkeypatch.setattr(recipe_study, "RECIPE_REFERENCES", {"a": 0.7986})
    recipe_study.stage_later("c9")
    assert "**c9 does not beat the bar 0.8036" in (out / "val_candidates.md").read_text()


def test_later_candidate_with_missing_runs_has_no_score(out):
    _write_runs("c9", {"breastmnist": VALS["breastmnist"]})
    recipe_study.stage_later("c9")
    text = (out / "val_candidates.md").read_text()
    assert "| retinamnist | missing (seeds done: none) | | |" in text
    assert "- c9:" not in text and "bar" not in text


def test_a_later_winner_gets_its_own_result_files_beside_the_first_choice(out):
    assert recipe_study.out_file("results", ".md", "c1_96px_flip") == out / "results.md"
    assert recipe_study.out_file("val_tta", ".md", "c9_112px") == out / "val_tta_c9_112px.md"
    assert recipe_study.out_file("results", ".csv", "c9_112px") == out / "results_c9_112px.csv"
