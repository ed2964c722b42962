"""Time of 1,000 bootstrap resamples of ACC + AUC: the vectorised statistic of
tlmed_keras.intervals against a per-resample loop over tlmed_keras.metrics (scikit-learn's
roc_auc_score), on the same synthetic 5-class set of 3,000 images, alternating rounds,
medians. Run from the repository root:

    python experiments/results/calibration/bench_intervals.py
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from tlmed_keras import intervals as iv
from tlmed_keras import metrics as mm

TASK, N, CLASSES, RESAMPLES, ROUNDS = "ordinal-regression", 3000, 5, 1000, 3


def looped(y, p, seed=0):
    """The straightforward version: one metrics call per resample (same stratified draws)."""
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == c) for c in range(CLASSES)]
    values = []
    for _ in range(RESAMPLES):
        rows = np.concatenate([rng.choice(g, len(g)) for g in groups])
        values.append(
            (mm.medmnist_acc(y[rows], p[rows], TASK), mm.medmnist_auc(y[rows], p[rows], TASK))
        )
    return np.percentile(np.array(values), [2.5, 97.5], axis=0)


def main() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, CLASSES, N)
    z = rng.normal(size=(N, CLASSES))
    z[np.arange(N), y] += 1.0
    p = mm.probabilities(z, TASK)
    times = {"vectorised": [], "looped": []}
    for _ in range(ROUNDS):
        for name, fn in (
            ("vectorised", lambda: iv.metric_intervals(y, p, TASK)),
            ("looped", lambda: looped(y, p)),
        ):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    for name, values in times.items():
        print(
            f"{name:>10}: median {statistics.median(values):.2f} s over {ROUNDS} rounds "
            f"{[round(v, 2) for v in values]}"
        )
    print("vectorised:", iv.metric_intervals(y, p, TASK))
    print("looped (ACC, AUC) 2.5 / 97.5 %:", looped(y, p).tolist())


if __name__ == "__main__":
    main()
