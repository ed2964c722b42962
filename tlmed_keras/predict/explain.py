"""``predict --explain``: one PNG per image with the image as the model saw it, the HiResCAM
heatmap of its predicted class (``tlmed_keras.saliency``) and the two overlaid.

Needs the Keras model of a run directory (``--workdir``): an exported SavedModel keeps only
its serving signature, not the feature layer the heatmap is taken at.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from tlmed_keras.predict.output import ImageResult

SUFFIX = "_saliency.png"


def output_names(paths: Sequence[os.PathLike | str]) -> list[str]:
    """``<stem>_saliency.png`` per image; a stem seen before gets ``_2``, ``_3``... so that
    two ``scan.png`` of different folders do not overwrite each other."""
    seen: dict[str, int] = {}
    names = []
    for path in paths:
        stem = Path(path).stem
        seen[stem] = seen.get(stem, 0) + 1
        names.append(f"{stem}{SUFFIX}" if seen[stem] == 1 else f"{stem}_{seen[stem]}{SUFFIX}")
    return names


def _runs(predictors: Sequence) -> list:
    runs = [getattr(predictor, "run", None) for predictor in predictors]
    if any(run is None for run in runs):
        raise ValueError(
            "--explain needs the Keras model of a run directory: pass --workdir=RUN instead of "
            "--saved_model (an export keeps no feature layers to take heatmaps at)."
        )
    first = runs[0].preprocess.get_config()
    for run in runs[1:]:
        if run.preprocess.get_config() != first:
            raise ValueError(
                f"--explain averages maps of runs fed the same preprocessing; {run.workdir} "
                f"differs from {runs[0].workdir}. Pass runs of one recipe."
            )
    return runs


def write_explanations(
    predictors: Sequence,
    images: Sequence,
    results: Sequence[ImageResult],
    out_dir: os.PathLike | str,
    registry=None,
) -> list[Path]:
    """Writes one explanation PNG per image into ``out_dir`` (created) and returns the paths.

    Args:
        predictors: ``sources.RunPredictor`` objects (one run, or an ensemble's members).
        images: the decoded images (``images.read_image``) in the order of ``results``.
        results: ``classify.predict_images``'s results: each map is of the top class.
        out_dir: the folder for the PNGs (``<image stem>_saliency.png``).
        registry: the model registry naming feature layers (default ``tlmed_keras.models``).

    Raises:
        ValueError: a SavedModel predictor, or members fed other preprocessing.
    """
    import numpy as np

    from tlmed_keras.predict.classify import medmnist_batch
    from tlmed_keras.predict.sources import common_spec
    from tlmed_keras.saliency import cam, figures

    runs = _runs(predictors)
    batch = medmnist_batch(images, common_spec(predictors))
    models = [cam.cam_model(run.model, run.config.model, registry) for run in runs]
    preprocessed = np.asarray(runs[0].preprocess(batch), dtype=np.float32)
    classes = [result.top[0].class_id for result in results]
    maps = cam.class_maps(models, preprocessed, classes)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for result, pixels, heatmap, name in zip(
        results, batch, maps, output_names([r.path for r in results]), strict=True
    ):
        top = result.top[0]
        item = figures.Explained(pixels, heatmap, figures.caption(None, top.label, top.probability))
        title = f"{Path(result.path).name}: {top.label} {top.probability:.4f}"
        written.append(figures.explanation_figure(item, out / name, title=title))
    return written
