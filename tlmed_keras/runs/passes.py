"""Whole splits through a model in batches of one shape.

Every batch of a prediction pass has one shape (a split is padded to whole batches by
repeating its last image, and the padding is cut off again), so a model's predict function
is traced once per pass: on a CPU a trace of a MobileNetV2 costs seconds, more than
predicting a small split. ``predict_splits`` puts several splits (the final val and test)
through one pass for the same reason.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np


def balanced_batch(n: int, eval_batch: int, devices: int = 1) -> int:
    """The batch size that predicts ``n`` images in as few batches as ``eval_batch`` allows,
    with the least padding: e.g. 524 images at most 256 a batch -> 3 batches of 175 (1 padded
    image) rather than 3 of 256 (244 padded images computed for nothing). A multiple of
    ``devices`` (``eval_batch`` is one)."""
    batches = max(1, -(-n // eval_batch))
    per_batch = -(-n // batches)
    return -(-per_batch // devices) * devices


def shared_batch(counts: Sequence[int], eval_batch: int, devices: int = 1) -> int:
    """One batch size for predicting several splits in one pass (``predict_splits``): of
    the splits' own ``balanced_batch`` sizes, the cheapest, counting each padded image and
    each batch (its fixed cost) as one image (ties: the larger). E.g. val 78 and test 156
    at most 256 a batch -> 78 (1 + 2 batches, no padding); 1 and 10,000 -> 250, not 1."""
    candidates = sorted({balanced_batch(n, eval_batch, devices) for n in counts}, reverse=True)
    return min(candidates, key=lambda b: sum((-n) % b + -(-n // b) for n in counts))


def predict_splits(
    model,
    splits: Sequence[tuple[Any, Any]],
    *,
    info: Any,
    preprocess: Any,
    eval_batch: int,
    devices: int = 1,
) -> list[np.ndarray]:
    """Logits of each ``(images, labels)`` split, in order, from ONE ``model.predict`` call:
    each split is padded to whole batches of one shared size (repeating its last image), so
    every batch has one shape and the model's predict function is traced once (a trace of
    a MobileNetV2 costs seconds on a CPU; a second split would cost a second trace). The
    padding is cut off. Padding is by row index (in memory) or by record (streamed): a
    split itself is never copied.

    Args:
        model: a Keras model taking preprocessed images (a classifier, its TTA or ensemble
            wrapper).
        splits: ``(images, labels)`` pairs: uint8 arrays as stored, or a streamed split
            (``.shard_set``, ``.split``).
        info: the dataset's catalog entry; preprocess: the run's ``Preprocess`` layer.
        eval_batch: the largest batch; devices: the batch is a multiple of it.
    """
    from tlmed_keras.data import pipeline

    counts = [len(images) for images, _ in splits]
    batch = shared_batch(counts, eval_batch, devices)
    padded = [n + (-n) % batch for n in counts]  # each split to whole batches
    options = pipeline.PipelineOptions(batch_size=batch, preprocess=preprocess, training=False)
    datasets = []
    for (images, labels), n, size in zip(splits, counts, padded, strict=True):
        if isinstance(images, np.ndarray):
            rows = np.concatenate([np.arange(n), np.full(size - n, n - 1)])
            ds = pipeline.make_dataset(images, labels, info=info, options=options, rows=rows)
        else:
            ds = pipeline.make_stream_dataset(
                images.shard_set, images.split, options=options, pad_to=size
            )
        datasets.append(ds.map(lambda x, y: x))
    joined = functools.reduce(lambda a, b: a.concatenate(b), datasets)
    logits = np.asarray(model.predict(joined, verbose=0), dtype=np.float32)
    starts = np.cumsum([0, *padded[:-1]])
    return [logits[start : start + n] for start, n in zip(starts, counts, strict=True)]


def run_logits(
    run: Any, images: np.ndarray, labels: np.ndarray, batch_size: int = 256, model: Any = None
):
    """``(y_true, logits)`` of ``run``'s model (or ``model``) on raw ``images``, fed exactly
    like training's evaluation (the tf.data pipeline with the run's ``Preprocess``, batches
    of one shape: ``passes.predict_splits``)."""
    from tlmed_keras.data import pipeline

    (logits,) = predict_splits(
        model or run.model,
        [(images, labels)],
        info=run.info,
        preprocess=run.preprocess,
        eval_batch=batch_size,
    )
    return pipeline.task_labels(labels, run.info), logits
