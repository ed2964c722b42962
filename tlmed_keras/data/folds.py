"""Cross-fitting: train + val re-split into K folds, one of them the validation split.

Why: MedMNIST's small sets validate on very few images (BreastMNIST 78, RetinaMNIST 120), so
one image moves val ACC by about a point and two recipes cannot be told apart there. Run a
recipe once per fold and every train + val image is scored once, by a model that did not train
on it (624 and 1,200 images on those two sets); each run still selects its checkpoint on its
own fold. The test split is never part of it.

The assignment is stratified by label row (each class, or each label combination of a
multi-label set, spread evenly over the folds) and fixed by ``FOLD_SEED``: every run, seed
and recipe sees the same folds, so comparisons between recipes are paired fold by fold.
"""

from __future__ import annotations

import numpy as np

from tlmed_keras.data.arrays import Splits

FOLD_SEED = 0


def check_fold(folds: int, fold: int) -> None:
    """Raises ValueError unless ``folds`` is 0 (off) or >= 2 and ``0 <= fold < folds``."""
    if folds == 0:
        if fold != 0:
            raise ValueError(
                f"Bad --cv_fold={fold!r}: it picks one of --cv_folds folds, and --cv_folds is 0 "
                "(the official val split). Pass --cv_folds=K (K >= 2) too, or drop --cv_fold."
            )
        return
    if folds < 2:
        raise ValueError(f"Bad --cv_folds={folds!r}: use 0 (official split) or K >= 2 folds.")
    if not 0 <= fold < folds:
        raise ValueError(f"Bad --cv_fold={fold!r}: with --cv_folds={folds} use 0 to {folds - 1}.")


def fold_ids(labels: np.ndarray, folds: int, seed: int = FOLD_SEED) -> np.ndarray:
    """The fold (0 to ``folds`` - 1) of every row of ``labels`` ([N] or [N, L]), stratified.

    Rows with the same label row are shuffled and dealt round-robin; each group starts dealing
    where the previous one stopped, so fold sizes differ by at most one image overall and a
    group smaller than ``folds`` does not always land in fold 0.
    """
    rows = np.asarray(labels).reshape(len(labels), -1)
    _, group = np.unique(rows, axis=0, return_inverse=True)
    group = group.reshape(-1)
    rng = np.random.default_rng(seed)
    ids = np.empty(len(rows), np.int64)
    dealt = 0
    for g in range(group.max(initial=-1) + 1):
        members = rng.permutation(np.flatnonzero(group == g))
        ids[members] = (dealt + np.arange(len(members))) % folds
        dealt += len(members)
    return ids


def cross_fit(splits: Splits, folds: int, fold: int) -> Splits:
    """``splits`` with train + val re-split: fold ``fold`` of ``folds`` is "val", the others
    "train" (in their original order); "test" is passed through untouched.

    Raises:
        ValueError: bad ``folds`` / ``fold`` (``check_fold``), fewer train + val images than
            folds, or a class (multi-label: a label's positives or negatives) with fewer
            images than folds, which would leave a fold whose AUC is undefined.
    """
    check_fold(folds, fold)
    images = np.concatenate([splits["train"][0], splits["val"][0]])
    labels = np.concatenate([splits["train"][1], splits["val"][1]])
    if len(labels) < folds:
        raise ValueError(
            f"Bad --cv_folds={folds}: {splits.info.name} has only {len(labels)} train + val "
            "images; use fewer folds."
        )
    _check_every_fold_scores_auc(labels, folds, splits.info)
    held_out = fold_ids(labels, folds) == fold
    arrays = {
        "train": (images[~held_out], labels[~held_out]),
        "val": (images[held_out], labels[held_out]),
        "test": splits["test"],
    }
    return Splits(arrays, splits.info, splits.path)


def _check_every_fold_scores_auc(labels: np.ndarray, folds: int, info) -> None:
    """Stratification puts each class in every fold only if it has >= ``folds`` images."""
    rows = np.asarray(labels).reshape(len(labels), -1).astype(np.int64)
    if info.is_multilabel:
        positives = rows.sum(0)
        counts = np.minimum(positives, len(rows) - positives)
    else:
        counts = np.bincount(rows[:, 0], minlength=info.num_classes)
    scarce = [(name, int(n)) for name, n in zip(info.label_names, counts, strict=True) if n < folds]
    if scarce:
        named = ", ".join(f"{name!r} ({n})" for name, n in scarce)
        limit = min(n for _, n in scarce)
        fix = f"Use --cv_folds <= {limit}." if limit >= 2 else "Use the official split."
        raise ValueError(
            f"Bad --cv_folds={folds}: in {info.name}'s train + val, {named} "
            f"{'has' if len(scarce) == 1 else 'have'} fewer images than folds, so a validation "
            f"fold would lack it and its AUC be undefined. {fix}"
        )
