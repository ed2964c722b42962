"""The torchvision key map: Keras layers named after torch modules, layouts by layer type."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tlmed_keras.models.converters import torchvision as tv


def _tiny_net() -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, use_bias=False, name="features_0_0")(inputs)
    x = keras.layers.BatchNormalization(name="features_0_1")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="classifier_1")(x))


def _torch_state(rng) -> dict[str, np.ndarray]:
    return {
        "features.0.0.weight": rng.normal(size=(4, 3, 3, 3)).astype("float32"),
        "features.0.1.weight": rng.normal(size=(4,)).astype("float32"),
        "features.0.1.bias": rng.normal(size=(4,)).astype("float32"),
        "features.0.1.running_mean": rng.normal(size=(4,)).astype("float32"),
        "features.0.1.running_var": rng.uniform(size=(4,)).astype("float32"),
        "features.0.1.num_batches_tracked": np.array(7),
        "classifier.1.weight": rng.normal(size=(2, 4)).astype("float32"),
        "classifier.1.bias": rng.normal(size=(2,)).astype("float32"),
    }


def test_module_paths_fill_their_layers():
    model, state = _tiny_net(), _torch_state(np.random.default_rng(0))
    assert tv.assign_state_dict(model, state) == 7  # num_batches_tracked is bookkeeping
    bn = model.get_layer("features_0_1")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(bn.moving_variance), state["features.0.1.running_var"]
    )
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.get_layer("classifier_1").kernel),
        state["classifier.1.weight"].T,
    )


def test_ignored_prefix_and_missing_key():
    model, state = _tiny_net(), _torch_state(np.random.default_rng(0))
    extra = {**state, "classifier.2.weight": np.zeros((1,), "float32")}
    tv.assign_state_dict(model, extra, ignore_prefixes=("classifier.2.",))
    del state["features.0.1.running_mean"]
    with pytest.raises(tv.WeightMismatchError, match=r"missing key 'features\.0\.1\.running_mean'"):
        tv.assign_state_dict(model, state)


def test_layer_without_torch_mapping_is_named():
    layer = keras.layers.Embedding(3, 2, name="tokens")
    layer.build((None,))
    with pytest.raises(tv.StateDictMismatchError, match=r"'tokens' \(Embedding\)"):
        tv.layer_plan(layer)


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
