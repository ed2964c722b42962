"""Training augmentation as a pure function of (seed, epoch, step): stateless random ops.

Keras' random layers keep their own random state; mapped over batches with
``num_parallel_calls`` (as the pipeline does), which batch draws which numbers depends on
thread timing, so two runs with one ``--seed`` differed (issue #17, defect 5). Here every
batch gets its own seed pair ``(seed, step)``, where ``seed`` is already the epoch's seed
(the trainer's ``seed * SEED_STRIDE + epoch``): the same batch is augmented the same way in
any run, in any thread, before or after a resume.

Inputs are raw pixels: float32 ``[B, H, W, C]`` in 0-255, at the stored resolution.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import tensorflow as tf

AUGMENTATIONS = ("basic", "flip")
ROTATION_DEGREES = 10.0
ZOOM = 0.1
CONTRAST = 0.1

Augmenter = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def check_name(name: str | None) -> None:
    """Raises ValueError for a name that is not an augmentation (None means none)."""
    if name is not None and name not in AUGMENTATIONS:
        raise ValueError(
            f"Unknown augmentation {name!r}. Accepted: {', '.join(AUGMENTATIONS)} or None."
        )


def make_augmenter(name: str | None, mirror: bool = True) -> Augmenter | None:
    """``augment(images, seed) -> images`` for preset ``name``; None for no augmentation.

    "basic": horizontal flip, rotation up to +-10 degrees, zoom +-10 % (reflect padding),
    contrast +-10 %: mild changes a scanner or a patient's position could produce.
    "flip": horizontal flip only. ``seed`` is an int32/int64 ``[2]`` tensor; equal seeds give
    equal outputs. ``mirror=False`` (labels that name a body side: a mirror image would carry
    the wrong label) drops the flip: "flip" becomes None, "basic" keeps the rest.

    Raises:
        ValueError: an unknown name.
    """
    check_name(name)
    if name is None:
        return None
    if not mirror:
        return None if name == "flip" else basic_without_flip
    return flip if name == "flip" else basic


def _seeds(seed: tf.Tensor, count: int) -> list[tf.Tensor]:
    """``count`` independent stateless seeds derived from one."""
    split = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=count)
    return [split[i] for i in range(count)]


def flip(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Each image mirrored left-right with probability 1/2."""
    return tf.image.stateless_random_flip_left_right(images, seed=seed)


def _rotate_zoom_transforms(batch: tf.Tensor, height, width, seed: tf.Tensor) -> tf.Tensor:
    """``[B, 8]`` projective transforms (output -> input pixel) of a rotation about the
    centre by up to +-ROTATION_DEGREES and a zoom by up to +-ZOOM, one per image."""
    angle_seed, zoom_seed = _seeds(seed, 2)
    limit = ROTATION_DEGREES * math.pi / 180
    angle = tf.random.stateless_uniform([batch], angle_seed, -limit, limit)
    scale = tf.random.stateless_uniform([batch], zoom_seed, 1 - ZOOM, 1 + ZOOM)
    cy, cx = (height - 1) / 2, (width - 1) / 2
    cos, sin = tf.cos(angle) * scale, tf.sin(angle) * scale
    # input = centre + scale * R(angle) @ (output - centre)
    x_offset = cx - (cos * cx - sin * cy)
    y_offset = cy - (sin * cx + cos * cy)
    zeros = tf.zeros_like(angle)
    return tf.stack([cos, -sin, x_offset, sin, cos, y_offset, zeros, zeros], axis=1)


def _rotate_zoom(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    shape = tf.shape(images)
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    transforms = _rotate_zoom_transforms(shape[0], height, width, seed)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=shape[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )


def _contrast(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Per-image contrast factor in [1 - CONTRAST, 1 + CONTRAST] about the image's mean,
    clipped to the 0-255 pixel range."""
    factor = tf.random.stateless_uniform(
        [tf.shape(images)[0], 1, 1, 1], seed, 1 - CONTRAST, 1 + CONTRAST
    )
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    return tf.clip_by_value((images - mean) * factor + mean, 0.0, 255.0)


def _rotate_zoom_contrast(images: tf.Tensor, geometry_seed, contrast_seed) -> tf.Tensor:
    return _contrast(_rotate_zoom(images, geometry_seed), contrast_seed)


def basic(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Flip, rotation, zoom and contrast, each from its own seed."""
    flip_seed, geometry_seed, contrast_seed = _seeds(seed, 3)
    return _rotate_zoom_contrast(flip(images, flip_seed), geometry_seed, contrast_seed)


def basic_without_flip(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """``basic`` less the flip (the same seeds for the rest)."""
    _, geometry_seed, contrast_seed = _seeds(seed, 3)
    return _rotate_zoom_contrast(images, geometry_seed, contrast_seed)
