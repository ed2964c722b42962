"""The sweep runner end to end: tables (means and sds), skip-if-finished, failures, sharding."""

from __future__ import annotations

import csv
import json
import os
import pathlib
import statistics
import subprocess
import sys

import pytest

from experiments import collect
from experiments import runs as sweep_runs
from tests.conftest import run_command, run_python

REPO = pathlib.Path(__file__).resolve().parents[2]
HERE = pathlib.Path(__file__).resolve().parent
FAKE = (
    f"{sys.executable} {HERE / 'fake_train.py'} --flagfile={{flagfile}} --seed={{seed}} "
    "--workdir={workdir}"
)

# cell -> seed -> (test acc, test auc); what the fake trainer reports.
RESULTS = {
    "blood_a": {0: (0.91, 0.990), 1: (0.87, 0.981), 2: (0.90, 0.985)},
    "oct_b": {0: (0.71, 0.930), 1: (0.78, 0.951), 2: (0.74, 0.944)},
}
FAIL_MESSAGE = "Bad --image_size=7: resnet18 takes inputs of at least 32 px"


def _flagfile(folder: pathlib.Path, stem: str, model: str, data: str, extra: str) -> pathlib.Path:
    path = folder / f"{stem}.cfg"
    path.write_text(f"# test cell {stem}\n--model={model}\n--data={data}\n--size=28\n{extra}\n")
    return path


def _one_step_training(npz: pathlib.Path, image_size: int, head_epochs: int) -> str:
    """Flags of a real training run cut to one step per epoch on the synthetic ``npz``."""
    return (
        f"--image_size={image_size}\n--data_dir={npz.parent}\n--noverify_data\n"
        f"--head_epochs={head_epochs}\n--finetune_epochs=1\n--warmup_epochs=0\n"
        "--batch_size=8\n--max_steps_per_epoch=1\n--weights=none\n--backend=jax"
    )


@pytest.fixture
def flagdir(tmp_path):
    folder = tmp_path / "flags"
    folder.mkdir()
    for stem, data, model in (
        ("blood_a", "bloodmnist", "resnet18"),
        ("oct_b", "octmnist", "vgg16"),
    ):
        table = ";".join(f"{s}:{a}:{u}" for s, (a, u) in RESULTS[stem].items())
        _flagfile(folder, stem, model, data, f"--fake_metrics={table}")
    _flagfile(folder, "broken", "resnet18", "bloodmnist", f"--fake_fail={FAIL_MESSAGE}")
    return folder


def sweep(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    return run_python("-m", "experiments.sweep", *args, cwd=cwd, timeout=300)


def _rows(path: pathlib.Path) -> dict[str, dict]:
    with open(path) as f:
        return {row["cell"]: row for row in csv.DictReader(f)}


def test_table_means_sds_failures_and_no_retraining(flagdir, tmp_path):
    out = tmp_path / "out"
    args = (f"--flagfiles={flagdir}/*.cfg", "--seeds=0,1,2", f"--out={out}", f"--command={FAKE}")
    first = sweep(*args)
    assert first.returncode == 1, first.stderr  # a run failed: the sweep says so...
    starts = (out / "runs" / "starts.txt").read_text().splitlines()
    assert len(starts) == 9  # ...but every run was started

    cells = _rows(out / "results.csv")
    for stem, by_seed in RESULTS.items():
        accs = [a for a, _ in by_seed.values()]
        aucs = [u for _, u in by_seed.values()]
        row = cells[stem]
        assert row["done"] == "3" and row["failed"] == "0"
        assert float(row["test_acc_mean"]) == pytest.approx(statistics.mean(accs), abs=1e-6)
        assert float(row["test_acc_sd"]) == pytest.approx(statistics.stdev(accs), abs=1e-6)
        assert float(row["test_auc_mean"]) == pytest.approx(statistics.mean(aucs), abs=1e-6)
        assert float(row["test_auc_sd"]) == pytest.approx(statistics.stdev(aucs), abs=1e-6)
        # fake_train reports val = test / 2
        assert float(row["val_acc_mean"]) == pytest.approx(statistics.mean(accs) / 2, abs=1e-6)
        assert float(row["val_auc_sd"]) == pytest.approx(statistics.stdev(aucs) / 2, abs=1e-6)
    assert cells["broken"]["done"] == "0" and cells["broken"]["failed"] == "3"
    assert cells["broken"]["test_acc_mean"] == ""

    md = (out / "results.md").read_text()
    accs = [a for a, _ in RESULTS["blood_a"].values()]
    assert f"{statistics.mean(accs):.4f} ± {statistics.stdev(accs):.4f}" in md
    assert "## Failed runs" in md and md.count(FAIL_MESSAGE) >= 3
    assert "| broken | resnet18 | bloodmnist |" in md and "0/3 (3 failed)" in md
    with open(out / "runs.csv") as f:
        runs = list(csv.DictReader(f))
    broken = [r for r in runs if r["cell"] == "broken"]
    assert {r["state"] for r in broken} == {"failed"}
    assert all(FAIL_MESSAGE in r["error"] for r in broken)
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    done = out / "runs" / "blood_a" / "seed1" / "metrics.json"
    mtime = done.stat().st_mtime_ns
    second = sweep(*args)
    assert second.returncode == 1
    again = (out / "runs" / "starts.txt").read_text().splitlines()[len(starts) :]
    assert sorted(again) == [f"broken/seed{s}" for s in range(3)]  # only the failed ones
    assert done.stat().st_mtime_ns == mtime
    assert "6 skipped" in second.stdout and "3 failed" in second.stdout
    assert _rows(out / "results.csv")["oct_b"] == cells["oct_b"]


def test_list_shard_and_collect_only(flagdir, tmp_path):
    out = tmp_path / "out"
    base = (f"--flagfiles={flagdir}/blood_a.cfg,{flagdir}/oct_b.cfg", "--seeds=0-2", f"--out={out}")
    listed = sweep(*base, f"--command={FAKE}", "--list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 6 and all("--nocollect" in ln and "--command=" in ln for ln in lines)
    # Shards partition the plan: running 0/2 and 1/2 covers every run exactly once.
    for i in (0, 1):
        assert sweep(*base, f"--command={FAKE}", f"--shard={i}/2", "--nocollect").returncode == 0
    starts = (out / "runs" / "starts.txt").read_text().splitlines()
    assert sorted(starts) == sorted(f"{c}/seed{s}" for c in RESULTS for s in range(3))
    assert sweep(*base, "--list").stdout == ""  # nothing left to run
    # One printed command runs by itself (what a scheduler does with each line).
    out2 = tmp_path / "out2"
    one = sweep(*base[:2], f"--out={out2}", f"--command={FAKE}", "--list").stdout.splitlines()[0]
    done = run_command(one.replace("python", sys.executable, 1), timeout=300)
    assert done.returncode == 0, done.stderr
    assert (out2 / "runs" / "blood_a" / "seed0" / "DONE").is_file()
    collected = sweep(*base, "--collect_only", "--noplot")
    assert collected.returncode == 0, collected.stderr
    assert float(_rows(out / "results.csv")["blood_a"]["test_acc_mean"]) == pytest.approx(
        statistics.mean(a for a, _ in RESULTS["blood_a"].values())
    )


def test_single_seed_has_no_sd(flagdir, tmp_path):
    out = tmp_path / "out"
    res = sweep(
        f"--flagfiles={flagdir}/oct_b.cfg",
        "--seeds=1",
        f"--out={out}",
        f"--command={FAKE}",
        "--noplot",
    )
    assert res.returncode == 0, res.stderr
    row = _rows(out / "results.csv")["oct_b"]
    assert float(row["test_acc_mean"]) == pytest.approx(0.78) and row["test_acc_sd"] == ""
    assert "0.7800 (n=1)" in (out / "results.md").read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (("--seeds=a",), "Bad --seeds='a'"),
        (("--seeds=3-1",), "Bad --seeds='3-1'"),
        (("--shard=2/2",), "Bad --shard='2/2'"),
        (("--command={python} {oops}",), "Bad --command="),
        (("--jobs=0",), "Bad --jobs=0"),
    ],
)
def test_bad_arguments_say_what_is_wrong(flagdir, tmp_path, args, message):
    res = sweep(f"--flagfiles={flagdir}/oct_b.cfg", f"--out={tmp_path}", *args)
    assert res.returncode != 0 and message in res.stderr


def test_flagfiles_errors(tmp_path):
    with pytest.raises(sweep_runs.SweepError, match="matches no file"):
        sweep_runs.expand_flagfiles([str(tmp_path / "nothing*.cfg")])
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        (tmp_path / d / "same.cfg").write_text("--model=x\n")
    with pytest.raises(sweep_runs.SweepError, match="share the stem 'same'"):
        sweep_runs.expand_flagfiles([str(tmp_path / "*" / "same.cfg")])


def test_seeds_and_shards_parse():
    assert sweep_runs.parse_seeds("0,1,2") == [0, 1, 2]
    assert sweep_runs.parse_seeds("3-5,0") == [0, 3, 4, 5]
    assert sweep_runs.parse_shard("1/3") == (1, 3)
    runs = list(range(7))
    parts = [sweep_runs.shard(runs, i, 3) for i in range(3)]
    assert sorted(sum(parts, [])) == runs


def test_real_trainer_run_through_the_sweep(make_npz, tmp_path):
    """One real tlmed_keras training run (tiny registry model, synthetic BloodMNIST, one step
    per epoch) launched by the runner; its metrics.json lands in the table."""
    data = make_npz("bloodmnist", 28, {"train": 16, "val": 8, "test": 8})
    flags = _one_step_training(data, image_size=28, head_epochs=0) + "\n--eval_batch_size=8"
    flagfile = _flagfile(tmp_path, "tiny_blood", "tiny_cnn", "bloodmnist", flags)
    out = tmp_path / "out"
    template = (
        f"{sys.executable} {HERE / 'tiny_train.py'} --flagfile={{flagfile}} "
        "--seed={seed} --workdir={workdir}"
    )
    res = sweep(
        f"--flagfiles={flagfile}", "--seeds=0", f"--out={out}", f"--command={template}", "--noplot"
    )
    log = out / "runs" / "tiny_blood" / "seed0" / "sweep.log"
    assert res.returncode == 0, log.read_text()[-3000:] if log.is_file() else res.stderr
    workdir = out / "runs" / "tiny_blood" / "seed0"
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["model"] == "tiny_cnn" and metrics["seed"] == 0
    assert (workdir / "DONE").is_file() and (workdir / "model.keras").is_file()
    row = _rows(out / "results.csv")["tiny_blood"]
    assert float(row["test_acc_mean"]) == pytest.approx(metrics["test"]["acc"], abs=1e-6)
    assert float(row["test_auc_mean"]) == pytest.approx(metrics["test"]["auc"], abs=1e-6)


@pytest.mark.slow
def test_default_command_runs_the_real_cli(make_npz, tmp_path):
    """The runner's default command (python -m tlmed_keras.train) on a registry model."""
    data = make_npz("breastmnist", 28, {"train": 16, "val": 8, "test": 8})
    flags = _one_step_training(data, image_size=32, head_epochs=1)
    flagfile = _flagfile(tmp_path, "cli_breast", "squeezenet1_1", "breastmnist", flags)
    out = tmp_path / "out"
    res = sweep(f"--flagfiles={flagfile}", "--seeds=0,1", f"--out={out}", "--noplot")
    assert res.returncode == 0, res.stdout + res.stderr
    row = _rows(out / "results.csv")["cli_breast"]
    assert row["done"] == "2" and row["test_acc_sd"] != ""


def test_a_run_whose_worker_died_is_reported_as_interrupted(flagdir, tmp_path):
    from experiments import collect

    [run] = sweep_runs.plan([flagdir / "oct_b.cfg"], [0], tmp_path / "out")
    run.workdir.mkdir(parents=True)
    (run.workdir / sweep_runs.LOG_FILE).write_text("Epoch 3/9\n")
    (run.workdir / sweep_runs.STATUS_FILE).write_text(json.dumps({"state": "running"}))
    [cell] = collect.collect([run])
    assert cell.runs[0].state == "failed" and "interrupted" in cell.runs[0].error
    assert "Epoch 3/9" in cell.runs[0].error
    # While a live worker holds the lock, it is running.
    (run.workdir / sweep_runs.LOCK_FILE).write_text(
        json.dumps({"host": os.uname().nodename, "pid": os.getpid()})
    )
    assert collect.collect([run])[0].runs[0].state == "running"


def _finished_run(tmp_path, flag_text: str) -> sweep_runs.Run:
    """A finished run of ``flag_text`` (sweep.json with its digest, DONE, metrics, config)."""
    flagfile = tmp_path / "cell.cfg"
    flagfile.write_text(flag_text)
    run = sweep_runs.Run(flagfile, 0, tmp_path / "runs" / "cell" / "seed0")
    run.workdir.mkdir(parents=True)
    status = {"state": "done", "flagfile_sha256": sweep_runs.flagfile_digest(flagfile)}
    (run.workdir / "sweep.json").write_text(json.dumps(status))
    metric = {"acc": 0.5, "auc": 0.6}
    (run.workdir / "metrics.json").write_text(json.dumps({"val": metric, "test": metric}))
    recorded = {"model": "resnet18", "finetune_lr": 3e-5, "download": False, "augment": "basic"}
    (run.workdir / "config.json").write_text(json.dumps({"flags": recorded}))
    (run.workdir / "DONE").write_text("done\n")
    return run


def test_a_flagfile_edit_that_keeps_every_setting_does_not_invalidate_its_runs(tmp_path):
    base = tmp_path / "base.cfg"
    base.write_text("--model=resnet18\n--nodownload\n--finetune_lr=3e-5\n")
    run = _finished_run(tmp_path, f"--flagfile={base}\n--augment=basic\n")
    assert collect.run_result(run).note == ""
    # Same settings written differently (a comment, 0.00003 for 3e-5): still valid.
    base.write_text("# comment\n--model=resnet18\n--nodownload\n--finetune_lr=0.00003\n")
    run.flagfile.write_text(f"# new comment\n--flagfile={base}\n--augment=basic\n")
    assert "every flag it sets is unchanged" in collect.run_result(run).note
    # A changed value: the run no longer matches its flagfile.
    run.flagfile.write_text(f"--flagfile={base}\n--augment=flip\n")
    assert "flagfile changed since this run" in collect.run_result(run).note


def test_table_shows_the_seeds_mean_sd_and_their_mean_test_interval(tmp_path):
    cells = []
    for seed, (acc, (low, high)) in enumerate([(0.80, (0.74, 0.86)), (0.84, (0.78, 0.90))]):
        (tmp_path / f"s{seed}").mkdir()
        run = _finished_run(tmp_path / f"s{seed}", "--model=resnet18\n")
        metrics = json.loads((run.workdir / "metrics.json").read_text())
        metrics["test"]["acc"] = acc
        metrics["test_ci95"] = {"acc": [low, high], "auc": [0.5, 0.7]}
        (run.workdir / "metrics.json").write_text(json.dumps(metrics))
        cells.append(collect.run_result(run))
    cell = collect.CellResult("cell", "resnet18", "bloodmnist", 28, None, "imagenet", cells)
    table = collect.markdown([cell])
    assert "0.8200 ± 0.0283 [0.7600, 0.8800]" in table  # sd of 0.80, 0.84; mean bounds
    assert "0.6000 ± 0.0000 [0.5000, 0.7000]" in table
    (row,) = collect.cell_rows([cell])
    assert row["test_acc_ci_low_mean"] == "0.760000" and row["test_auc_ci_high_mean"] == "0.700000"
    (tmp_path / "old").mkdir()
    old = _finished_run(tmp_path / "old", "--model=resnet18\n")  # no intervals recorded
    old_cell = collect.CellResult("old", "resnet18", "x", 28, None, "", [collect.run_result(old)])
    assert "0.5000 (n=1) |" in collect.markdown([old_cell])
