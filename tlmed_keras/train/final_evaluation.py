"""The final evaluation and write-up of a run: the selected model, scored on val and test
once (``--tta``), saved as model.keras with metrics.json and DONE."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from tlmed_keras import calibration, intervals
from tlmed_keras import metrics as mm
from tlmed_keras.runs import rundir
from tlmed_keras.runs.ensemble import with_tta
from tlmed_keras.train.epochs import Job, Training
from tlmed_keras.train.resume import assign_arrays
from tlmed_keras.train.setup import Setup, build_classifier, predict_splits, task_labels


def final_model(t: Training):
    """The selected weights in a fresh, uncompiled classifier (no optimizer in model.keras);
    without a selected checkpoint, the last weights as validation saw them (EMA or raw)."""
    job, state = t.job, t.state
    arrays = job.run.load_arrays(state.best)["model"] if state.best else t.evaluated_arrays()
    fresh, _ = build_classifier(job.config, t.setup, job.registry, weights="none")
    assign_arrays(fresh.variables, arrays, "model")
    return fresh


def _evaluate_splits(
    model, s: Setup, names: Sequence[str]
) -> list[tuple[dict, np.ndarray, np.ndarray]]:
    """``(metrics, labels, scores)`` of each split in ``names``, predicted in one pass."""
    splits = [s.splits[name] for name in names]
    results = []
    for (_, labels), logits in zip(splits, predict_splits(model, splits, s), strict=True):
        y = task_labels(labels, s.info)
        scores = mm.probabilities(logits, s.info.task)
        results.append((mm.evaluate_scores(y, scores, s.info.task), y, scores))
    return results


def evaluate_and_write(
    job: Job, s: Setup, final, state: rundir.TrainState, resolved: dict, started: float
) -> dict[str, Any]:
    """Evaluates ``final`` on val and test, saves it as model.keras and writes metrics.json
    and DONE; returns the metrics. A cross-fitting run (--cv_folds) leaves the test split
    unread: its folds exist to choose settings, and the rules read test once per final run
    (metrics "test" is None, "per_class" is of its val fold)."""
    config, run = job.config, job.run
    start = time.perf_counter()
    evaluated = with_tta(final, s.info.task, config.tta)
    results = _evaluate_splits(evaluated, s, ["val"] if config.cv_folds else ["val", "test"])
    val, y_val, val_scores = results[0]
    test, y_test, scores = results[1] if len(results) > 1 else (None, y_val, val_scores)
    test_seconds = time.perf_counter() - start
    # The temperature for this run's --tta, fitted on val (calibration.json), and the test
    # split's bootstrap intervals.
    calibration.fit_and_store(
        run.path(calibration.FILE), y_val, val_scores, s.info.task, config.tta
    )
    test_ci = None if test is None else intervals.metric_intervals(y_test, scores, s.info.task)
    metrics = {
        "model": config.model,
        "data": config.data,
        "size": config.size,
        "seed": config.seed,
        "image_size": s.preprocess.image_size,
        "weights": config.weights,
        "select_on": config.select_on,
        "tta": config.tta,
        "val": _clean(val),
        "test": None if test is None else _clean(test),
        "test_ci95": None if test_ci is None else intervals.intervals_json(test_ci),
        "per_class": mm.per_class_report(y_test, scores, s.info.task, s.info.label_names),
        "per_class_split": "val" if test is None else "test",
        "best_epoch": state.best_epoch,
        "epochs_run": len(state.history),
        "stopped_early": list(state.stopped),
        "timings": {
            **{f"{k}_s": round(v, 3) for k, v in state.timings.items()},
            "test_s": round(test_seconds, 3),
            "this_session_s": round(time.perf_counter() - started, 3),
        },
        "backend": resolved["backend"],
        "devices": resolved["devices"],
    }
    run.save_model(final)
    run.write_metrics(metrics)
    run.mark_done()
    return metrics


def test_text(metrics: dict) -> str:
    """``test ACC 0.9000 AUC 0.9500 (TTA flip)``: the test numbers and the test-time
    augmentation they were scored with, or why a cross-fitting run has no test numbers."""
    if metrics["test"] is None:
        return "test not read (a cross-fitting fold: --cv_folds)"
    return f"test {_scores_text(metrics['test'])} (TTA {metrics.get('tta', 'none')})"


def _scores_text(scores: dict[str, float]) -> str:
    """``ACC 0.9000 AUC 0.9500``: a split's metrics.json entry (``metrics.evaluate_scores``)."""
    return " ".join(f"{name.upper()} {value:.4f}" for name, value in scores.items())


def _clean(d: dict) -> dict:
    return {k: (None if v is None or not math.isfinite(v) else float(v)) for k, v in d.items()}
