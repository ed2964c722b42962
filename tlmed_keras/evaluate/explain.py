"""``evaluate --explain=K``: the K most confident errors and the K most confident correct
images of the split, each with the heatmap of its predicted class (``tlmed_keras.saliency``).

Confidence is the top probability of the evaluation (the ensemble's mean and the TTA views
when asked); the heatmaps are of the plain models, without TTA views, for that same class.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tlmed_keras.evaluate.evaluation import Evaluation, predictions

MONTAGE_FILE = "saliency_montage.png"


def confident_picks(ev: Evaluation, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``k`` most confident errors and the ``k`` most confident correct
    images, most confident first. Confidence: the top probability. Multi-label: correct
    means every label right."""
    predicted = predictions(ev.scores, ev.task)
    right = predicted == ev.y_true
    correct = right.all(axis=1) if ev.multilabel else right
    confidence = ev.scores.max(axis=1)
    order = np.argsort(-confidence, kind="stable")
    return order[~correct[order]][:k], order[correct[order]][:k]


def _captions(ev: Evaluation, picks: np.ndarray) -> list[str]:
    from tlmed_keras.saliency.figures import caption

    names = ev.label_names
    out = []
    for i in picks:
        top = int(np.argmax(ev.scores[i]))
        true = None if ev.multilabel else names[int(ev.y_true[i])]
        out.append(caption(true, names[top], float(ev.scores[i, top])))
    return out


def write_montage(
    runs: Sequence[Any],
    images: np.ndarray,
    ev: Evaluation,
    k: int,
    out_dir: Path,
    registry: Any = None,
) -> Path:
    """Writes ``out_dir/saliency_montage.png`` for the runs (one, or an ensemble's members)
    evaluated as ``ev`` on the raw ``images`` of its split; ``registry`` names the feature
    layers (default ``tlmed_keras.models``).

    Raises:
        ValueError: ``k`` below 1, or a backend without gradients (torch).
    """
    from tlmed_keras.saliency import cam, figures

    if k < 1:
        raise ValueError(f"Bad --explain={k}: give the number of images per row, >= 1.")
    errors, correct = confident_picks(ev, k)
    picks = np.concatenate([errors, correct]).astype(int)
    models = [cam.cam_model(run.model, run.config.model, registry) for run in runs]
    maps = np.zeros((0, 1, 1), np.float32)
    if len(picks):
        preprocessed = np.asarray(runs[0].preprocess(images[picks]), dtype=np.float32)
        maps = cam.class_maps(models, preprocessed, cam.explained_class(ev.scores[picks]))
    items = [
        figures.Explained(images[i], heatmap, text)
        for i, heatmap, text in zip(picks, maps, _captions(ev, picks), strict=True)
    ]
    title = (
        f"{ev.dataset} {ev.split}: the {k} most confident errors and correct images; HiResCAM "
        f"of the predicted class ({runs[0].config.model}"
        + (f", mean of {len(runs)} runs)" if len(runs) > 1 else ")")
    )
    groups = [("errors", items[: len(errors)]), ("correct", items[len(errors) :])]
    return figures.montage(groups, out_dir / MONTAGE_FILE, title, columns=k)
