"""Calibration of predicted probabilities: ECE, Brier score, reliability bins, and temperature
scaling (Guo et al., 2017) fitted on the validation split.

- **Temperature scaling.** One positive scalar ``T`` per run (or per ensemble) divides the
  logits before the softmax (sigmoid for multi-label sets): ``p = softmax(z / T)``. ``T`` is
  the minimiser of the mean negative log-likelihood on the **validation** split, found by a
  bounded 1-D search over ``log T``. Multi-label sets get **one shared** temperature for all
  labels, not one per label: a rare label has a handful of positives in a validation split
  (too few to fit its own scale), and one scalar keeps the calibrated output a single
  documented transform. Dividing by ``T > 0`` keeps the argmax and every ranking (so ACC and
  AUC are unchanged) and keeps the multi-label 0.5 threshold (``z = 0``) where it was.
- **ECE** (expected calibration error): 15 equal-width bins of the confidence; the mean over
  predictions of ``|accuracy - confidence|`` per bin, weighted by the bin's share. Single-label
  tasks: confidence = top-class probability, correct = argmax is the truth (Guo et al.'s
  top-label ECE). Multi-label: every (image, label) is a binary decision at 0.5, confidence =
  ``max(p, 1 - p)``, correct = the decision equals the label.
- **Brier score**: single-label, the mean over images of ``sum_c (p_c - onehot_c)^2`` (Brier's
  original multi-class form, 0 best, 2 worst); multi-label, the mean over images and labels of
  ``(p - y)^2``.

Logits for an ensemble are the log of its mean probability (``runs.ensemble``), so the
same ``T`` applies to a run and to an ensemble alike. ``calibration.json`` in a run directory
holds one fitted temperature per test-time augmentation mode (the model it was fitted for).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
from scipy import optimize

from tlmed_keras import metrics as mm

FILE = "calibration.json"
BINS = 15
LOG_T_BOUNDS = (-5.0, 5.0)  # T in [0.0067, 148]: far outside anything a trained net needs
FITTED_ON = "val"


def logits_from_probabilities(probabilities, task: str) -> np.ndarray:
    """Logits that give back ``probabilities``: ``log p`` (softmax: equal to the model's logits
    up to a per-row shift, which softmax ignores) or ``log p - log(1 - p)`` (sigmoid)."""
    p = np.asarray(probabilities, dtype=np.float64)
    tiny = np.finfo(np.float64).tiny
    if task == mm.MULTILABEL:
        return np.log(np.maximum(p, tiny)) - np.log(np.maximum(1.0 - p, tiny))
    return np.log(np.maximum(p, tiny))


def scaled(logits, task: str, temperature: float) -> np.ndarray:
    """Probabilities of ``logits / temperature`` (float64)."""
    return mm.probabilities(np.asarray(logits, dtype=np.float64) / temperature, task)


def nll(logits, y_true, task: str, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``logits / temperature`` (multi-label: mean over
    images and labels of the binary cross-entropy)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    if task == mm.MULTILABEL:
        y = np.asarray(y_true, dtype=np.float64).reshape(z.shape)
        # log(1 + e^-|z|) form: exact and overflow-free for large |z|
        return float(np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))))
    y = np.asarray(y_true).reshape(-1).astype(np.int64)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-np.mean(log_p[np.arange(len(y)), y]))


def fit_temperature(logits, y_true, task: str) -> float:
    """The ``T > 0`` minimising ``nll(logits / T)`` (bounded search over ``log T``).

    Raises:
        ValueError: no rows, or logits that are not finite.
    """
    z = np.asarray(logits, dtype=np.float64)
    if len(z) == 0 or not np.all(np.isfinite(z)):
        raise ValueError(
            f"Temperature scaling needs finite logits of at least one image; got {z.shape} "
            f"with {int(np.sum(~np.isfinite(z)))} non-finite values."
        )
    found = optimize.minimize_scalar(
        lambda log_t: nll(z, y_true, task, math.exp(log_t)),
        bounds=LOG_T_BOUNDS,
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(math.exp(found.x))


def _decisions(y_true, probabilities, task: str) -> tuple[np.ndarray, np.ndarray]:
    """``(confidence, correct)`` of every decision (see the module docstring)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if task == mm.MULTILABEL:
        y = np.asarray(y_true).reshape(p.shape) > 0.5
        return np.maximum(p, 1.0 - p).ravel(), ((p > 0.5) == y).ravel()
    y = np.asarray(y_true).reshape(-1)
    return p.max(axis=1), p.argmax(axis=1) == y


def reliability_bins(y_true, probabilities, task: str, bins: int = BINS) -> dict[str, list]:
    """Per equal-width confidence bin: ``count``, mean ``confidence``, ``accuracy`` (None
    where a bin is empty), and the bins' ``edges``."""
    confidence, correct = _decisions(y_true, probabilities, task)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # bins are (lo, hi]; a confidence of exactly 0 joins the first
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    conf_sum = np.bincount(index, weights=confidence, minlength=bins)
    hit_sum = np.bincount(index, weights=correct.astype(float), minlength=bins)
    return {
        "edges": edges.tolist(),
        "count": count.tolist(),
        "confidence": [float(c / k) if k else None for c, k in zip(conf_sum, count, strict=True)],
        "accuracy": [float(h / k) if k else None for h, k in zip(hit_sum, count, strict=True)],
    }


def ece(y_true, probabilities, task: str, bins: int = BINS) -> float:
    """Expected calibration error over ``bins`` equal-width bins (see the module docstring)."""
    table = reliability_bins(y_true, probabilities, task, bins)
    total = sum(table["count"])
    gaps = [
        k * abs(a - c)
        for k, a, c in zip(table["count"], table["accuracy"], table["confidence"], strict=True)
        if k
    ]
    return float(sum(gaps) / total) if total else math.nan


def brier(y_true, probabilities, task: str) -> float:
    """Brier score (see the module docstring)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if task == mm.MULTILABEL:
        return float(np.mean((p - np.asarray(y_true).reshape(p.shape)) ** 2))
    onehot = np.eye(p.shape[1])[np.asarray(y_true).reshape(-1).astype(np.int64)]
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def scores(y_true, probabilities, task: str) -> dict[str, float]:
    """``{"ece", "brier"}`` of probabilities against the truth."""
    return {
        "ece": ece(y_true, probabilities, task),
        "brier": brier(y_true, probabilities, task),
    }


def fit_entry(logits, y_true, task: str, **facts) -> dict:
    """A ``calibration.json`` entry: the temperature fitted on ``logits`` (validation split)
    and the validation NLL / ECE before and after; ``facts`` are recorded beside them."""
    temperature = fit_temperature(logits, y_true, task)
    before, after = scaled(logits, task, 1.0), scaled(logits, task, temperature)
    return {
        "temperature": temperature,
        "fitted_on": FITTED_ON,
        "num_images": int(len(logits)),
        "shared_across_labels": task == mm.MULTILABEL,
        "val_nll_before": nll(logits, y_true, task),
        "val_nll_after": nll(logits, y_true, task, temperature),
        "val_ece_before": ece(y_true, before, task),
        "val_ece_after": ece(y_true, after, task),
        **facts,
    }


def read_entries(path: os.PathLike | str) -> dict[str, dict]:
    """``calibration.json``'s entries, keyed by test-time augmentation mode ({} if absent).

    Raises:
        ValueError: a file that is not the JSON this module writes.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text())["temperatures"]
        for entry in entries.values():
            if not float(entry["temperature"]) > 0:
                raise ValueError("temperature must be > 0")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(
            f"{path} is not a calibration file ({type(e).__name__}: {e}). Delete it: "
            "evaluate fits the temperature again on the validation split."
        ) from e
    return entries


def store_entry(path: os.PathLike | str, tta: str, entry: dict) -> None:
    """Adds (or replaces) the entry of ``tta`` in ``calibration.json`` at ``path``."""
    path = Path(path)
    entries = read_entries(path)
    entries[tta] = entry
    text = json.dumps({"temperatures": entries}, indent=2) + "\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # atomic: a reader never sees half a file


def fit_and_store(path, y_val, val_probabilities, task: str, tta: str) -> dict:
    """Fits the temperature on validation probabilities and stores it under ``tta``: what
    training calls at its end (the entry is returned)."""
    logits = logits_from_probabilities(val_probabilities, task)
    entry = fit_entry(logits, y_val, task, tta=tta)
    store_entry(path, tta, entry)
    return entry
