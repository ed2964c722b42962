"""Figures about the images and labels themselves: class counts, mean image per class,
pixel-intensity histograms per class (per channel for RGB) and a montage per class."""

from __future__ import annotations

import math
import pathlib

import numpy as np

from tlmed_keras.eda import style
from tlmed_keras.eda.classes import ClassView

CHANNEL_NAMES = ("red", "green", "blue")
MONTAGE_GRID = (6, 8)  # rows x cols of examples per class


def class_counts(view: ClassView, title: str, path: pathlib.Path) -> pathlib.Path:
    """Bar chart of ``view.counts`` with class names, counts on the bars and the
    imbalance ratio (largest / smallest) in the title."""
    fig, ax = style.new_figure()
    counts = view.counts
    palette = style.colours(len(counts), view.ordered)
    bars = ax.bar(range(len(counts)), counts, color=palette)
    for bar, name in zip(bars, view.names, strict=True):
        bar.set_label(name)
    ax.bar_label(bars, labels=[str(c) for c in counts], fontsize="small")
    ax.set_xticks(range(len(counts)), view.names, rotation=30, ha="right")
    ax.set_xlabel("class")
    ax.set_ylabel("number of images")
    ax.set_title(f"{title}\nimbalance ratio (largest / smallest) = {view.imbalance_ratio:.2f}")
    ax.legend(title="class", loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="small")
    fig.subplots_adjust(left=0.08, right=0.75, bottom=0.22, top=0.88)
    return style.save(fig, path)


def mean_images(images: np.ndarray, view: ClassView) -> np.ndarray:
    """Mean image of each member group: float [K, H, W(, C)] in 0..255 (NaN if empty)."""
    out = np.full((len(view.names), *images.shape[1:]), np.nan)
    for k, mask in enumerate(view.members):
        if mask.any():
            out[k] = images[mask].mean(axis=0, dtype=np.float64)
    return out


def _grid_shape(n: int) -> tuple[int, int]:
    cols = math.ceil(math.sqrt(n * 4 / 3))
    return math.ceil(n / cols), cols


def _show(ax, image: np.ndarray) -> None:
    if image.ndim == 2:
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(np.clip(image, 0, 255).astype(np.uint8))


def mean_image_figure(
    means: np.ndarray, view: ClassView, title: str, path: pathlib.Path
) -> pathlib.Path:
    """Grid of the mean image of each class; each panel is titled with the class name and
    its image count (these panel titles are the figure's legend)."""
    rows, cols = _grid_shape(len(means))
    fig, axes = style.new_grid(rows, cols)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, mean, name, count in zip(axes.flat, means, view.names, view.counts, strict=False):
        ax.set_axis_on()
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{name} (n={count})", fontsize="small")
        if count:
            _show(ax, mean)
    fig.suptitle(title)
    fig.supxlabel("x (pixels)")
    fig.supylabel("y (pixels)")
    return style.save(fig, path)


def intensity_histograms(images: np.ndarray, view: ClassView) -> np.ndarray:
    """Normalised 256-bin pixel histograms: float [K, C, 256], each row sums to 1
    (all zeros for an empty class). C is 1 for grayscale sets, 3 for RGB."""
    pixels = images.reshape(len(images), -1, 1 if images.ndim == 3 else images.shape[-1])
    out = np.zeros((len(view.names), pixels.shape[-1], 256))
    for k, mask in enumerate(view.members):
        for c in range(pixels.shape[-1]):
            counts = np.bincount(pixels[mask, :, c].ravel(), minlength=256)
            out[k, c] = counts / max(counts.sum(), 1)
    return out


def histogram_figure(
    hist: np.ndarray, view: ClassView, title: str, path: pathlib.Path
) -> pathlib.Path:
    """One panel per channel, one step line per class, pixel value on x, fraction on a log y."""
    channels = hist.shape[1]
    fig, axes = style.new_grid(channels, 1, sharex=True)
    palette = style.colours(len(view.names), view.ordered)
    for c, ax in enumerate(axes[:, 0]):
        for k, name in enumerate(view.names):
            ax.stairs(hist[k, c], np.arange(257), baseline=None, color=palette[k], label=name)
        # Log scale: the black background of many sets puts most pixels at 0 and would
        # flatten every other bin on a linear axis.
        ax.set_yscale("log")
        ax.set_ylabel("fraction of pixels (log)")
        if channels > 1:
            ax.set_title(f"{CHANNEL_NAMES[c]} channel", fontsize="small")
    axes[-1, 0].set_xlabel("pixel intensity (0-255)")
    axes[0, 0].legend(title="class", loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small")
    fig.suptitle(title)
    fig.subplots_adjust(left=0.1, right=0.75, hspace=0.35)
    return style.save(fig, path)


def montage_indices(view: ClassView, k: int, seed: int) -> np.ndarray:
    """Seeded choice of up to rows x cols image indices of class ``k``, sorted."""
    members = np.flatnonzero(view.members[k])
    n = min(len(members), MONTAGE_GRID[0] * MONTAGE_GRID[1])
    rng = np.random.default_rng([seed, k])
    return np.sort(rng.choice(members, size=n, replace=False))


def mosaic(images: np.ndarray, rows: int, cols: int, gap: int = 2) -> np.ndarray:
    """Tiles up to rows x cols images into one uint8 picture with white gaps between them.

    One ``imshow`` of the tiled picture draws 10x faster than one axes per example.
    """
    height, width = images.shape[1:3]
    shape = (rows * (height + gap) - gap, cols * (width + gap) - gap, *images.shape[3:])
    out = np.full(shape, 255, dtype=np.uint8)
    for n, image in enumerate(images[: rows * cols]):
        top, left = (n // cols) * (height + gap), (n % cols) * (width + gap)
        out[top : top + height, left : left + width] = image
    return out


def montage_figure(
    images: np.ndarray, indices: np.ndarray, title: str, path: pathlib.Path
) -> pathlib.Path:
    """A grid of real examples (the images at ``indices``), row by row."""
    rows, cols = MONTAGE_GRID
    fig, ax = style.new_figure()
    _show(ax, mosaic(images[indices], rows, cols))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(f"{len(indices)} random examples, {cols} per row")
    ax.set_title(title)
    return style.save(fig, path)
