"""One look for every EDA figure: fixed size and dpi (so the PNG size is known), colours."""

from __future__ import annotations

import pathlib

import matplotlib

# No display on servers and CI: force the file-only backend before pyplot is imported.
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

FIGSIZE = (10.0, 7.5)  # inches
DPI = 100
PIXEL_SIZE = (int(FIGSIZE[0] * DPI), int(FIGSIZE[1] * DPI))  # (width, height) of every PNG


def new_figure(**subplot_kw) -> tuple[Figure, object]:
    """A figure of the fixed size with one axes (``subplot_kw`` e.g. projection="3d")."""
    fig = plt.figure(figsize=FIGSIZE, dpi=DPI)
    return fig, fig.add_subplot(1, 1, 1, **subplot_kw)


def new_grid(rows: int, cols: int, **kwargs) -> tuple[Figure, np.ndarray]:
    """A figure of the fixed size with a rows x cols grid of axes (always a 2D array)."""
    fig, axes = plt.subplots(rows, cols, figsize=FIGSIZE, dpi=DPI, squeeze=False, **kwargs)
    return fig, axes


def colours(n: int, ordered: bool = False) -> list:
    """``n`` colours: for ``ordered`` groups (ordinal grades) steps of a sequential map, light
    to dark, so the order shows; else distinguishable ones (tab10 up to 10, tab20 up to 20,
    then a colormap)."""
    if ordered:
        # viridis without its palest yellow end, which vanishes on white.
        return [plt.get_cmap("viridis")(x) for x in np.linspace(0.85, 0.0, n)]
    if n <= 10:
        return list(plt.get_cmap("tab10").colors[:n])
    if n <= 20:
        return list(plt.get_cmap("tab20").colors[:n])
    return [plt.get_cmap("turbo")(x) for x in np.linspace(0, 1, n)]


def save(fig: Figure, path: pathlib.Path) -> pathlib.Path:
    """Writes ``fig`` as a PNG of exactly ``PIXEL_SIZE`` and closes it.

    No ``bbox_inches="tight"``: it would change the pixel size from figure to figure.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    plt.close(fig)
    return path
