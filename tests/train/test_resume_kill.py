"""A real ``kill -9`` (SIGKILL) right after epoch 1, then a restart with the same config:
the run continues at epoch 2 in phase 2. Slow: two fresh Python processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO

SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys
    from tests import tiny_registry
    from tlmed_keras.runs.config import Config
    from tlmed_keras.train.trainer import train_and_evaluate

    def hook(epoch, phase, model):
        print("EPOCH", epoch, phase.name, flush=True)
        if epoch == 1 and os.environ.get("KILL_AFTER_EPOCH_1"):
            os.kill(os.getpid(), signal.SIGKILL)

    config = Config.from_dict(json.loads(sys.argv[1]))
    metrics = train_and_evaluate(config, sys.argv[2], registry=tiny_registry, epoch_end_hook=hook)
    print("METRICS", json.dumps(metrics), flush=True)
    """
)


def _run(config, workdir, **env):
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(config.to_dict()), str(workdir)],
        cwd=REPO,
        env=dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=str(REPO), **env),
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_kill_9_after_epoch_1_then_resume(tiny_config, tmp_path):
    config = tiny_config(max_steps_per_epoch=2)
    workdir = tmp_path / "run"
    killed = _run(config, workdir, KILL_AFTER_EPOCH_1="1")
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert "EPOCH 1 head" in killed.stdout and not (workdir / "DONE").exists()
    resumed = _run(config, workdir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    epochs = [line for line in resumed.stdout.splitlines() if line.startswith("EPOCH")]
    assert epochs == ["EPOCH 2 finetune"]
    assert "after epoch 1 (phase head)" in resumed.stdout
    assert (workdir / "DONE").exists()
    assert len((workdir / "history.csv").read_text().splitlines()) == 3
