"""Task losses on logits: softmax cross-entropy (single-label) or sigmoid binary
cross-entropy (multi-label), with label smoothing, ordinal soft labels and optional class
weights."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
from keras import ops


def balanced_weights(labels: np.ndarray, num_classes: int, multilabel: bool) -> np.ndarray:
    """scikit-learn's "balanced" weights: ``n / (k * count)``.

    Single-label: one weight per class, shape [C] (k = C). Multi-label: per label, a weight
    for negatives and one for positives, shape [2, L] (k = 2, each label a binary problem).
    A class that never occurs gets weight 1.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if multilabel:
        pos = (labels > 0).sum(axis=0).astype(np.float64)
        counts = np.stack([n - pos, pos])
        k = 2
    else:
        counts = np.bincount(labels.reshape(-1).astype(np.int64), minlength=num_classes)
        counts = counts.astype(np.float64)
        k = num_classes
    with np.errstate(divide="ignore"):
        weights = np.where(counts > 0, n / (k * np.maximum(counts, 1)), 1.0)
    return weights.astype(np.float32)


def ordinal_kernel(num_classes: int, width: float) -> np.ndarray:
    """Soft ordinal labels (SORD, Diaz & Marathe, CVPR 2019): row ``y`` is the target of grade
    ``y``, ``exp(-(i - y)^2 / (2 width^2))`` over grades ``i``, normalised. Neighbouring grades
    get the most of the spread mass, far ones almost none, so the model is told that calling
    grade 3 a 2 is a smaller error than calling it a 0, which one-hot targets and uniform
    label smoothing do not say. ``width`` is in grades; 0 gives the identity (one-hot)."""
    if width <= 0:
        return np.eye(num_classes, dtype=np.float32)
    grades = np.arange(num_classes, dtype=np.float64)
    logits = -((grades[None, :] - grades[:, None]) ** 2) / (2.0 * width**2)
    kernel = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (kernel / kernel.sum(axis=1, keepdims=True)).astype(np.float32)


def make_loss(
    num_classes: int,
    multilabel: bool,
    label_smoothing: float = 0.0,
    class_weights: np.ndarray | None = None,
    ordinal_width: float = 0.0,
) -> Callable:
    """Returns ``loss(y_true, logits) -> [B]`` per-example losses (Keras averages them).

    ``y_true`` follows the pipeline: int class ids [B] (or [B, 1]) for single-label tasks,
    0/1 floats [B, L] for multi-label; with mixup/CutMix, float targets [B, C] (blends of
    one-hot rows) or [B, L] (blends of 0/1 rows). ``class_weights`` is
    ``balanced_weights``' output; a blended target is weighted by the blend of its classes'.
    ``ordinal_width`` > 0 (single-label only; the caller passes it for ordinal tasks) maps
    each target through ``ordinal_kernel`` before label smoothing; it is linear, so a mixup
    blend of two grades becomes the same blend of their soft labels.
    """
    weights = None if class_weights is None else np.asarray(class_weights, np.float32)
    if multilabel and ordinal_width > 0:
        raise ValueError("ordinal soft labels need a single-label task, not a multi-label one.")
    kernel = ordinal_kernel(num_classes, ordinal_width) if ordinal_width > 0 else None

    def softmax_cross_entropy(y_true, logits):
        logits = ops.cast(logits, "float32")
        target = one_hot_targets(y_true, num_classes)
        if kernel is not None:
            target = ops.matmul(target, ops.convert_to_tensor(kernel))
        if label_smoothing:
            target = target * (1.0 - label_smoothing) + label_smoothing / num_classes
        loss = ops.categorical_crossentropy(target, logits, from_logits=True)
        if weights is not None:
            loss = loss * ops.sum(one_hot_targets(y_true, num_classes) * weights, axis=-1)
        return loss

    def sigmoid_cross_entropy(y_true, logits):
        logits = ops.cast(logits, "float32")
        y = ops.cast(ops.reshape(y_true, ops.shape(logits)), "float32")
        target = y * (1.0 - label_smoothing) + 0.5 * label_smoothing if label_smoothing else y
        loss = ops.binary_crossentropy(target, logits, from_logits=True)
        if weights is not None:
            w = ops.convert_to_tensor(weights)
            loss = loss * (y * w[1] + (1.0 - y) * w[0])
        return ops.mean(loss, axis=-1)

    return sigmoid_cross_entropy if multilabel else softmax_cross_entropy


def is_soft(y_true, num_classes: int) -> bool:
    """Whether single-label ``y_true`` holds float targets ``[B, C]`` (mixup/CutMix), not
    class ids ``[B]`` / ``[B, 1]``. Decided from the static shape: C >= 2 for every
    single-label task, so the two forms never share a shape."""
    shape = tuple(y_true.shape)
    return len(shape) == 2 and shape[-1] == num_classes and num_classes > 1


def one_hot_targets(y_true, num_classes: int):
    """Single-label targets as float ``[B, C]``: class ids one-hot, soft targets as given."""
    if is_soft(y_true, num_classes):
        return ops.cast(y_true, "float32")
    return ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), num_classes)


def mean_loss(loss_fn: Callable, y_true: np.ndarray, logits: np.ndarray) -> float:
    """The mean of ``loss_fn`` over a whole split's predictions (validation loss)."""
    values = loss_fn(ops.convert_to_tensor(y_true), ops.convert_to_tensor(logits))
    return float(keras.ops.convert_to_numpy(ops.mean(values)))
