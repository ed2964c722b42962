"""Top-k classes of image files from one predictor or the mean of several."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from tlmed_keras.predict.images import read_image, to_medmnist
from tlmed_keras.predict.output import ImageResult, top_k


def _describe(image) -> str:
    return f"{image.width}x{image.height} {image.mode}"


def medmnist_batch(images, spec) -> np.ndarray:
    """Decoded images as the dataset stores its pictures: uint8 ``[B, size, size, C]``."""
    from tlmed_keras.data import catalog
    from tlmed_keras.predict.images import crops_centre

    size, _, channels = spec.image_shape
    crop = crops_centre(catalog.get_info(spec.dataset, spec.size).description)
    return np.stack([to_medmnist(image, size, channels, crop) for image in images])


def predict_images(
    predictors: Sequence, paths: Sequence[os.PathLike | str], k: int = 3, images=None
) -> list[ImageResult]:
    """Top-``k`` classes of each image file, from the mean probabilities of ``predictors``.

    Args:
        predictors: ``sources.RunPredictor`` / ``SavedModelPredictor`` objects (one, or an
            ensemble of one dataset and size).
        paths: image files (PNG, JPEG, any size and mode).
        k: classes listed per image.
        images: the decoded images of ``paths`` when the caller read them already.

    Raises:
        ImageFileError: a missing or undecodable file.
        ValueError: predictors that disagree on dataset or size.
    """
    from tlmed_keras.predict.sources import common_spec, mean_probabilities

    spec = common_spec(predictors)
    images = images if images is not None else [read_image(p) for p in paths]
    batch = medmnist_batch(images, spec)
    probabilities = mean_probabilities(predictors, batch)
    return [
        ImageResult(os.fspath(path), _describe(image), top_k(row, spec, k))
        for path, image, row in zip(paths, images, probabilities, strict=True)
    ]
