"""Issue 17: a bad weights file never strands a run, damaged checkpoints fall back, one
trainer per run directory, stale temporary files go, divergence stops (or warns).

Tiny model on synthetic data; the run-directory pieces are tested without training."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests import tiny_registry
from tests.test_run_lock import hold_in_another_process
from tlmed_keras import housekeeping
from tlmed_keras.errors import (
    CheckpointError,
    RunLockedError,
    TrainingDivergedError,
    WeightsFileError,
)
from tlmed_keras.runs import rundir
from tlmed_keras.train import divergence
from tlmed_keras.train.trainer import train_and_evaluate

ARRAYS = {"model": [np.arange(6, dtype=np.float32).reshape(2, 3)], "optimizer": [np.ones(4)]}


class Killed(Exception):
    pass


def _kill_after(n):
    def hook(epoch, phase, model):
        if epoch == n:
            raise Killed

    return hook


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --- defect 1: nothing is written before the model is built and its weights loaded --------


def test_bad_weights_file_leaves_no_run_directory_and_rerun_works(tiny_config, tmp_path):
    junk = tmp_path / "wrong.pth"
    junk.write_bytes(os.urandom(64))
    workdir = tmp_path / "run"
    bad = tiny_config(weights=str(junk), max_steps_per_epoch=1, finetune_epochs=0)
    with pytest.raises(WeightsFileError, match=r"wrong\.pth.*tiny_cnn"):
        train_and_evaluate(bad, workdir, registry=tiny_registry)
    assert not workdir.exists()
    metrics = train_and_evaluate(
        dataclasses.replace(bad, weights="none"), workdir, registry=tiny_registry, say=print
    )
    assert (workdir / "DONE").is_file() and metrics["epochs_run"] == 1


def test_run_that_never_finished_an_epoch_is_replaced_by_other_flags(tiny_config, tmp_path):
    config = tiny_config(max_steps_per_epoch=1, finetune_epochs=0)
    old = dataclasses.replace(config, head_lr=0.5)
    rundir.RunDir(tmp_path).write_config(old, {})  # a run killed before its first epoch
    said = []
    train_and_evaluate(
        config, tmp_path, registry=tiny_registry, say=lambda *a, **k: said.append(str(a[0]))
    )
    notice = [line for line in said if "never finished an epoch" in str(line)]
    assert len(notice) == 1 and "--head_lr: 0.5 in the workdir, 0.01 now" in notice[0]
    stored = json.loads((tmp_path / rundir.CONFIG_FILE).read_text())[rundir.FLAGS_KEY]
    assert stored["head_lr"] == config.head_lr


# --- defect 4: checksummed checkpoints, fall back to the newest intact one ----------------


def _two_epochs(root) -> rundir.RunDir:
    """A run directory with the states of epochs 1 and 2 saved, as the trainer saves them."""
    run = rundir.RunDir(root)
    for epoch in (1, 2):
        state = run.load_state() or rundir.TrainState()
        state.epoch, state.phase = epoch, "head"
        state.best = run.save_arrays(f"best-{epoch}.npz", {"model": ARRAYS["model"]})
        state.checkpoint = run.save_arrays(f"ckpt-{epoch}.npz", ARRAYS)
        state.history.append({"epoch": epoch})
        run.save_state(state)
    return rundir.RunDir(root)  # a fresh process's view


def _truncate(path):
    path.write_bytes(path.read_bytes()[:50])


def _flip_bytes(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4] = b"\xff\x00\xff\x00"
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _flip_bytes, os.unlink])
def test_damaged_latest_checkpoint_falls_back_to_the_previous(tmp_path, damage):
    run = _two_epochs(tmp_path)
    assert sorted(p.name for p in run.ckpt.glob("*.npz")) == [
        "best-1.npz",
        "best-2.npz",
        "ckpt-1.npz",
        "ckpt-2.npz",
    ]
    damage(run.ckpt / "ckpt-2.npz")
    said = []
    state = run.resume_state(said.append)
    assert state.epoch == 1 and state.checkpoint == "ckpt-1.npz"
    assert len(said) == 1 and "ckpt-2.npz" in said[0] and "after epoch 1" in said[0]
    np.testing.assert_array_equal(run.load_arrays(state.checkpoint)["model"][0], ARRAYS["model"][0])


def test_no_intact_checkpoint_says_how_to_start_over(tmp_path):
    run = _two_epochs(tmp_path)
    _truncate(run.ckpt / "ckpt-2.npz")
    (run.ckpt / "ckpt-1.npz").unlink()
    with pytest.raises(CheckpointError, match=r"No intact checkpoint.*new --workdir"):
        run.resume_state()


def test_damaged_state_json_names_the_file(tmp_path):
    run = _two_epochs(tmp_path)
    (run.ckpt / rundir.STATE_FILE).write_text("")
    with pytest.raises(CheckpointError, match=r"state\.json is damaged"):
        run.resume_state()
    (run.ckpt / rundir.STATE_FILE).write_text(json.dumps({"epoch": 1, "surprise": 2}))
    with pytest.raises(CheckpointError, match=r"state\.json.*unknown keys: surprise"):
        run.resume_state()


def test_killed_run_with_damaged_latest_checkpoint_resumes_from_the_one_before(
    tiny_config, tmp_path
):
    config = tiny_config(max_steps_per_epoch=1, finetune_epochs=2)
    with pytest.raises(Killed):
        train_and_evaluate(config, tmp_path, registry=tiny_registry, epoch_end_hook=_kill_after(2))
    _flip_bytes(tmp_path / rundir.CKPT_DIR / "ckpt-2.npz")
    stale = tmp_path / rundir.CKPT_DIR / ".ckpt-3.npz.x1y2.tmp"  # as a kill mid-write leaves
    stale.write_bytes(b"half a checkpoint")
    said, epochs = [], []
    train_and_evaluate(
        config,
        tmp_path,
        registry=tiny_registry,
        say=lambda *a, **k: said.append(str(a[0])),
        epoch_end_hook=lambda epoch, phase, model: epochs.append(epoch),
    )
    assert epochs == [2, 3]
    assert any("ckpt-2.npz is damaged" in line for line in said)
    assert not stale.exists() and any("Removed 1 temporary file " in line for line in said)
    assert (tmp_path / "DONE").is_file()


def test_old_checkpoint_folder_is_read_and_renamed(tmp_path):
    _two_epochs(tmp_path)
    os.replace(tmp_path / rundir.CKPT_DIR, tmp_path / rundir.LEGACY_CKPT_DIR)
    run = rundir.RunDir(tmp_path)
    assert run.ckpt.name == rundir.LEGACY_CKPT_DIR and run.resume_state().epoch == 2
    assert run.migrate_legacy_ckpt()
    assert run.ckpt.name == rundir.CKPT_DIR and rundir.RunDir(tmp_path).resume_state().epoch == 2


# --- defect 6: one trainer per run directory ----------------------------------------------


def _write_lock(root, pid):
    root.mkdir(parents=True, exist_ok=True)
    info = {"pid": pid, "host": housekeeping.socket.gethostname(), "command": "other trainer"}
    (root / housekeeping.LOCK_FILE).write_text(json.dumps(info))


def test_second_trainer_refuses_at_once_naming_the_first(tiny_config, tmp_path):
    holder = hold_in_another_process(tmp_path)  # a live trainer's lock
    try:
        with pytest.raises(RunLockedError, match=rf"in use by process {holder.pid} on host"):
            train_and_evaluate(tiny_config(), tmp_path, registry=tiny_registry)
        assert not (tmp_path / rundir.CONFIG_FILE).exists()
        assert (tmp_path / housekeeping.LOCK_FILE).exists()  # the other trainer's lock stays
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    pid = _dead_pid()
    _write_lock(tmp_path, pid)
    said = []
    with housekeeping.RunLock(tmp_path, said.append) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert said == [
        f"Removed a stale lock in {tmp_path}: process {pid} on host "
        f"{housekeeping.socket.gethostname()} (started ?: other trainer) holds it no more."
    ]
    assert not (tmp_path / housekeeping.LOCK_FILE).exists()


def test_lock_removes_the_folder_it_created_when_nothing_was_written(tmp_path):
    with housekeeping.RunLock(tmp_path / "new" / "run"):
        assert (tmp_path / "new" / "run" / housekeeping.LOCK_FILE).is_file()
    assert not (tmp_path / "new").exists()


# --- defect 7: stale temporary files ---------------------------------------------------------


def test_stale_temp_files_are_removed_in_one_line(tmp_path):
    ckpt = tmp_path / rundir.CKPT_DIR
    ckpt.mkdir()
    stale = [
        ckpt / ".ckpt-3.npz.k2j4.tmp",
        ckpt / ".state.json.x1.tmp",
        tmp_path / ".metrics.json.a.tmp",
    ]
    for path in stale:
        path.write_bytes(b"x" * 1000)
    (ckpt / "ckpt-2.npz").write_bytes(b"keep")
    said = []
    assert housekeeping.remove_stale_temps([tmp_path, ckpt], said.append) == 3
    assert not any(p.exists() for p in stale) and (ckpt / "ckpt-2.npz").exists()
    assert said == [f"Removed 3 temporary files (0.0 MB) left by an interrupted run in {tmp_path}."]


def test_stale_export_folders_are_removed_but_a_live_writers_is_kept(tmp_path):
    dead, old, live = (
        tmp_path / f".tmp-1-{_dead_pid()}-ab12cd34",
        tmp_path / ".tmp-2-ab12cd34",
        tmp_path / f".tmp-3-{os.getpid()}-ab12cd34",
    )
    for folder in (dead, old, live):
        (folder / "variables").mkdir(parents=True)
        (folder / "saved_model.pb").write_bytes(b"x" * 100)
    said = []
    assert housekeeping.remove_stale_export_temps(tmp_path, said.append) == 2
    assert not dead.exists() and not old.exists() and live.exists()
    assert len(said) == 1 and "Removed 2 temporary files" in said[0]


# --- defect 9: divergence -----------------------------------------------------------------


def test_divergence_check_compares_with_first_epoch_and_chance():
    info = type("Info", (), {"num_classes": 2, "is_multilabel": False})
    assert divergence.check(0.7, None, info, 10, "e1") is None
    assert "loss 1234 is above 10x 0.693" in divergence.check(1234.0, None, info, 10, "e1")
    assert divergence.check(3.0, 0.2, info, 10, "e2") is not None  # 15x the first epoch
    assert divergence.check(1e6, 0.2, info, 0, "e2") is None  # 0 = off


def test_divergence_stops_then_warn_continues_the_same_run(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setattr(divergence, "chance_loss", lambda *a: 1e-6)  # every loss "diverges"
    config = tiny_config(max_steps_per_epoch=1, head_epochs=2, finetune_epochs=0)
    with pytest.raises(TrainingDivergedError, match=r"phase 1 \(head\), epoch 1.*--head_lr"):
        train_and_evaluate(config, tmp_path, registry=tiny_registry)
    assert rundir.RunDir(tmp_path).load_state().epoch == 1  # the epoch was kept
    said, epochs = [], []
    train_and_evaluate(
        dataclasses.replace(config, on_divergence="warn"),
        tmp_path,
        registry=tiny_registry,
        say=lambda *a, **k: said.append(str(a[0])),
        epoch_end_hook=lambda epoch, phase, model: epochs.append(epoch),
    )
    assert epochs == [2] and any(line.startswith("Warning: Training diverged") for line in said)


# --- defect 8: evaluate/export on a missing, unfinished or damaged run --------------------


def test_load_run_names_a_missing_or_unfinished_run(tiny_config, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope does not exist"):
        rundir.load_run(tmp_path / "nope")
    rundir.RunDir(tmp_path).write_config(tiny_config(), {})  # killed before it finished
    with pytest.raises(
        FileNotFoundError, match=r"model\.keras is missing: .*unfinished one: .*--flagfile="
    ):
        rundir.load_run(tmp_path)


def test_load_run_names_a_damaged_model_or_config(tiny_config, tmp_path):
    run = rundir.RunDir(tmp_path)
    run.write_config(tiny_config(), {})
    (tmp_path / rundir.MODEL_FILE).write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(rundir.DamagedFileError, match=r"model\.keras cannot be loaded"):
        rundir.load_run(tmp_path)
    (tmp_path / rundir.CONFIG_FILE).write_text("{")
    with pytest.raises(rundir.DamagedFileError, match=r"config\.json is damaged \(not valid JSON"):
        rundir.load_run(tmp_path)


def test_full_disk_fails_in_one_error_and_loses_nothing(tmp_path, monkeypatch):
    _two_epochs(tmp_path)
    run = rundir.RunDir(tmp_path)
    state = run.resume_state()

    def full(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rundir, "atomic_write", full)
    with pytest.raises(OSError, match="No space left"):
        state.checkpoint = run.save_arrays("ckpt-3.npz", ARRAYS)
    monkeypatch.undo()
    again = rundir.RunDir(tmp_path).resume_state()
    assert again.epoch == 2 and again.checkpoint == "ckpt-2.npz"


def test_lock_is_reentrant_within_one_process(tmp_path):
    with housekeeping.RunLock(tmp_path / "run") as outer:
        with housekeeping.RunLock(tmp_path / "run"):
            pass
        assert outer.path.is_file()  # the inner one left the holder's lock alone
    assert not (tmp_path / "run").exists()
