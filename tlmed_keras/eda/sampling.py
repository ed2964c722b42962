"""Seeded, stratified subsets, so PCA and t-SNE stay quick on large splits (OCTMNIST: 97k)."""

from __future__ import annotations

import numpy as np


def _allocate(sizes: np.ndarray, n: int) -> np.ndarray:
    """Splits ``n`` draws (``n < sizes.sum()``) over groups in proportion to ``sizes``.

    Largest-remainder rounding; every non-empty group gets at least one draw while ``n``
    allows it, so rare classes still appear in the scatter plots.
    """
    share = sizes / sizes.sum() * n
    take = np.floor(share).astype(np.int64)
    by_size = np.argsort(-sizes, kind="stable")
    for g in by_size[: min(n, int((sizes > 0).sum()))]:
        take[g] = max(take[g], 1)
    by_remainder = np.argsort(-(share - np.floor(share)), kind="stable")
    while take.sum() < n:
        for g in by_remainder:
            if take.sum() < n and take[g] < sizes[g]:
                take[g] += 1
    while take.sum() > n:
        take[np.argmax(take)] -= 1
    return take


def stratified_sample(groups: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded sample of ``n`` items, stratified by ``groups``.

    Args:
        groups: int [N], the group of each item (e.g. ``ClassView.colour``).
        n: sample size; ``n >= N`` returns every index.
        seed: the same seed gives the same sample.

    Returns:
        int64 [min(n, N)] indices in increasing order.

    Raises:
        ValueError: ``n`` below 1.
    """
    groups = np.asarray(groups)
    if n < 1:
        raise ValueError(f"Sample size must be at least 1; got {n}.")
    if n >= len(groups):
        return np.arange(len(groups), dtype=np.int64)
    rng = np.random.default_rng(seed)
    ids, inverse = np.unique(groups, return_inverse=True)
    take = _allocate(np.bincount(inverse, minlength=len(ids)), n)
    chosen = [
        rng.choice(np.flatnonzero(inverse == g), size=int(k), replace=False)
        for g, k in enumerate(take)
        if k
    ]
    return np.sort(np.concatenate(chosen)).astype(np.int64)
