"""Registry contracts: names, specs, input-size and weights errors, trainable modes (JAX)."""

from __future__ import annotations

import urllib.error

import keras
import numpy as np
import pytest

from tlmed_keras import models
from tlmed_keras.data.preprocess import NORMALIZATIONS, Normalization
from tlmed_keras.models import registry
from tlmed_keras.models.spec import register

REQUIRED = (
    "vgg16",
    "vgg19",
    "resnet50",
    "resnet101",
    "resnet152",
    "inception_v3",
    "densenet121",
    "mobilenet_v2",
    "resnet18",
    "resnet34",
    "vit_b16",
    "mobilenet_v2_torchvision",
    "efficientnet_b0",
)
SMALL = "mobilenet_v2_torchvision"  # cheapest real backbone for behaviour checks


def test_required_names_are_registered():
    assert set(REQUIRED) <= set(models.model_names())
    assert len(set(models.model_names())) == len(models.model_names())


@pytest.mark.parametrize("name", REQUIRED)
def test_spec_is_coherent(name):
    spec = models.get_spec(name)
    assert spec.name == name
    assert 1 <= spec.min_input_size <= spec.input_size
    assert isinstance(spec.normalization, Normalization) or spec.normalization in NORMALIZATIONS
    assert spec.num_blocks >= 1 and spec.weights_source


def test_a_name_registered_twice_is_refused():
    with pytest.raises(ValueError, match="'vgg16' is registered twice"):
        register(models.get_spec("vgg16"))


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="Unknown model 'resnet9000'") as info:
        models.get_spec("resnet9000")
    for name in REQUIRED:
        assert name in str(info.value)


def test_too_small_input_is_refused_before_building(monkeypatch):
    def must_not_build(*args, **kwargs):
        raise AssertionError("built despite an invalid size")

    spec = models.get_spec("inception_v3")
    monkeypatch.setitem(registry._SPECS, "inception_v3", _with_build(spec, must_not_build))
    with pytest.raises(ValueError, match="at least 75x75"):
        models.build_classifier("inception_v3", 2, weights="none", image_size=64)


def _with_build(spec, build):
    import dataclasses

    return dataclasses.replace(spec, build=build)


def test_pretrained_vit_needs_its_native_size():
    with pytest.raises(ValueError, match=r"only work at image_size in \(224,\)"):
        models.build_classifier("vit_b16", 2, weights="imagenet", image_size=64)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": 2, "dropout": 1.0}, "dropout"),
        ({"num_classes": 2, "image_size": 31}, "at least 32x32"),
        ({"num_classes": 2, "image_size": 32.0}, "must be an int"),
    ],
)
def test_bad_classifier_arguments(kwargs, match):
    kwargs.setdefault("image_size", 32)
    with pytest.raises(ValueError, match=match):
        models.build_classifier(SMALL, weights="none", **kwargs)


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        models.build_classifier(SMALL, 2, weights=tmp_path / "nowhere.pth", image_size=32)


def test_pth_for_keras_layout_points_to_torchvision_twin(mobilenet_pth):
    with pytest.raises(ValueError, match="mobilenet_v2_torchvision"):
        models.build_classifier("mobilenet_v2", 2, weights=mobilenet_pth, image_size=32)


def test_unrecognised_weights_file(tmp_path):
    path = tmp_path / "weights.npz"
    path.write_bytes(b"x")
    with pytest.raises(ValueError, match="Unrecognised weights file weights.npz"):
        models.build_classifier(SMALL, 2, weights=path, image_size=32)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty Keras cache and a network that fails the way urllib fails offline."""
    from keras.src.backend import config
    from keras.src.utils import file_utils

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path / "keras_home"))
    monkeypatch.setattr(file_utils, "urlretrieve", no_network)
    return tmp_path / "keras_home" / "models"


def test_offline_imagenet_weights_error_names_source(offline):
    # keras.applications' case runs in test_zoo (TF backend: cheaper to build there).
    source = "download.pytorch.org/models/mobilenet_v2-b0353104.pth"
    with pytest.raises(models.WeightsUnavailableError) as info:
        models.build_classifier(SMALL, 2, weights="imagenet", image_size=32)
    message = str(info.value)
    assert source in message and str(offline) in message and "--weights=" in message


def test_offline_keras_hub_preset_error_names_preset(monkeypatch):
    import keras_hub

    def no_network(*args, **kwargs):
        raise ConnectionError("kaggle.com unreachable (test)")

    monkeypatch.setattr(keras_hub.models.ResNetBackbone, "from_preset", no_network)
    with pytest.raises(models.WeightsUnavailableError, match="resnet_18_imagenet"):
        models.build_backbone("resnet18", weights="imagenet", image_size=32)


@pytest.fixture(scope="module")
def small_classifier():
    keras.utils.set_random_seed(0)
    return models.build_classifier(SMALL, 3, weights="none", image_size=32, dropout=0.1)


def test_classifier_emits_logits_of_num_classes(small_classifier):
    model, backbone = small_classifier
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    logits = keras.ops.convert_to_numpy(model(x))
    assert logits.shape == (2, 3) and logits.dtype == np.float32
    assert model.get_layer(backbone.name) is backbone


def _weight_ids(layers) -> set[int]:
    return {id(v) for layer in layers for v in layer.weights}


def _batch_norms(backbone) -> list:
    return [
        layer
        for layer in backbone._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def test_frozen_backbone_gets_no_update(small_classifier):
    model, backbone = small_classifier
    models.set_trainable(backbone, SMALL, "frozen")
    assert backbone.trainable_weights == []
    before = [keras.ops.convert_to_numpy(v) for v in backbone.weights]
    head_before = keras.ops.convert_to_numpy(model.get_layer("logits").kernel)
    _train_one_step(model)
    after = [keras.ops.convert_to_numpy(v) for v in backbone.weights]
    assert all(np.array_equal(b, a) for b, a in zip(before, after, strict=True))
    head_after = keras.ops.convert_to_numpy(model.get_layer("logits").kernel)
    assert not np.array_equal(head_before, head_after), "the head should have trained"


def _train_one_step(model):
    model.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype("float32")
    model.train_on_batch(x, np.array([0, 2]))


@pytest.mark.parametrize("top", [1, 3])
def test_top_n_blocks_are_exactly_the_trainable_ones(small_classifier, top):
    _, backbone = small_classifier
    models.set_trainable(backbone, SMALL, top)
    blocks = models.get_spec(SMALL).blocks(backbone)
    top_layers = [layer for block in blocks[-top:] for layer in block]
    expected = _weight_ids(top_layers) - _weight_ids(_batch_norms(backbone))
    assert {id(v) for v in backbone.trainable_weights} == expected
    assert expected, "top blocks hold trainable weights"
    assert all(not layer.trainable for layer in _batch_norms(backbone))


def test_unfrozen_batch_norm_stays_in_inference_mode(small_classifier):
    model, backbone = small_classifier
    models.set_trainable(backbone, SMALL, "all")
    norms = _batch_norms(backbone)
    assert norms and all(not layer.trainable for layer in norms)
    non_bn = _weight_ids(backbone.layers) - _weight_ids(norms)
    assert {id(v) for v in backbone.trainable_weights} == non_bn
    x = np.random.default_rng(2).normal(size=(2, 32, 32, 3)).astype("float32")
    stats = keras.ops.convert_to_numpy(norms[0].moving_mean)
    # Dropout is the head's only random layer: compare the backbone features alone.
    train = keras.ops.convert_to_numpy(backbone(x, training=True))
    infer = keras.ops.convert_to_numpy(backbone(x, training=False))
    np.testing.assert_allclose(train, infer, rtol=1e-5, atol=1e-5)
    _train_one_step(model)
    np.testing.assert_array_equal(stats, keras.ops.convert_to_numpy(norms[0].moving_mean))


def test_from_scratch_can_train_batch_norm(small_classifier):
    _, backbone = small_classifier
    models.set_trainable(backbone, SMALL, "all", freeze_batch_norm=False)
    norms = _batch_norms(backbone)
    assert all(layer.trainable for layer in norms)
    assert {id(v) for v in backbone.trainable_weights} >= {id(n.gamma) for n in norms}


@pytest.mark.parametrize("mode", ["some", -1, 18, True])
def test_bad_trainable_mode(small_classifier, mode):
    with pytest.raises(ValueError, match="trainable mode"):
        models.set_trainable(small_classifier[1], SMALL, mode)


def test_string_digits_mode_and_zero_means_frozen(small_classifier):
    _, backbone = small_classifier
    models.set_trainable(backbone, SMALL, "0")
    assert backbone.trainable_weights == []
    models.set_trainable(backbone, SMALL, "2")
    assert backbone.trainable_weights
