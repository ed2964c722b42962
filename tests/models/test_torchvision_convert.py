"""torchvision -> Keras conversion: genuine MobileNetV2 weights and layout transforms."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tlmed_keras import models
from tlmed_keras.data.preprocess import Preprocess
from tlmed_keras.models.converters import torch_pickle
from tlmed_keras.models.converters import torchvision as tv

# The shared README's probabilities from the original torchvision model.
REFERENCE = {
    "chelsea": {285: 0.7954, 282: 0.1203, 281: 0.0781},
    "coffee": {967: 0.9887, 925: 0.0046, 968: 0.0036},
}


@pytest.fixture(scope="module")
def imagenet_mobilenet(mobilenet_pth):
    return models.build_imagenet_classifier("mobilenet_v2_torchvision", weights=mobilenet_pth)


@pytest.mark.parametrize("photo_name", sorted(REFERENCE))
def test_converted_mobilenet_matches_torchvision(imagenet_mobilenet, photo, photo_name):
    x = Preprocess(224, models.get_spec("mobilenet_v2_torchvision").normalization)(
        photo(photo_name)
    )
    probs = keras.ops.convert_to_numpy(imagenet_mobilenet(x))[0]
    reference = REFERENCE[photo_name]
    assert int(np.argmax(probs)) == next(iter(reference))
    for index, want in reference.items():
        assert probs[index] == pytest.approx(want, abs=0.01), index


def test_headless_backbone_takes_the_same_file(mobilenet_pth, imagenet_mobilenet):
    backbone = models.build_backbone("mobilenet_v2_torchvision", weights=mobilenet_pth)
    kernel = backbone.get_layer("features_0_0").kernel
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(kernel),
        keras.ops.convert_to_numpy(imagenet_mobilenet.get_layer("features_0_0").kernel),
    )
    assert backbone.output_shape == (None, tv.MOBILENET_V2_FEATURES)


@pytest.fixture(scope="module")
def state(mobilenet_pth):
    return torch_pickle.load_state_dict(mobilenet_pth)


@pytest.fixture(scope="module")
def small_net():
    return tv.mobilenet_v2((32, 32, 3))


def test_missing_key_is_named(state, small_net):
    broken = {k: v for k, v in state.items() if k != "features.5.conv.1.1.running_var"}
    with pytest.raises(
        tv.WeightMismatchError, match=r"lacks 'features\.5\.conv\.1\.1\.running_var'"
    ):
        tv.load_mobilenet_v2(small_net, broken)


def test_shape_mismatch_is_named_and_nothing_assigned(state, small_net):
    before = keras.ops.convert_to_numpy(small_net.get_layer("features_0_0").kernel)
    broken = dict(state)
    broken["features.3.conv.2.weight"] = np.zeros((24, 144, 3, 3), np.float32)
    with pytest.raises(tv.WeightMismatchError, match=r"Shape mismatch at 'features\.3\.conv\.2"):
        tv.load_mobilenet_v2(small_net, broken)
    after = keras.ops.convert_to_numpy(small_net.get_layer("features_0_0").kernel)
    np.testing.assert_array_equal(before, after)


def test_unexpected_key_is_named(state, small_net):
    broken = {**state, "features.19.0.weight": np.zeros((1,), np.float32)}
    with pytest.raises(tv.WeightMismatchError, match=r"'features\.19\.0\.weight' matches no"):
        tv.load_mobilenet_v2(small_net, broken)


def test_wrong_architecture_checkpoint_is_refused(tmp_path, small_net):
    with pytest.raises(tv.WeightMismatchError, match="features.0.0.weight"):
        tv.load_mobilenet_v2(small_net, {"conv1.weight": np.zeros((64, 3, 7, 7), np.float32)})


@pytest.mark.torch
def test_layout_transforms_match_torch_ops():
    torch = pytest.importorskip("torch", reason="layout parity against torch.nn.functional")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 8, 8, 4)).astype(np.float32)
    x_torch = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())

    conv_w = rng.normal(size=(5, 4, 3, 3)).astype(np.float32)
    conv = keras.layers.Conv2D(5, 3, use_bias=False)
    conv.build(x.shape)
    conv.kernel.assign(tv.conv_kernel(conv_w))
    want = torch.nn.functional.conv2d(x_torch, torch.from_numpy(conv_w)).numpy()
    got = keras.ops.convert_to_numpy(conv(x)).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, want, atol=1e-4)

    dw_w = rng.normal(size=(8, 1, 3, 3)).astype(np.float32)  # 4 channels x multiplier 2
    depthwise = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False)
    depthwise.build(x.shape)
    depthwise.kernel.assign(tv.depthwise_kernel(dw_w, multiplier=2))
    want = torch.nn.functional.conv2d(x_torch, torch.from_numpy(dw_w), groups=4).numpy()
    got = keras.ops.convert_to_numpy(depthwise(x)).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, want, atol=1e-4)

    dense_w = rng.normal(size=(3, 4)).astype(np.float32)
    flat = x[0, 0]
    want = torch.nn.functional.linear(torch.from_numpy(flat), torch.from_numpy(dense_w)).numpy()
    np.testing.assert_allclose(flat @ tv.dense_kernel(dense_w), want, atol=1e-5)


def test_cli_classify_prints_top5(monkeypatch, imagenet_mobilenet, shared_dir):
    from tlmed_keras.models import __main__ as cli

    def prebuilt(name, weights):  # the module's converted model: no second build
        return imagenet_mobilenet

    monkeypatch.setattr(models, "build_imagenet_classifier", prebuilt)
    lines = cli.classify(
        "mobilenet_v2_torchvision", "unused", str(shared_dir / "data/photos/coffee_224.png")
    )
    assert len(lines) == 5
    index, name, prob = lines[0].split()
    assert (index, name) == ("967", "espresso") and float(prob) == pytest.approx(0.9887, abs=0.01)
    probs = [float(line.split()[-1]) for line in lines]
    assert probs == sorted(probs, reverse=True)


def test_cli_list_names_every_model():
    from tlmed_keras.models import __main__ as cli

    lines = cli.list_models()
    assert len(lines) == len(models.model_names()) + 1
    row = next(line for line in lines if line.startswith("inception_v3 "))
    assert row.split()[1:3] == ["299", "75"] and "keras.applications.InceptionV3" in row


@pytest.mark.slow
def test_cli_end_to_end(mobilenet_pth, shared_dir):
    import subprocess
    import sys

    from tests.models.conftest import REPO

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tlmed_keras.models",
            "--model=mobilenet_v2_torchvision",
            f"--weights={mobilenet_pth}",
            f"--classify={shared_dir / 'data/photos/chelsea_224.png'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    first = done.stdout.splitlines()[0].split()
    assert first[:2] == ["285", "Egyptian_cat"]
    assert float(first[2]) == pytest.approx(0.7954, abs=0.01)
