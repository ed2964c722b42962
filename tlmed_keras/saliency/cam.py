"""HiResCAM maps of classifiers built by the model zoo (``registry.build_classifier``).

``cam_model(classifier, name)`` cuts a classifier (backbone + head) at the backbone's feature
layer; ``class_maps(cam_models, images, classes)`` gives each image's map for its class,
averaged over the models of an ensemble. See the package docstring for the method.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Sequence
from types import ModuleType

import keras
import numpy as np

from tlmed_keras.models.features import token_grid
from tlmed_keras.saliency.gradients import scores_and_gradients

BATCH = 16  # images per gradient pass: a MobileNetV2 at 224 px stays under ~1 GB


@dataclasses.dataclass(frozen=True)
class CamModel:
    """A classifier cut at its feature layer.

    Attributes:
        features: preprocessed images ``[B, S, S, 3]`` -> feature map or tokens.
        logits: that map -> the classifier's logits ``[B, classes]``.
        prefix_tokens: None (a spatial map) or the leading non-patch tokens to drop.
    """

    features: Callable
    logits: Callable
    prefix_tokens: int | None = None


def _backbone_of(classifier: keras.Model) -> tuple[int, keras.Model]:
    nested = [(i, lyr) for i, lyr in enumerate(classifier.layers) if isinstance(lyr, keras.Model)]
    if len(nested) != 1:
        raise ValueError(
            f"{classifier.name} holds {len(nested)} nested models; saliency maps need the "
            "zoo's classifier: one backbone followed by its head (registry.build_classifier)."
        )
    return nested[0]


def cam_model(classifier: keras.Model, name: str, registry: ModuleType | None = None) -> CamModel:
    """``classifier`` (a run's model: backbone + dropout + dense head) cut at its feature layer.

    Args:
        classifier: a model from ``registry.build_classifier`` or a run's model.keras.
        name: its registry name (the run's ``--model``), which names the feature layer.
        registry: the model registry (default ``tlmed_keras.models``; tests pass their own).

    Raises:
        ValueError: an unknown model name, or a model that is not backbone + head.
    """
    registry = registry or importlib.import_module("tlmed_keras.models")
    index, backbone = _backbone_of(classifier)
    split = registry.feature_split(backbone, name)
    head = classifier.layers[index + 1 :]  # dropout (inactive here) and the dense logits

    def logits(maps):
        x = split.pool(maps)
        for layer in head:
            x = layer(x)
        return x

    return CamModel(split.features, logits, split.prefix_tokens)


def _class_scores(model: CamModel, classes: np.ndarray) -> Callable:
    index = keras.ops.convert_to_tensor(np.asarray(classes, dtype="int32")[:, None])

    def score(maps):
        return keras.ops.take_along_axis(model.logits(maps), index, axis=1)[:, 0]

    return score


def hires_cam(maps: np.ndarray, gradients: np.ndarray, prefix_tokens: int | None) -> np.ndarray:
    """``relu(sum over channels of gradient * activation)``: ``[B, h, w]``; tokens (after
    dropping ``prefix_tokens``) are laid back on their square patch grid, row by row."""
    cam = np.maximum(np.sum(gradients * maps, axis=-1), 0.0)
    if prefix_tokens is None:
        return cam
    side = token_grid(cam.shape[1], prefix_tokens)
    return cam[:, prefix_tokens:].reshape(len(cam), side, side)


def _to_unit(cams: np.ndarray) -> np.ndarray:
    """Each map divided by its maximum (an all-zero map stays zero)."""
    peak = cams.reshape(len(cams), -1).max(axis=1)
    return cams / np.where(peak > 0, peak, 1.0)[:, None, None]


def _resized(cams: np.ndarray, side: int) -> np.ndarray:
    resized = keras.ops.image.resize(cams[..., None], (side, side), interpolation="bilinear")
    return np.asarray(keras.ops.convert_to_numpy(resized), dtype=np.float32)[..., 0]


def model_maps(model: CamModel, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """One model's maps ``[B, S, S]`` in [0, 1] for ``classes [B]`` on preprocessed images."""
    images = np.asarray(images, dtype=np.float32)
    out = []
    for start in range(0, len(images), BATCH):
        batch = images[start : start + BATCH]
        maps = np.asarray(keras.ops.convert_to_numpy(model.features(batch)), dtype=np.float32)
        score = _class_scores(model, classes[start : start + BATCH])
        _, grads = scores_and_gradients(score, maps)
        cams = hires_cam(maps, grads, model.prefix_tokens)
        out.append(_to_unit(_resized(cams, images.shape[1])))
    return np.concatenate(out).clip(0.0, 1.0)


def class_maps(
    models: Sequence[CamModel], images: np.ndarray, classes: Sequence[int]
) -> np.ndarray:
    """Maps ``[B, S, S]`` in [0, 1] of ``classes`` on preprocessed ``images [B, S, S, 3]``:
    one model's, or an ensemble's mean of its members' (each scaled to a maximum of 1)."""
    if not models:
        raise ValueError("Saliency maps need at least one model.")
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    if len(classes) != len(images):
        raise ValueError(f"{len(images)} images but {len(classes)} classes to explain.")
    mean = np.mean([model_maps(model, images, classes) for model in models], axis=0)
    return _to_unit(mean) if len(models) > 1 else mean


def explained_class(probabilities: np.ndarray) -> np.ndarray:
    """The class each map explains: the most probable class (or label, multi-label)."""
    return np.argmax(np.asarray(probabilities), axis=-1)
