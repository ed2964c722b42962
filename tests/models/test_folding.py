"""fold_convolutions: convolutions absorb inference-mode batch norm and zero padding, and 1x1
convolutions run as MatMuls, on the TensorFlow backend (CPU training speed, issue #12).

The numbers come from a TensorFlow-backend child process (``folding_child.py``; the suite
runs on JAX, where layers must stay Keras' own): each model is built unrouted and routed with
the same weights (random batch-norm statistics, so that folding them is not the identity) and
compared in a compiled training step, frozen and learning batch norm, and in inference.
"""

from __future__ import annotations

import functools
import json

import keras
import pytest

from tests.conftest import run_python
from tlmed_keras.models import folding

CHILD = "tests/models/folding_child.py"
ZOO = ("resnet50", "resnet18", "inception_v3", "efficientnet_b0", "densenet121", "mobilenet_v2")


def _run_child(tmp_path, weights, *kinds) -> dict:
    out = tmp_path / "folding.json"
    proc = run_python(CHILD, str(out), str(weights), *kinds)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    errors = {k: v["error"] for k, v in results.items() if "error" in v}
    assert not errors, errors
    return results


@pytest.fixture(scope="module")
def cases(tmp_path_factory, mobilenet_pth) -> dict:
    return _run_child(
        tmp_path_factory.mktemp("folding"), mobilenet_pth, "tiny", "mobilenet_v2_torchvision"
    )


def _assert_same_results(name: str, report: dict) -> None:
    for mode in ("frozen", "learning"):
        case = report[mode]
        assert case["logits"] < 1e-5, (name, mode, case["logits"])
        assert case["inference"] < 1e-5, (name, mode, case["inference"])
        assert case["gradients"] < 1e-4, (name, mode, case["gradients"])
        assert case["statistics"] < 1e-6, (name, mode, case["statistics"])
    # Frozen batch norm keeps its statistics; learning batch norm (not folded) updates them.
    assert not report["frozen"]["statistics_moved"]
    assert report["learning"]["statistics_moved"]


def test_tiny_model_every_pattern_same_results(cases):
    report = cases["tiny"]
    # conv+BN (with bias), depthwise+BN ("same"-equal padding, depth multiplier 2),
    # depthwise stride 2 (padding unlike "same"), 1x1+BN; not the conv read twice.
    assert report["counts"] == {"batch_norm": 4, "padding": 3, "pointwise": 2}
    _assert_same_results("tiny", report)


def test_frozen_batch_norm_leaves_the_compiled_step(cases):
    """The point of it: with frozen batch norm, the traced training step of the genuine
    MobileNetV2 has no batch-norm kernel (forward or gradient) and no Pad left; the 1x1
    convolutions are MatMuls."""
    report = cases["mobilenet_v2_torchvision"]
    assert report["counts"] == {"batch_norm": 52, "padding": 18, "convolutions": 52}
    plain, folded = report["frozen"]["plain_ops"], report["frozen"]["folded_ops"]
    assert "FusedBatchNormV3" in plain and "FusedBatchNormGradV3" in plain
    assert not any("BatchNorm" in op for op in folded)
    assert "MatMul" in folded
    # Stride-2 depthwise convolutions whose padding is not "same" keep a Pad (see _convolve);
    # the other 13 paddings are gone.
    assert "Pad" in plain
    # Learning batch norm is not folded: its kernels stay.
    assert "FusedBatchNormGradV3" in report["learning"]["folded_ops"]


def test_genuine_mobilenet_v2_same_results(cases):
    _assert_same_results("mobilenet_v2_torchvision", cases["mobilenet_v2_torchvision"])


def test_saved_file_is_keras_own(cases):
    reload = cases["tiny"]["reload"]
    assert "BatchNormalization" in reload["classes"] and "ZeroPadding2D" in reload["classes"]
    assert reload["routed"] == {"batch_norm": 0, "padding": 0, "convolutions": 0}
    assert reload["diff"] < 1e-5


@pytest.mark.slow
def test_zoo_backbones_same_results(tmp_path, mobilenet_pth):
    results = _run_child(tmp_path, mobilenet_pth, *ZOO)
    for name in ZOO:
        assert results[name]["counts"]["batch_norm"] > 0, name
        _assert_same_results(name, results[name])


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "expected"),
    [
        (12, 3, 1, (1, 1)),  # stride 1: symmetric
        (12, 3, 2, (0, 1)),  # even size, stride 2: the extra pixel after (torch pads (1, 1))
        (13, 3, 2, (1, 1)),
        (12, 1, 1, (0, 0)),
        (7, 5, 1, (2, 2)),
        (None, 3, 1, None),
    ],
)
def test_same_padding_is_tensorflows(size, kernel, stride, expected):
    conv = keras.layers.Conv2D(1, kernel, strides=stride)
    assert folding._same_padding(size, conv, 0) == expected


def test_other_backends_keep_keras_layers():
    assert keras.backend.backend() != "tensorflow"
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(3, 1, use_bias=False)(keras.layers.ZeroPadding2D(1)(inputs))
    model = keras.Model(inputs, keras.layers.BatchNormalization()(x))
    assert folding.fold_convolutions(model) == {"batch_norm": 0, "padding": 0, "pointwise": 0}
    assert not any(isinstance(layer.call, functools.partial) for layer in model.layers)


def test_environment_switch_turns_folding_off(cases):
    assert cases["tiny"]["switched_off"] == {"batch_norm": 0, "padding": 0, "pointwise": 0}
    off = cases["mobilenet_v2_torchvision"]["switched_off"]
    assert off == {"batch_norm": 0, "padding": 0, "convolutions": 0}
