"""Saliency maps: they point at what decides the class, add up to the score, work for every
backbone of the zoo on TensorFlow and JAX alike, and reach predict and evaluate as PNGs."""

from __future__ import annotations

import json
import pathlib

import keras
import numpy as np
import pytest

from tests.conftest import run_python
from tests.saliency import corner_task as ct
from tlmed_keras import models
from tlmed_keras.saliency import cam
from tlmed_keras.saliency.gradients import scores_and_gradients

PROBE = pathlib.Path(__file__).with_name("zoo_saliency_probe.py")


def _corner_images(seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([ct.corner_image(rng, corner) for corner in ct.CORNERS])


@pytest.fixture(scope="module")
def trained_cnn():
    keras.utils.set_random_seed(0)
    images, labels = ct.corner_task(512, seed=0)
    model, registry = ct.tiny_cnn()
    assert ct.train(model, images, labels, epochs=6, lr=3e-3) > 0.95
    return model, registry


def _masses(model, registry) -> list[float]:
    maps = cam.class_maps([cam.cam_model(model, "tiny", registry)], _corner_images(), [1] * 4)
    assert maps.shape == (4, ct.SIDE, ct.SIDE) and maps.min() >= 0 and maps.max() == 1
    return [ct.quadrant_mass(m, corner) for m, corner in zip(maps, ct.CORNERS, strict=True)]


def test_cnn_map_lies_on_the_square_and_moves_with_it(trained_cnn):
    # Four images, the square in each corner in turn: a map blind to it would put a quarter
    # of its mass in each quadrant.
    masses = _masses(*trained_cnn)
    assert min(masses) > 0.6, masses


@pytest.mark.slow  # trains a two-layer ViT: ~35 s of CPU on 2 cores
def test_vit_map_lies_on_the_square_and_moves_with_it():
    keras.utils.set_random_seed(0)
    images, labels = ct.corner_task(256, seed=0)
    model, registry = ct.tiny_vit()
    assert ct.train(model, images, labels, epochs=8, lr=2e-3) > 0.95
    masses = _masses(model, registry)
    assert np.mean(masses) > 0.6 and min(masses) > 0.4, masses


def test_map_adds_up_to_the_class_logit_behind_average_pooling():
    # HiResCAM's claim for GAP + linear heads: sum(grad * A) over the map is the logit less
    # the bias, exactly (no relu here, so negative evidence counts too).
    keras.utils.set_random_seed(1)
    model, registry = ct.tiny_cnn()
    cut = cam.cam_model(model, "tiny", registry)
    images = _corner_images()
    maps = np.asarray(cut.features(images))
    classes = np.array([0, 1, 1, 0])
    score = cam._class_scores(cut, classes)
    scores, grads = scores_and_gradients(score, maps)
    bias = np.asarray(model.get_layer("logits").bias)[classes]
    np.testing.assert_allclose((grads * maps).sum(axis=(1, 2, 3)), scores - bias, atol=1e-4)
    logits = np.asarray(model(images))
    np.testing.assert_allclose(scores, logits[np.arange(4), classes], atol=1e-5)


def test_tokens_go_back_to_their_patch_grid_row_by_row():
    tokens = np.zeros((1, 1 + 9, 2), np.float32)
    tokens[0, 1 + 5] = 1.0  # patch 5 of a 3x3 grid: row 1, column 2
    tokens[0, 0] = 5.0  # the class token has no place on the image
    cams = cam.hires_cam(tokens, np.ones_like(tokens), prefix_tokens=1)
    assert cams.shape == (1, 3, 3) and cams[0, 1, 2] == 2.0 and cams.sum() == 2.0
    with pytest.raises(ValueError, match="not a square grid"):
        cam.hires_cam(tokens[:, :-1], tokens[:, :-1], prefix_tokens=1)


def test_ensemble_map_is_the_mean_of_its_members_scaled_maps(trained_cnn):
    keras.utils.set_random_seed(2)
    other, registry = ct.tiny_cnn()
    members = [cam.cam_model(m, "tiny", registry) for m in (trained_cnn[0], other)]
    images, classes = _corner_images(), [1, 0, 1, 0]
    each = [cam.class_maps([member], images, classes) for member in members]
    mean = (each[0] + each[1]) / 2
    expected = mean / mean.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(cam.class_maps(members, images, classes), expected, atol=1e-6)


@pytest.fixture(scope="module")
def tensorflow_maps(tmp_path_factory, trained_cnn) -> dict:
    tmp = tmp_path_factory.mktemp("saliency_tf")
    model_path, images_path = tmp / "cnn.keras", tmp / "images.npy"
    trained_cnn[0].save(model_path)
    np.save(images_path, _corner_images())
    out = tmp / "maps.json"
    done = run_python(
        str(PROBE), str(out), str(model_path), str(images_path),
        KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3", timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow  # one TensorFlow child builds all 17 backbones (~1-2 min on 2 cores)
@pytest.mark.parametrize("name", models.model_names())
def test_every_backbone_gives_a_map_of_the_input_size_on_tensorflow(tensorflow_maps, name):
    result = tensorflow_maps[name]
    assert "exception" not in result, result.get("exception")
    size = result["size"]
    assert result["shape"] == [2, size, size] and result["finite"] and result["min"] >= 0
    # Each map is scaled to a peak of 1; an untrained model may have no positive evidence
    # for its class anywhere (all zero), but not at both random images.
    assert set(result["peaks"]) <= {0.0, 1.0} and max(result["peaks"]) == 1.0, result["peaks"]


@pytest.mark.slow  # the same TensorFlow child
def test_tensorflow_and_jax_give_the_same_map(tensorflow_maps, trained_cnn):
    assert tensorflow_maps["backend"] == "tensorflow" and keras.backend.backend() == "jax"
    jax_maps = cam.class_maps(
        [cam.cam_model(trained_cnn[0], "tiny", trained_cnn[1])], _corner_images(), [1] * 4
    )
    np.testing.assert_allclose(np.array(tensorflow_maps["saved"]), jax_maps, atol=1e-4)


@pytest.mark.parametrize("name", ["mobilenet_v2_torchvision", "squeezenet1_1"])
def test_zoo_cnn_maps_on_jax(name):
    # The JAX path on real zoo graphs (TensorFlow: the child above covers every backbone).
    model, _ = models.build_classifier(name, 3, weights="none", image_size=32)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    maps = cam.class_maps([cam.cam_model(model, name)], x, [0, 2])
    assert maps.shape == (2, 32, 32) and np.isfinite(maps).all() and maps.max() == 1.0
