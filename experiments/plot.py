"""Bar chart of a sweep: test ACC and AUC per cell, mean with sd error bars, and the
published numbers as markers."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never opens a window
import matplotlib.pyplot as plt  # noqa: E402

from experiments import references as refs  # noqa: E402

_MARKERS = (
    ("study (Table 3)", refs.study, "*", "tab:red"),
    ("MedMNIST v2 ResNet-18 (28)", lambda model, data: refs.medmnist_v2(data), "_", "black"),
    ("MedMNIST+ best (28)", lambda model, data: refs.medmnist_plus(data), "x", "tab:purple"),
)


def bar_chart(cells: Sequence, path: os.PathLike | str) -> pathlib.Path:
    """Two panels (test ACC, test AUC); one bar per cell (error bar: sample sd over seeds);
    cells without a finished run say so instead of a bar."""
    path = pathlib.Path(path)
    labels = [c.cell for c in cells]
    width = max(6.0, 0.55 * len(cells) + 2.0)
    fig, axes = plt.subplots(2, 1, figsize=(width, 7.5), sharex=True, constrained_layout=True)
    x = list(range(len(cells)))
    for ax, key, title in zip(axes, ("acc", "auc"), ("test ACC", "test AUC"), strict=True):
        stats = [c.stat(f"test_{key}") for c in cells]
        means = [m if m is not None else 0.0 for m, _ in stats]
        errors = [sd or 0.0 for _, sd in stats]
        colors = ["tab:blue" if m is not None else "none" for m, _ in stats]
        ax.bar(x, means, yerr=errors, capsize=3, width=0.6, color=colors, edgecolor="tab:blue")
        for i, (m, _) in enumerate(stats):
            text = "no finished run" if m is None else f"n={len(cells[i].done())}"
            color = "black" if m is None else "white"
            ax.text(i, 0.02, text, rotation=90, ha="center", va="bottom", fontsize=8, color=color)
        for name, lookup, marker, color in _MARKERS:
            pts = [(i, getattr(lookup(c.model, c.data), key)) for i, c in enumerate(cells)]
            pts = [(i, v) for i, v in pts if v is not None]
            if pts:
                ax.scatter(
                    *zip(*pts, strict=True), marker=marker, s=90, color=color, label=name, zorder=3
                )
        ax.set_ylim(0, 1.05)
        ax.set_xlim(-0.8, len(cells) - 0.2)
        ax.set_ylabel(title)
        ax.grid(axis="y", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize=8)
    axes[-1].set_xticks(x, labels, rotation=60, ha="right", fontsize=8)
    axes[0].set_title("Sweep: mean ± sd over seeds")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
