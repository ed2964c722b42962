"""The state-dict engine: strict, all-or-nothing loading and its one mismatch error."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tlmed_keras.models.converters import huggingface, state_dict, torchvision
from tlmed_keras.models.converters.state_dict import StateDictConsumer, StateDictMismatchError


def _dense() -> keras.layers.Dense:
    layer = keras.layers.Dense(3, name="fc")
    layer.build((None, 2))
    return layer


def _checkpoint() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "fc.weight": rng.normal(size=(3, 2)).astype("float32"),  # torch layout [out, in]
        "fc.bias": rng.normal(size=(3,)).astype("float32"),
    }


def _load(layer, checkpoint) -> int:
    consumer = StateDictConsumer(checkpoint, "test checkpoint")
    consumer.assign("fc.weight", layer.kernel, state_dict.dense_kernel)
    consumer.assign("fc.bias", layer.bias)
    return consumer.finish()


def test_assigns_every_key_in_keras_layout():
    layer, checkpoint = _dense(), _checkpoint()
    assert _load(layer, checkpoint) == 2
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(layer.kernel), checkpoint["fc.weight"].T
    )
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.bias), checkpoint["fc.bias"])


def test_missing_key_names_key_variable_and_shape():
    checkpoint = _checkpoint()
    del checkpoint["fc.bias"]
    with pytest.raises(StateDictMismatchError, match=r"missing key 'fc\.bias' .*shape \(3,\)"):
        _load(_dense(), checkpoint)


def test_shape_mismatch_names_key_and_both_shapes():
    checkpoint = {**_checkpoint(), "fc.weight": np.zeros((4, 2), "float32")}
    with pytest.raises(
        StateDictMismatchError, match=r"shape mismatch for 'fc\.weight': checkpoint \(4, 2\)"
    ):
        _load(_dense(), checkpoint)


def test_unexpected_key_is_named_and_nothing_is_assigned():
    layer = _dense()
    before = keras.ops.convert_to_numpy(layer.kernel)
    checkpoint = {**_checkpoint(), "fc2.weight": np.zeros((5, 7), "float32")}
    with pytest.raises(
        StateDictMismatchError, match=r"unexpected key 'fc2\.weight' \(shape \(5, 7\)"
    ):
        _load(layer, checkpoint)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.kernel), before)


def test_ignored_keys_are_not_unexpected():
    checkpoint = {**_checkpoint(), "head.weight": np.zeros((1,), "float32")}
    consumer = StateDictConsumer(checkpoint, "test checkpoint")
    consumer.ignore([r"^head\."])
    layer = _dense()
    consumer.assign("fc.weight", layer.kernel, state_dict.dense_kernel)
    consumer.assign("fc.bias", layer.bias)
    assert consumer.finish() == 2


def test_layout_refuses_wrong_rank():
    with pytest.raises(StateDictMismatchError, match=r"Conv2d weight .* shape \(3, 2\)"):
        state_dict.conv_kernel(np.zeros((3, 2), "float32"))


def test_unknown_checkpoint_suffix_is_refused(tmp_path):
    path = tmp_path / "weights.npz"
    path.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"unknown suffix '\.npz'\. Accepted: \.safetensors"):
        state_dict.read_state_dict(path)


def test_old_error_names_are_the_one_error():
    assert torchvision.WeightMismatchError is StateDictMismatchError
    assert huggingface.StateDictMismatchError is StateDictMismatchError
    assert issubclass(StateDictMismatchError, ValueError)
