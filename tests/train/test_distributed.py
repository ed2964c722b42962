"""Data parallelism over 2 XLA host devices (Keras' DataParallel on JAX), in a subprocess:
the device count is fixed when JAX starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from tests.conftest import REPO

SCRIPT = textwrap.dedent(
    """
    import dataclasses, json, sys
    import keras
    from tests import tiny_registry
    from tlmed_keras.runs.config import Config
    from tlmed_keras.train.trainer import train_and_evaluate

    assert len(keras.distribution.list_devices()) == 2, keras.distribution.list_devices()
    config = Config.from_dict(json.loads(sys.argv[1]))
    metrics = train_and_evaluate(config, sys.argv[2], registry=tiny_registry)
    assert keras.distribution.distribution() is None  # restored after the run
    print("METRICS", json.dumps(metrics))
    """
)


def test_data_parallel_on_two_host_devices(tiny_config, tmp_path):
    # 30 / 14 / 10 images: odd leftovers exercise the padding of evaluation batches.
    config = tiny_config(
        n={"train": 30, "val": 14, "test": 10},
        finetune_epochs=0,
        backend="jax",
        distribute="data_parallel",
        max_steps_per_epoch=2,
    )
    env = dict(
        os.environ,
        KERAS_BACKEND="jax",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=str(REPO),
    )
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(config.to_dict()), str(tmp_path / "run")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("METRICS "))
    metrics = json.loads(line.removeprefix("METRICS "))
    assert metrics["devices"] == 2 and metrics["backend"] == "jax"
    assert 0.0 <= metrics["test"]["auc"] <= 1.0
    assert (tmp_path / "run" / "model.keras").is_file()
