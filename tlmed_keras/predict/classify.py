"""Top-k classes of image files from one predictor or the mean of several."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np

from tlmed_keras.predict.images import (
    ImageFileError,
    check_not_constant,
    crops_centre,
    read_image,
    to_medmnist,
)
from tlmed_keras.predict.output import ImageResult, top_k


@dataclasses.dataclass(frozen=True)
class Prepared:
    """Images ready for a model: their paths, decoded images and model pixels (``[B, size,
    size, C]`` uint8), and one line for each image refused on the way."""

    paths: list[str]
    images: list
    pixels: np.ndarray
    refusals: list[str]


def _describe(image) -> str:
    return f"{image.width}x{image.height} {image.mode}"


def _stored_form(spec) -> tuple[int, int, bool]:
    """``(size, channels, centre crop?)``: how MedMNIST stored the images of ``spec``'s set."""
    from tlmed_keras.data import catalog

    size, _, channels = spec.image_shape
    return size, channels, crops_centre(catalog.get_info(spec.dataset, spec.size).description)


def medmnist_batch(images, spec) -> np.ndarray:
    """Decoded images as the dataset stores its pictures: uint8 ``[B, size, size, C]``."""
    size, channels, crop = _stored_form(spec)
    return np.stack([to_medmnist(image, size, channels, crop) for image in images])


def prepare(spec, pairs: Sequence[tuple[str, object]]) -> Prepared:
    """Brings ``(path, image)`` pairs to ``spec``'s pixels as MedMNIST made its images;
    an image that is one flat value after that is refused (one line in ``refusals``)."""
    size, channels, crop = _stored_form(spec)
    kept, refusals = [], []
    for path, image in pairs:
        pixels = to_medmnist(image, size, channels, crop)
        try:
            check_not_constant(pixels, path)
        except ImageFileError as e:
            refusals.append(str(e))
        else:
            kept.append((path, image, pixels))
    empty = np.zeros((0, size, size, channels), np.uint8)
    return Prepared(
        paths=[path for path, _, _ in kept],
        images=[image for _, image, _ in kept],
        pixels=np.stack([pixels for _, _, pixels in kept]) if kept else empty,
        refusals=refusals,
    )


def classify(predictors: Sequence, prepared: Prepared, k: int = 3) -> list[ImageResult]:
    """Top-``k`` classes of each prepared image, from the mean probabilities of
    ``predictors`` (``sources.mean_probabilities``)."""
    from tlmed_keras.predict.sources import common_spec, mean_probabilities

    if not prepared.paths:
        return []
    spec = common_spec(predictors)
    probabilities = mean_probabilities(predictors, prepared.pixels)
    return [
        ImageResult(path, _describe(image), top_k(row, spec, k))
        for path, image, row in zip(prepared.paths, prepared.images, probabilities, strict=True)
    ]


def predict_images(
    predictors: Sequence, paths: Sequence[os.PathLike | str], k: int = 3, images=None
) -> list[ImageResult]:
    """Top-``k`` classes of each image file, from the mean probabilities of ``predictors``.

    Args:
        predictors: ``sources.RunPredictor`` / ``SavedModelPredictor`` objects (one, or an
            ensemble of one dataset and size).
        paths: image files (see ``images.ACCEPTED``).
        k: classes listed per image.
        images: the decoded images of ``paths`` when the caller read them already.

    Raises:
        ImageFileError: a missing, undecodable or flat image (the first one met).
        ValueError: predictors that disagree on dataset or size.
    """
    from tlmed_keras.predict.sources import common_spec

    spec = common_spec(predictors)
    images = images if images is not None else [read_image(p) for p in paths]
    prepared = prepare(spec, [(os.fspath(p), i) for p, i in zip(paths, images, strict=True)])
    if prepared.refusals:
        raise ImageFileError(prepared.refusals[0])
    return classify(predictors, prepared, k)
