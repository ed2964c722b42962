"""A MedMNIST file as validated in-memory arrays (the small-data source of the pipeline)."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator, Mapping

import numpy as np

from tlmed_keras.data import catalog, files, npz
from tlmed_keras.data.catalog import SPLITS, DatasetInfo


class Splits(Mapping):
    """``splits["train"] -> (images uint8 [N,H,W(,C)], labels [N,L])``.

    Also carries ``.info`` (the catalog entry) and ``.path`` (the verified file).
    """

    def __init__(
        self, arrays: dict[str, tuple[np.ndarray, np.ndarray]], info: DatasetInfo, path
    ) -> None:
        self._arrays = arrays
        self.info = info
        self.path = pathlib.Path(path)

    def __getitem__(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        if split not in self._arrays:
            raise KeyError(f"Unknown split {split!r}. Accepted: {', '.join(SPLITS)}.")
        return self._arrays[split]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def sizes(self) -> dict[str, int]:
        """Number of images per split."""
        return {split: len(images) for split, (images, _) in self._arrays.items()}


def read_splits(path: os.PathLike | str, info: DatasetInfo) -> Splits:
    """Loads and validates every split of the npz at ``path`` against ``info``.

    Raises:
        NotAnNpzError, MissingKeysError, BadArrayError, BadLabelsError: see ``npz``.
    """
    npz.validate_headers(npz.read_headers(path), info, path)
    arrays = {}
    with np.load(path, allow_pickle=False) as data:
        for split in SPLITS:
            labels = data[f"{split}_labels"]
            npz.validate_labels(labels, info, f"{path}:{split}_labels")
            arrays[split] = (data[f"{split}_images"], labels)
    return Splits(arrays, info, path)


def load_arrays(
    name: str,
    size: int = 28,
    data_dir: os.PathLike | str | None = None,
    download: bool = True,
    *,
    verify: bool = True,
    cache_dir: files.CacheDir = "medmnist",
) -> Splits:
    """Finds (or downloads) dataset ``name`` at ``size`` px, verifies and loads it.

    Holds every split in memory: right for 28-128 px; stream 224 px sets through TFDS
    (``tlmed_keras.data.tfds_builder``) instead.

    Args:
        name, size: the dataset (see ``catalog.dataset_names()``, ``catalog.SIZES``).
        data_dir, download, cache_dir, verify: as ``files.find_or_download``.

    Returns:
        ``Splits`` mapping "train"/"val"/"test" to ``(images, labels)``.

    Raises:
        ValueError: unknown name or size; the errors of ``files`` and ``npz``.
    """
    info = catalog.get_info(name, size)
    path = files.find_or_download(info, data_dir, download, cache_dir=cache_dir, verify=verify)
    return read_splits(path, info)
