"""Mixup and CutMix of training batches, as pure functions of (seed, epoch, step).

Mixup (Zhang et al., 2018) blends two images, ``lam * a + (1 - lam) * b``; CutMix (Yun et
al., 2019) pastes a box of ``b`` into ``a``. Either way the target becomes the same blend of
the two one-hot (or multi-hot) labels, so the loss sees soft targets. Each image gets its own
``lam ~ Beta(alpha, alpha)`` and is paired with the image at the mirrored position of the
batch (``i`` with ``B - 1 - i``), as timm's element mode does. With both on, every batch
draws one of the two, with probability 1/2 each (timm's ``switch_prob``).

Like ``augment``, everything is stateless: the same batch of the same epoch is mixed the same
way in any run, any thread, before or after a resume. The mix runs after ``Preprocess``, on
the normalised images at the backbone's size; the normalisation is affine per channel, so
mixing normalised images equals normalising mixed raw ones (a CutMix box is also exact at the
output size, where its edges are whole pixels).
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

Mixer = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]


def check_alpha(name: str, alpha: float) -> None:
    """Raises ValueError unless ``alpha`` is 0 (off) or a positive finite number."""
    if not (alpha == 0 or 0 < alpha < float("inf")):
        raise ValueError(f"--{name}={alpha!r}: use 0 (off) or a positive Beta(alpha, alpha) alpha.")


def make_mixer(mixup: float = 0.0, cutmix: float = 0.0) -> Mixer | None:
    """``mix(images, targets, seed) -> (images, targets)``; None when both alphas are 0.

    Args:
        mixup: Beta alpha of mixup; 0 = off.
        cutmix: Beta alpha of CutMix; 0 = off.

    Raises:
        ValueError: a negative or non-finite alpha.
    """
    check_alpha("mixup", mixup)
    check_alpha("cutmix", cutmix)
    if not mixup and not cutmix:
        return None

    def mix(images: tf.Tensor, targets: tf.Tensor, seed: tf.Tensor):
        choice_seed, mix_seed = _seeds(seed, 2)
        if not cutmix:
            return mixup_batch(images, targets, mix_seed, mixup)
        if not mixup:
            return cutmix_batch(images, targets, mix_seed, cutmix)
        use_cutmix = tf.random.stateless_uniform([], choice_seed) < 0.5
        return tf.cond(
            use_cutmix,
            lambda: cutmix_batch(images, targets, mix_seed, cutmix),
            lambda: mixup_batch(images, targets, mix_seed, mixup),
        )

    return mix


def _seeds(seed: tf.Tensor, count: int) -> list[tf.Tensor]:
    split = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=count)
    return [split[i] for i in range(count)]


def beta(shape, seed: tf.Tensor, alpha: float) -> tf.Tensor:
    """Stateless Beta(alpha, alpha) samples, as the ratio of two Gamma(alpha) draws."""
    first, second = _seeds(seed, 2)
    a = tf.random.stateless_gamma(shape, first, alpha=alpha)
    b = tf.random.stateless_gamma(shape, second, alpha=alpha)
    # Both draws can underflow to 0 for a small alpha: that image then stays itself.
    return tf.where(a + b > 0, a / tf.maximum(a + b, 1e-30), tf.ones_like(a))


def _blend_targets(targets: tf.Tensor, lam: tf.Tensor) -> tf.Tensor:
    """``lam * own + (1 - lam) * partner's`` targets, ``lam`` per image ``[B]``."""
    targets = tf.cast(targets, tf.float32)
    lam = lam[:, None]
    return lam * targets + (1.0 - lam) * tf.reverse(targets, axis=[0])


def mixup_batch(images: tf.Tensor, targets: tf.Tensor, seed: tf.Tensor, alpha: float):
    """Mixup of ``images [B, H, W, C]`` and float ``targets [B, K]`` with the reversed batch."""
    lam = beta(tf.shape(images)[:1], seed, alpha)
    weight = tf.cast(lam, images.dtype)[:, None, None, None]
    mixed = weight * images + (1 - weight) * tf.reverse(images, axis=[0])
    return mixed, _blend_targets(targets, lam)


def cutmix_boxes(shape: tf.Tensor, seed: tf.Tensor, alpha: float) -> tf.Tensor:
    """Per-image paste masks ``[B, H, W]`` (1 = the partner's pixel): a box of side
    ``sqrt(1 - lam)`` times the image's, centred uniformly and clipped at the borders."""
    batch, height, width = shape[0], shape[1], shape[2]
    lam_seed, y_seed, x_seed = _seeds(seed, 3)
    ratio = tf.sqrt(1.0 - beta([batch], lam_seed, alpha))
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    cy = tf.random.stateless_uniform([batch], y_seed) * h
    cx = tf.random.stateless_uniform([batch], x_seed) * w
    top = tf.round(tf.clip_by_value(cy - ratio * h / 2, 0, h))
    bottom = tf.round(tf.clip_by_value(cy + ratio * h / 2, 0, h))
    left = tf.round(tf.clip_by_value(cx - ratio * w / 2, 0, w))
    right = tf.round(tf.clip_by_value(cx + ratio * w / 2, 0, w))
    rows = tf.range(h)[None, :, None] + 0.5  # pixel centres
    cols = tf.range(w)[None, None, :] + 0.5
    inside_rows = (rows > top[:, None, None]) & (rows < bottom[:, None, None])
    inside_cols = (cols > left[:, None, None]) & (cols < right[:, None, None])
    return tf.cast(inside_rows & inside_cols, tf.float32)


def cutmix_batch(images: tf.Tensor, targets: tf.Tensor, seed: tf.Tensor, alpha: float):
    """CutMix of ``images [B, H, W, C]`` and float ``targets [B, K]`` with the reversed batch;
    each target's share is the pasted box's actual area (after clipping), not the drawn
    ``lam``."""
    mask = cutmix_boxes(tf.shape(images), seed, alpha)
    pasted = tf.cast(mask[..., None], images.dtype)
    mixed = (1 - pasted) * images + pasted * tf.reverse(images, axis=[0])
    lam = 1.0 - tf.reduce_mean(mask, axis=[1, 2])
    return mixed, _blend_targets(targets, lam)
