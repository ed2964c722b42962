"""Confusion matrix, one-vs-rest ROC and reliability figures (matplotlib, Agg: no display)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402

from tlmed_keras.evaluate.evaluation import Evaluation  # noqa: E402

LABEL_CHARS = 28


def _label(name: str) -> str:
    return name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 3] + "..."


def confusion_figure(ev: Evaluation, path: str | Path) -> Path:
    """Writes the confusion matrix (counts, coloured by row-normalised recall) as a PNG.

    Multi-label tasks get one 2x2 matrix (negative / positive) per label.
    """
    path = Path(path)
    if ev.multilabel:
        fig = _multilabel_confusion(ev)
    else:
        n = len(ev.label_names)
        side = max(4.0, 0.6 * n + 2.5)
        fig, ax = plt.subplots(figsize=(side + 1, side))
        counts = ev.confusion
        rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        for i in range(n):
            for j in range(n):
                color = "white" if rates[i, j] > 0.5 else "black"
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", color=color)
        names = [_label(x) for x in ev.label_names]
        ax.set_xticks(range(n), names, rotation=45, ha="right")
        ax.set_yticks(range(n), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
        ax.set_title(f"{ev.dataset} {ev.split}: confusion matrix (ACC {ev.acc:.3f})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _multilabel_confusion(ev: Evaluation):
    n = len(ev.label_names)
    cols = min(n, 5)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.axis("off")
            continue
        m = ev.confusion[k]
        ax.imshow(m / max(m.sum(), 1), cmap="Blues", vmin=0, vmax=1)
        for i in range(2):
            for j in range(2):
                ax.text(j, i, str(m[i, j]), ha="center", va="center")
        ax.set_xticks([0, 1], ["pred 0", "pred 1"])
        ax.set_yticks([0, 1], ["true 0", "true 1"])
        ax.set_title(_label(ev.label_names[k]), fontsize=9)
    fig.suptitle(f"{ev.dataset} {ev.split}: per-label confusion (ACC {ev.acc:.3f})")
    return fig


def roc_figure(ev: Evaluation, path: str | Path) -> Path:
    """Writes one-vs-rest ROC curves (per label for multi-label tasks) with per-class AUC."""
    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 6))
    for i, name in enumerate(ev.label_names):
        positive = ev.y_true[:, i] if ev.multilabel else (ev.y_true == i)
        positive = np.asarray(positive).astype(int)
        if positive.min() == positive.max():  # ROC undefined without both kinds
            ax.plot([], [], label=f"{_label(name)} (undefined: one class only)")
            continue
        fpr, tpr, _ = roc_curve(positive, ev.scores[:, i])
        auc = roc_auc_score(positive, ev.scores[:, i])
        ax.plot(fpr, tpr, label=f"{_label(name)} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    kind = "per-label" if ev.multilabel else "one-vs-rest"
    ax.set_title(f"{ev.dataset} {ev.split}: {kind} ROC (MedMNIST AUC {ev.auc:.3f})")
    ax.legend(loc="lower right", fontsize=8 if len(ev.label_names) <= 8 else 6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def reliability_figure(ev: Evaluation, path: str | Path) -> Path:
    """Writes the reliability diagram (accuracy against confidence in the 15 equal-width bins
    of the ECE) of the raw and the temperature-scaled probabilities, with each bin's share of
    the decisions below, as a PNG. Needs ``ev.calibration``."""
    from tlmed_keras import calibration as cal

    path = Path(path)
    c = ev.calibration
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(5.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    width = 1.0 / cal.BINS
    for probs, name, ece, shift in (
        (c.raw, "raw", c.before["ece"], -width / 4),
        (c.calibrated, f"T = {c.temperature:.2f}", c.after["ece"], width / 4),
    ):
        table = cal.reliability_bins(ev.y_true, probs, ev.task)
        centres = np.array(table["edges"][:-1]) + width / 2 + shift
        acc = np.array([np.nan if a is None else a for a in table["accuracy"]])
        top.bar(centres, acc, width=width / 2, alpha=0.75, label=f"{name} (ECE {ece:.3f})")
        share = np.array(table["count"]) / max(sum(table["count"]), 1)
        bottom.bar(centres, share, width=width / 2, alpha=0.75)
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect")
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy in bin")
    kind = "per-label decision" if ev.multilabel else "top-class"
    top.set_title(f"{ev.dataset} {ev.split}: reliability ({kind} confidence)")
    top.legend(loc="upper left", fontsize=8)
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("share")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
