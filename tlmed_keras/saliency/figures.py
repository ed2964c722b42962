"""Saliency figures: one image explained (image, heatmap, overlay) and a montage of many.

Images are shown as the model received them: the dataset's stored pixels (uint8, grey or
RGB), resized bilinearly to the backbone's input side as the run's ``Preprocess`` resizes
them, with the heatmap (``jet``, 0 to 1) at that same side.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

CMAP = "jet"
ALPHA = 0.45  # heatmap opacity over the image
LABEL_CHARS = 16  # of a class name under a montage cell


@dataclasses.dataclass(frozen=True)
class Explained:
    """One image and its map, with the words under it."""

    image: np.ndarray  # uint8 [h, w] or [h, w, C] as stored
    heatmap: np.ndarray  # [S, S] in [0, 1]
    caption: str


def display_image(image: np.ndarray, side: int) -> np.ndarray:
    """``image`` (uint8, grey or RGB) resized bilinearly to ``side``: RGB ``[side, side, 3]``."""
    pixels = np.asarray(image, dtype=np.uint8)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    resized = Image.fromarray(pixels).resize((side, side), Image.Resampling.BILINEAR)
    return np.asarray(resized.convert("RGB"))


def _short(text: str, chars: int = LABEL_CHARS) -> str:
    return text if len(text) <= chars else text[: chars - 3] + "..."


def _overlay(ax, item: Explained) -> None:
    ax.imshow(display_image(item.image, item.heatmap.shape[0]))
    ax.imshow(item.heatmap, cmap=CMAP, vmin=0.0, vmax=1.0, alpha=ALPHA)


def explanation_figure(item: Explained, path: str | Path, title: str = "") -> Path:
    """Writes the image, its heatmap and the two overlaid, side by side, as a PNG."""
    path = Path(path)
    fig, axes = plt.subplots(1, 3, figsize=(9.0, 3.4))
    side = item.heatmap.shape[0]
    axes[0].imshow(display_image(item.image, side))
    axes[0].set_title("image (as the model saw it)", fontsize=9)
    shown = axes[1].imshow(item.heatmap, cmap=CMAP, vmin=0.0, vmax=1.0)
    axes[1].set_title("HiResCAM heatmap", fontsize=9)
    fig.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.04)
    _overlay(axes[2], item)
    axes[2].set_title("overlay", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title or item.caption, fontsize=10)
    return _save(fig, path, dpi=90, colours=None)


def montage(
    groups: Sequence[tuple[str, Sequence[Explained]]], path: str | Path, title: str, columns: int
) -> Path:
    """Writes groups of explained images as a PNG: per group, a row of images and a row of
    overlays beneath them, ``columns`` wide (empty cells where a group has fewer).

    Args:
        groups: ``(row label, items)`` pairs, e.g. the most confident errors, then the most
            confident correct images.
        path: where the PNG goes.
        title: the figure's title.
        columns: cells per row (K).
    """
    path = Path(path)
    columns = max(columns, 1)
    rows = 2 * len(groups)
    fig, axes = plt.subplots(
        rows, columns, figsize=(1.45 * columns + 0.6, 1.55 * rows + 0.5), squeeze=False
    )
    for g, (label, items) in enumerate(groups):
        for c in range(columns):
            top, bottom = axes[2 * g, c], axes[2 * g + 1, c]
            for ax in (top, bottom):
                ax.set_xticks([])
                ax.set_yticks([])
            if c >= len(items):
                top.set_axis_off()
                bottom.set_axis_off()
                continue
            item = items[c]
            top.imshow(display_image(item.image, item.heatmap.shape[0]))
            top.set_title(item.caption, fontsize=6)
            _overlay(bottom, item)
        axes[2 * g, 0].set_ylabel(f"{label}\nimage", fontsize=7)
        axes[2 * g + 1, 0].set_ylabel(f"{label}\nheatmap", fontsize=7)
        if not items:
            axes[2 * g, 0].set_axis_on()
            axes[2 * g, 0].text(0.5, 0.5, "none", ha="center", va="center", fontsize=8)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path, dpi=80, colours=256)


def _save(fig, path: Path, dpi: int, colours: int | None) -> Path:
    """Saves ``fig`` as a PNG; with ``colours``, a palette PNG of that many colours (a
    montage of 16 photos: a third of the full-colour file, at the cost of some banding)."""
    fig.tight_layout()
    if colours is None:
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
        return path
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png")
    plt.close(fig)
    buffer.seek(0)
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(colors=colours).save(path, optimize=True)
    return path


def caption(true: str | None, predicted: str, probability: float) -> str:
    """``"true A / pred B 0.97"`` (without the true label when it is unknown)."""
    head = "" if true is None else f"true {_short(true, LABEL_CHARS)}\n"
    return f"{head}pred {_short(predicted, LABEL_CHARS)} {probability:.2f}"
