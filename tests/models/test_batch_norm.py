"""fuse_batch_norm: Keras' BatchNormalization through TF's fused kernel (issue #14).

The numbers are checked in a TensorFlow-backend child process (``fused_bn_child.py``): the
suite itself runs on JAX, where the layer must stay Keras' own.
"""

import json
import pathlib

import keras
import pytest

from tests.conftest import run_python
from tlmed_keras.models import batch_norm

CHILD = str(pathlib.Path(__file__).with_name("fused_bn_child.py"))


@pytest.fixture(scope="module")
def cases() -> dict:
    proc = run_python(CHILD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_fused_layer_matches_keras_batch_norm(cases):
    for name in ("train", "train_eps_momentum", "train_no_affine", "inference"):
        case = cases[name]
        assert case["fused_op"], f"{name}: the traced step has no FusedBatchNormV3"
        assert case["output"] < 1e-5, (name, case)
        assert case["gradients"] < 1e-4, (name, case)
        # Moving statistics: the population variance, as Keras keeps it (not n - 1).
        assert case["statistics"] < 1e-6, (name, case)


def test_fused_layer_under_mixed_bfloat16_keeps_the_compute_dtype(cases):
    case = cases["train_mixed_bf16"]
    assert case["fused_op"] and case["output_dtype"] == "bfloat16"
    assert case["output"] < 0.05 and case["statistics"] < 1e-3, case


def test_fuse_batch_norm_switches_nested_layers_and_saves(cases):
    report = cases["model"]
    assert report["count"] == 2
    assert report["fused"] == [True] and report["fused_op"]
    # The layers stay Keras' class, so saved files are those of the unfused model.
    assert report["classes"] == ["BatchNormalization"]
    assert "BatchNormalization" in report["loaded_classes"]
    assert report["train_diff"] < 1e-5
    assert report["reload_diff"] < 1e-5
    assert report["weights_file_diff"] < 1e-5


def test_environment_switch_turns_fusing_off(cases):
    report = cases["model_switched_off"]
    assert report["count"] == 0
    assert report["fused"] == [False] and not report["fused_op"]


def test_other_backends_keep_keras_batch_norm():
    assert keras.backend.backend() != "tensorflow"
    inputs = keras.Input((4, 4, 2))
    model = keras.Model(inputs, keras.layers.BatchNormalization()(inputs))
    assert batch_norm.fuse_batch_norm(model) == 0
    assert not batch_norm.is_fused(model.layers[-1])
