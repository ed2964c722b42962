"""The images of one split of a run's dataset, found the way the run found them."""

from __future__ import annotations

from typing import Any

import numpy as np

from tlmed_keras.data.catalog import SPLITS


def load_split(
    run: Any, split: str, data_dir: str | None = None, download: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8, labels)`` of ``split`` of the dataset ``run`` was trained on; for a
    cross-fitted run (``--cv_folds``), "train" and "val" are its folds.

    Args:
        run: a ``tlmed_keras.runs.rundir.Run``.
        split: "train", "val" or "test".
        data_dir: folder of the npz files; default: the run's own ``data_dir`` (or medmnist's
            cache when the run had none).
        download: fetch a missing file; default: the run's own setting.

    Raises:
        ValueError: an unknown split.
        FileNotFoundError (from the data layer): the file is missing and download is off.
    """
    from tlmed_keras.data import load_arrays

    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}. Accepted: {', '.join(SPLITS)}.")
    from tlmed_keras.data import folds

    config = run.config
    splits = load_arrays(
        config.data,
        config.size,
        data_dir or config.data_dir or None,
        download=config.download if download is None else download,
        verify=config.verify_data,
    )
    if config.cv_folds:  # the run validated on its fold: so does its "val"
        splits = folds.cross_fit(splits, config.cv_folds, config.cv_fold)
    return splits[split]
