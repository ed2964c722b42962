"""Every registered model builds, runs and swaps its head (TensorFlow backend, one child).

One child process does all the building: Keras' backend is fixed per process, TF's CPU
kernels build and run these graphs several times faster than JAX's op-by-op first calls,
and KERAS_HOME (read at Keras import) must point at a prepared cache for the
keras.applications cache check.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from tlmed_keras import models

PROBE = pathlib.Path(__file__).with_name("zoo_probe.py")
KERAS_MOBILENET = "weights/keras/mobilenet_2_5_224_tf_no_top.h5"


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, shared_dir) -> dict:
    tmp = tmp_path_factory.mktemp("zoo")
    cache = tmp / "keras_home" / "models"
    cache.mkdir(parents=True)
    (cache / pathlib.Path(KERAS_MOBILENET).name).symlink_to(shared_dir / KERAS_MOBILENET)
    out = tmp / "results.json"
    env = {
        **os.environ,
        "KERAS_BACKEND": "tensorflow",
        "KERAS_HOME": str(tmp / "keras_home"),
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    done = subprocess.run(
        [sys.executable, str(PROBE), str(out), str(tmp)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def _result(zoo: dict, key: str) -> dict:
    result = zoo[key]
    assert "exception" not in result, result.get("exception")
    return result


@pytest.mark.parametrize("name", models.model_names())
def test_model_builds_runs_and_swaps_head(zoo, name):
    result = _result(zoo, f"model:{name}")
    assert result["logits_shape"] == [2, 3] and result["finite"]
    assert result["blocks"] == result["num_blocks"] == models.get_spec(name).num_blocks
    assert result["frozen_trainable"] == 0
    assert result["top1_trainable"] > 0


@pytest.mark.parametrize("name", ["mobilenet_v2_torchvision", "resnet18", "dinov2_small"])
def test_classifier_keras_file_round_trip_in_safe_mode(zoo, name):
    assert _result(zoo, f"serialize:{name}")["max_abs_diff"] < 1e-5


def test_keras_weights_file_round_trip(zoo):
    assert _result(zoo, "keras_weight_file")["same"]


def test_keras_applications_reads_its_cache_under_keras_home(zoo):
    # The network is patched out in the child: the weights can only come from the cache.
    result = _result(zoo, "keras_home_cache")
    assert result["equal"] and result["std"] > 0.01


def test_offline_keras_applications_error_is_clear(zoo):
    message = _result(zoo, "offline")["error"]
    assert message is not None, "expected WeightsUnavailableError"
    assert "keras.applications" in message and "keras_home" in message
    assert "--weights=" in message
