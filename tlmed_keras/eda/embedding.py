"""PCA and t-SNE projections of the images, and their 2D / 3D scatter plots.

Both run on a seeded, stratified sample (``sampling.stratified_sample``): PCA on up to
``pca_samples`` images (randomized SVD, so OCTMNIST's 97k x 784 takes seconds and memory
stays at ``pca_samples x pixels x 4`` bytes), t-SNE on up to ``tsne_samples``. t-SNE first
reduces the pixels to ``TSNE_PCA_DIMS`` principal components, the usual way to make it fast
and less noisy.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from tlmed_keras.eda import style
from tlmed_keras.eda.classes import ClassView

PCA_COMPONENTS = 10  # reported in the index; the scatter plots use the first 2 or 3
TSNE_PCA_DIMS = 50


@dataclasses.dataclass(frozen=True)
class Projection:
    """Points of a projection and what they stand for.

    Attributes:
        method: "PCA" or "t-SNE".
        points: float [n, 3], the sample's coordinates (3 components; 2D plots use 2).
        indices: int [n], rows of the split the points come from.
        explained_variance_ratio: PCA only: ratio of each of the first components.
    """

    method: str
    points: np.ndarray
    indices: np.ndarray
    explained_variance_ratio: np.ndarray | None = None


def flatten(images: np.ndarray) -> np.ndarray:
    """uint8 images [N, H, W(, C)] as float32 rows [N, H*W*C] in [0, 1]."""
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def pca(images: np.ndarray, indices: np.ndarray, seed: int) -> Projection:
    """Fits PCA on ``images[indices]`` and projects those images.

    Returns:
        A Projection with the first 3 components as points and the explained variance
        ratio of the first ``PCA_COMPONENTS`` (fewer when the sample is smaller).
    """
    x = flatten(images[indices])
    k = min(PCA_COMPONENTS, *x.shape)
    model = PCA(n_components=k, svd_solver="randomized", random_state=seed)
    points = _pad3(model.fit_transform(x))
    return Projection("PCA", points, indices, model.explained_variance_ratio_)


def tsne(
    images: np.ndarray,
    indices: np.ndarray,
    dims: int,
    seed: int,
    perplexity: float = 30.0,
    iterations: int = 1000,
) -> Projection:
    """t-SNE of ``images[indices]`` into ``dims`` (2 or 3) dimensions.

    Args:
        images: uint8 images of the whole split.
        indices: rows of ``images`` to embed (the sample).
        dims: 2 or 3.
        seed: seeds the PCA pre-reduction and t-SNE.
        perplexity: t-SNE perplexity; must be below the sample size.
        iterations: t-SNE optimisation steps (scikit-learn's ``max_iter``, at least 250;
            the first 250 are early exaggeration, so use 500 or more for a readable plot).

    Raises:
        ValueError: ``dims`` not 2 or 3, or a sample too small for ``perplexity``.
    """
    if dims not in (2, 3):
        raise ValueError(f"t-SNE dims must be 2 or 3; got {dims}.")
    x = flatten(images[indices])
    if len(x) <= perplexity:
        raise ValueError(
            f"t-SNE needs more samples ({len(x)}) than its perplexity ({perplexity}); "
            "raise --tsne_samples or lower --tsne_perplexity."
        )
    k = min(TSNE_PCA_DIMS, *x.shape)
    reduced = PCA(n_components=k, svd_solver="randomized", random_state=seed).fit_transform(x)
    model = TSNE(
        n_components=dims,
        perplexity=perplexity,
        max_iter=iterations,
        init="pca",
        random_state=seed,
    )
    return Projection("t-SNE", _pad3(model.fit_transform(reduced)), indices)


def _pad3(points: np.ndarray) -> np.ndarray:
    # A 1-pixel or 2-image sample yields fewer than 3 components; plots still want 3 columns.
    points = points[:, :3]
    out = np.zeros((len(points), 3), dtype=np.float64)
    out[:, : points.shape[1]] = points
    return out


def _axis_labels(projection: Projection, dims: int) -> list[str]:
    if projection.method != "PCA":
        return [f"t-SNE {i + 1}" for i in range(dims)]
    ratio = projection.explained_variance_ratio
    return [
        f"PC{i + 1} ({ratio[i]:.1%} of variance)" if i < len(ratio) else f"PC{i + 1}"
        for i in range(dims)
    ]


def scatter(
    projection: Projection, view: ClassView, dims: int, title: str, path: pathlib.Path
) -> pathlib.Path:
    """Scatter plot of ``projection`` in 2 or 3 dimensions, coloured by ``view.colour``."""
    fig, ax = style.new_figure(**({"projection": "3d"} if dims == 3 else {}))
    groups = view.colour[projection.indices]
    size = 20 if len(groups) < 1000 else 6
    for g, (name, colour) in enumerate(
        zip(view.colour_names, style.colours(len(view.colour_names), view.ordered), strict=True)
    ):
        pts = projection.points[groups == g, :dims]
        ax.scatter(*pts.T, s=size, color=colour, alpha=0.7, label=f"{name} ({len(pts)})")
    labels = _axis_labels(projection, dims)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    if dims == 3:
        ax.set_zlabel(labels[2])
    fig.suptitle(title)
    # A figure legend, right of the axes: a 3D axes' z label would run into an axes legend.
    fig.legend(
        title="class (points)",
        loc="center right",
        bbox_to_anchor=(0.99, 0.5),
        fontsize="small",
        markerscale=1.5,
    )
    fig.subplots_adjust(left=0.08, right=0.74, top=0.88)
    return style.save(fig, path)
