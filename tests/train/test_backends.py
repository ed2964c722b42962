"""Reproducibility and mixed precision, each in a fresh process (the backend and dtype
policy are process-wide). Slow."""

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
    import dataclasses, json, sys
    import keras
    from tests import tiny_registry
    from tlmed_keras.runs.config import Config
    from tlmed_keras.runs.rundir import load_run
    from tlmed_keras.train.trainer import train_and_evaluate

    config = Config.from_dict(json.loads(sys.argv[1]))
    out = {}
    for i in range(int(sys.argv[3])):
        m = train_and_evaluate(config, f"{sys.argv[2]}/run{i}", registry=tiny_registry)
        out[f"run{i}"] = {"val": m["val"], "test": m["test"]}
    run = load_run(f"{sys.argv[2]}/run0")
    out["policy_after"] = keras.config.dtype_policy().name
    out["conv_policy"] = run.model.get_layer("backbone").get_layer("block1_conv").dtype_policy.name
    out["output_dtype"] = str(run.model.outputs[0].dtype)
    print("OUT", json.dumps(out), flush=True)
    """
)


def _run(backend, config, tmp_path, runs):
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(config.to_dict()), str(tmp_path), str(runs)],
        cwd=REPO,
        env=dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("OUT "))
    return json.loads(line.removeprefix("OUT "))


@pytest.mark.slow
def test_same_seed_same_metrics_on_tensorflow_cpu(tiny_config, tmp_path):
    """The CPU default backend: two runs with one seed give identical metrics."""
    config = tiny_config(backend="tensorflow", max_steps_per_epoch=2, augment="basic")
    out = _run("tensorflow", config, tmp_path, runs=2)
    assert out["run0"] == out["run1"]


@pytest.mark.slow
def test_mixed_precision_bfloat16_with_float32_logits(tiny_config, tmp_path):
    config = tiny_config(mixed_precision=True, max_steps_per_epoch=2)
    out = _run("jax", config, tmp_path, runs=1)
    assert out["conv_policy"] == "mixed_bfloat16"
    assert out["output_dtype"] == "float32"
    assert out["policy_after"] == "float32"
    assert out["run0"]["test"]["auc"] is not None
