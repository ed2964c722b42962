"""torchvision's MobileNetV2 in Keras: genuine ImageNet weights convert exactly."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tlmed_keras import models
from tlmed_keras.data.preprocess import Preprocess
from tlmed_keras.models import mobilenet_v2_torchvision as tvm
from tlmed_keras.models.converters import torch_pickle
from tlmed_keras.models.converters.state_dict import StateDictMismatchError

# The shared README's probabilities from the original torchvision model.
REFERENCE = {
    "chelsea": {285: 0.7954, 282: 0.1203, 281: 0.0781},
    "coffee": {967: 0.9887, 925: 0.0046, 968: 0.0036},
}


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
    assert backbone.output_shape == (None, tvm.MOBILENET_V2_FEATURES)


@pytest.fixture(scope="module")
def state(mobilenet_pth):
    return torch_pickle.load_state_dict(mobilenet_pth)


@pytest.fixture(scope="module")
def small_net():
    return tvm.mobilenet_v2((32, 32, 3))


def test_missing_key_is_named(state, small_net):
    broken = {k: v for k, v in state.items() if k != "features.5.conv.1.1.running_var"}
    with pytest.raises(
        StateDictMismatchError, match=r"missing key 'features\.5\.conv\.1\.1\.running_var'"
    ):
        tvm.load_mobilenet_v2(small_net, broken)


def test_shape_mismatch_is_named_and_nothing_assigned(state, small_net):
    before = keras.ops.convert_to_numpy(small_net.get_layer("features_0_0").kernel)
    broken = dict(state)
    broken["features.3.conv.2.weight"] = np.zeros((24, 144, 3, 3), np.float32)
    with pytest.raises(StateDictMismatchError, match=r"shape mismatch for 'features\.3\.conv\.2"):
        tvm.load_mobilenet_v2(small_net, broken)
    after = keras.ops.convert_to_numpy(small_net.get_layer("features_0_0").kernel)
    np.testing.assert_array_equal(before, after)


def test_unexpected_key_is_named(state, small_net):
    broken = {**state, "features.19.0.weight": np.zeros((1,), np.float32)}
    with pytest.raises(StateDictMismatchError, match=r"unexpected key 'features\.19\.0\.weight'"):
        tvm.load_mobilenet_v2(small_net, broken)


def test_wrong_architecture_checkpoint_is_refused(tmp_path, small_net):
    with pytest.raises(StateDictMismatchError, match="features.0.0.weight"):
        tvm.load_mobilenet_v2(small_net, {"conv1.weight": np.zeros((64, 3, 7, 7), np.float32)})
