"""``python -m tlmed_keras.recipe``: the members file, the plan, skipping finished members,
the summary, and the whole command on a tiny synthetic set."""

from __future__ import annotations

import json
import pathlib
import types

import numpy as np
import pytest

from tests.conftest import run_python, synthetic_arrays
from tlmed_keras.data import catalog
from tlmed_keras.recipe import members, runner, summary
from tlmed_keras.runs import config as cfg

REPO = pathlib.Path(__file__).resolve().parents[2]


def _members_file(tmp_path, text: str) -> pathlib.Path:
    path = tmp_path / "members.toml"
    path.write_text(text)
    return path


def test_the_shipped_members_file_lists_the_recipe_and_seeds_0_1_2():
    recipe = members.load_recipe()
    assert recipe.seeds == (0, 1, 2)
    assert [m.name for m in recipe.members] == ["mobilenet_v2_torchvision"]
    assert recipe.members[0].flagfile == REPO / "flags/recipes/mobilenet_v2_torchvision.cfg"


def test_shipped_members_parse_as_training_configs_for_any_set(tmp_path):
    run = members.plan(members.load_recipe(), tmp_path)[0]
    for data in ("breastmnist", "retinamnist", "chestmnist", "bloodmnist"):
        config = members.member_config(members.train_arguments(run, {"data": data}))
        cfg.check(config)
        assert (config.data, config.seed, config.model) == (data, 0, "mobilenet_v2_torchvision")


def test_plan_is_members_times_seeds_in_their_own_folders(tmp_path):
    (tmp_path / "a.cfg").write_text("--model=squeezenet1_1\n")
    (tmp_path / "b.cfg").write_text("--model=alexnet\n")
    path = _members_file(tmp_path, 'seeds = [0, 1]\n[members]\na = "a.cfg"\nb = "b.cfg"\n')
    plan = members.plan(members.load_recipe(path), tmp_path / "work")
    assert [r.label for r in plan] == ["a/seed0", "a/seed1", "b/seed0", "b/seed1"]
    assert plan[3].workdir == tmp_path / "work" / "b" / "seed1"
    assert members.load_recipe(path, seeds=[2]).seeds == (2,)  # --seeds replaces the file's
    args = members.train_arguments(plan[1], {"data": "breastmnist", "weights_dir": "/w"})
    assert args[0] == f"--flagfile={tmp_path / 'a.cfg'}" and args[-1] == "--weights_dir=/w"
    assert members.member_config(args).seed == 1


@pytest.mark.parametrize(
    "text, named",
    [
        ("seeds = [0]\n", "lists no members"),
        ('[members]\na = "missing.cfg"\n', "its flagfile .*missing.cfg does not exist"),
        ('[members]\n"a/b" = "x.cfg"\n', "Bad member name 'a/b'"),
        ('seeds = [-1]\n[members]\na = "a.cfg"\n', "Bad seeds \\[-1\\]"),
        ("[members\n", "Cannot read the members file"),
    ],
)
def test_bad_members_file_is_one_line(tmp_path, text, named):
    (tmp_path / "a.cfg").write_text("--model=squeezenet1_1\n")
    with pytest.raises(members.RecipeError, match=named) as refused:
        members.load_recipe(_members_file(tmp_path, text))
    assert "\n" not in str(refused.value)


def test_a_finished_run_with_the_same_flags_is_skipped(tiny_run, tmp_path):
    """The tiny run's own flags.txt as a member flagfile: same seed -> finished; another
    seed (other flags) -> not finished, the trainer is left to refuse or resume."""
    workdir = tiny_run("breastmnist")
    member = members.Member("tiny", workdir / "flags.txt")
    same = members.MemberRun(member, 0, workdir)
    assert runner.is_finished(same, members.train_arguments(same, {}))
    other = members.MemberRun(member, 1, workdir)
    assert not runner.is_finished(other, members.train_arguments(other, {}))
    fresh = members.MemberRun(member, 0, tmp_path / "none")
    assert not runner.is_finished(fresh, members.train_arguments(fresh, {}))


def _outcome(name, seed, state="trained"):
    member = members.Member(name, pathlib.Path(f"{name}.cfg"))
    run = members.MemberRun(member, seed, pathlib.Path(f"w/{name}/seed{seed}"))
    return runner.Outcome(run, state, 12.0)


def test_summary_has_runs_means_per_member_and_ensemble(tmp_path):
    outcomes = [_outcome("a", 0), _outcome("a", 1), _outcome("b", 0, "finished before")]
    rows = [
        {"model": "ma", "acc": 0.8, "auc": 0.9},
        {"model": "ma", "acc": 0.6, "auc": 0.7},
        {"model": "mb", "acc": 0.7, "auc": None},
    ]
    ensemble = types.SimpleNamespace(
        split="test",
        to_json=lambda: {"acc": 0.85, "auc": 0.95, "num_images": 10},
    )
    facts = {"data": "bloodmnist", "size": 28, "tta": "flip", "command": ["python"]}
    result = summary.build(outcomes, rows, ensemble, facts)
    assert result["members_mean_sd"]["acc"] == pytest.approx(
        {"mean": 0.7, "sd": 0.1, "n": 3}, abs=1e-12
    )
    assert result["members_mean_sd"]["auc"]["n"] == 2  # an undefined AUC is left out
    assert result["per_member_mean_sd"]["a"]["acc"]["mean"] == pytest.approx(0.7)
    assert result["ensemble"] == {"acc": 0.85, "auc": 0.95, "runs": 3}
    assert result["export_command"] == (
        "uv run python -m tlmed_keras.export --workdir=w/a/seed0,w/a/seed1,w/b/seed0 "
        "--export_dir=serving --tta=flip"
    )
    printed = summary.text(result)
    assert "| a: mean ± sd | | 0.7000 ± 0.1414 |" in printed
    assert "**ensemble of 3** | | **0.8500** | **0.9500**" in printed and "n/a" in printed
    paths = summary.write(result, tmp_path)
    assert json.loads(paths["json"].read_text())["ensemble"]["acc"] == 0.85
    md = paths["md"].read_text()
    assert "`python`" in md and f"```\n{result['export_command']}\n```" in md


# --- the whole command -------------------------------------------------------------------

TINY_MEMBER = """--model=squeezenet1_1
--weights=none
--image_size=32
--head_epochs=1
--finetune_epochs=0
--warmup_epochs=0
--max_steps_per_epoch=2
--batch_size=8
--eval_batch_size=32
--verify_data=false
--tta=flip
--verbose=0
"""


def _recipe(tmp_path, data_dir, *extra):
    return run_python(
        "-m",
        "tlmed_keras.recipe",
        "--data=chestmnist",
        f"--data_dir={data_dir}",
        f"--workdir={tmp_path / 'work'}",
        f"--members={tmp_path / 'members.toml'}",
        *extra,
        timeout=1800,  # two trainings and an evaluation on a CPU that may be shared
        TF_CPP_MIN_LOG_LEVEL="2",
    )


@pytest.mark.slow  # two short trainings in their own processes, then the evaluation: minutes
def test_recipe_command_trains_scores_ensemble_and_skips_finished_members(tmp_path):
    """ChestMNIST-shaped (multi-label, grey) synthetic file; a member of 2 seeds, squeezenet
    at 32 px from random init, one epoch of 2 steps, flip TTA."""
    info = catalog.get_info("chestmnist")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    n = {"train": 32, "val": 16, "test": 16}
    np.savez_compressed(data_dir / info.filename, **synthetic_arrays("chestmnist", n=n))
    (tmp_path / "tiny.cfg").write_text(TINY_MEMBER)
    _members_file(tmp_path, 'seeds = [0, 1]\n[members]\ntiny = "tiny.cfg"\n')

    proc = _recipe(tmp_path, data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    work = tmp_path / "work"
    saved = json.loads((work / summary.SUMMARY_JSON).read_text())
    assert [(r["member"], r["seed"], r["state"]) for r in saved["runs"]] == [
        ("tiny", 0, "trained"),
        ("tiny", 1, "trained"),
    ]
    assert saved["tta"] == "flip" and saved["num_images"] == 16
    assert "ensemble of 2" in proc.stdout and "tlmed_keras.export --workdir=" in proc.stdout
    # Each run's score is the trainer's own final test evaluation (same TTA).
    for row in saved["runs"]:
        trained = json.loads((pathlib.Path(row["workdir"]) / "metrics.json").read_text())
        assert row["acc"] == pytest.approx(trained["test"]["acc"], abs=1e-6)
        assert row["auc"] == pytest.approx(trained["test"]["auc"], abs=1e-4)
    _check_ensemble_is_member_mean(saved, tmp_path)

    # A rerun keeps both (no training process), and an unfinished member resumes.
    (work / "tiny" / "seed1" / "DONE").unlink()
    again = _recipe(tmp_path, data_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "tiny/seed0: finished before, kept" in again.stdout
    assert "tiny/seed1: training" in again.stdout
    states = [r["state"] for r in json.loads((work / summary.SUMMARY_JSON).read_text())["runs"]]
    assert states == ["finished before", "trained"]


# Each member alone (flip TTA), then the metrics of the mean of their probabilities, on the
# backend the command evaluated with (TensorFlow on a CPU): a random-init model's outputs have
# exact ties that another backend's float rounding breaks the other way.
MEMBER_MEAN = """
import json, sys
import numpy as np
from tlmed_keras import runtime
runtime.setup("tensorflow")
from tlmed_keras.evaluate.evaluation import evaluate_scores
from tlmed_keras.evaluate.report import EvalOptions, evaluate_run
options = EvalOptions(tta="flip", out_dir=sys.argv[1])
alone = [evaluate_run(w, "test", options).evaluation for w in sys.argv[2:]]
mean = np.mean([ev.scores for ev in alone], axis=0)
ev = evaluate_scores(alone[0].y_true, mean, task=alone[0].task, label_names=alone[0].label_names)
print(json.dumps({"acc": ev.acc, "auc": ev.auc}))
"""


def _check_ensemble_is_member_mean(saved: dict, tmp_path: pathlib.Path) -> None:
    """The summary's ensemble = MedMNIST ACC / AUC of the mean of the members' flip-TTA
    probabilities, each member evaluated alone."""
    workdirs = [r["workdir"] for r in saved["runs"]]
    proc = run_python("-c", MEMBER_MEAN, str(tmp_path / "alone"), *workdirs, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = json.loads(proc.stdout.strip().splitlines()[-1])
    assert saved["ensemble"]["acc"] == pytest.approx(expected["acc"], abs=1e-9)
    assert saved["ensemble"]["auc"] == pytest.approx(expected["auc"], abs=1e-9)
