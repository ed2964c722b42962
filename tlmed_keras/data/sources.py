"""Where the trainer's images come from: memory (the arrays) or stream (raw image shards).

``--data_source=memory`` loads every split into numpy once and feeds batches by index
(``pipeline.make_dataset``): fastest, memory ≈ the splits' uint8 size. ``stream`` converts the
verified npz once into shards beside it (``shards``) and reads them through tf.data with a
bounded shuffle buffer (``pipeline.make_stream_dataset``): memory bounded whatever the size.
``auto`` picks memory when the splits fit comfortably in the RAM available now, else stream,
and says which and why in one line (the trainer also records both in config.json).
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from collections.abc import Iterator, Mapping
from typing import NamedTuple

import numpy as np

from tlmed_keras.data import files, npz
from tlmed_keras.data.arrays import read_splits
from tlmed_keras.data.catalog import SPLITS, DatasetInfo

DATA_SOURCES = ("auto", "memory", "stream")
# auto: memory when the splits take at most this share of the RAM available now (the rest
# is for TensorFlow, the model, the shuffle and prefetch buffers, and other processes).
MEMORY_SHARE = 0.5


def available_ram_bytes() -> int:
    """RAM available to a new allocation now (MemAvailable), or 0 when unknown."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - psutil is a dependency of the lock
        return 0


def splits_bytes(npz_path: os.PathLike | str) -> int:
    """uint8 bytes of every split's images and labels, from the npz headers (no pixels read)."""
    headers = npz.read_headers(npz_path)
    return sum(
        math.prod(header.shape) * header.dtype.itemsize
        for key, header in headers.items()
        if key in npz.KEYS
    )


class SourceChoice(NamedTuple):
    """The data source a run uses ("memory" or "stream") and the one-line reason why."""

    source: str
    reason: str


def choose(
    requested: str, npz_path, available: int | None = None, recorded: str | None = None
) -> SourceChoice:
    """``(source, reason)``: the source to use and a one-line reason to print.

    ``recorded`` is what ``auto`` picked when the run being resumed started (its config.json):
    ``auto`` keeps it, because the two sources order an epoch differently and a resumed run
    must see the batches the uninterrupted one would. The one exception: the splits no longer
    fit in RAM for ``memory``; then it streams and says the order will differ.

    Raises:
        ValueError: ``requested`` is not one of ``DATA_SOURCES``.
    """
    if requested not in DATA_SOURCES:
        raise ValueError(f"Bad --data_source={requested!r}: accepted: {', '.join(DATA_SOURCES)}.")
    size = splits_bytes(npz_path)
    gib = f"{size / 2**30:.2f} GiB"
    if requested != "auto":
        return SourceChoice(
            requested, f"data source: {requested} (--data_source={requested}; splits {gib})"
        )
    available = available_ram_bytes() if available is None else available
    room = f"{available / 2**30:.1f} GiB of RAM available"
    fits = size <= MEMORY_SHARE * available
    if recorded == "stream" or (recorded == "memory" and fits):
        return SourceChoice(
            recorded,
            f"data source: {recorded} (auto: as when this run started, so the resumed epochs "
            f"see the same batches; splits {gib}, {room})",
        )
    if recorded == "memory":
        return SourceChoice(
            "stream",
            f"data source: stream (auto: this run started in memory, but splits {gib} now "
            f"exceed {MEMORY_SHARE:.0%} of {room}; the resumed epochs' order will differ)",
        )
    if fits:
        return SourceChoice("memory", f"data source: memory (auto: splits {gib} fit in {room})")
    return SourceChoice(
        "stream",
        f"data source: stream (auto: splits {gib} exceed {MEMORY_SHARE:.0%} of {room}; "
        "image shards beside the npz, bounded memory)",
    )


@dataclasses.dataclass(frozen=True)
class StreamedImages:
    """Stands for a split's images in streamed mode: its length and where to read them."""

    shard_set: object  # shards.ShardSet
    split: str

    def __len__(self) -> int:
        return self.shard_set.count(self.split)


class StreamedSplits(Mapping):
    """``splits[split] -> (StreamedImages, labels [N, L])``: the ``Splits`` interface the
    trainer uses, with images left on disk (labels are small and read whole)."""

    def __init__(self, shard_set, labels: dict[str, np.ndarray], info: DatasetInfo, path):
        self.shard_set = shard_set
        self._labels = labels
        self.info = info
        self.path = pathlib.Path(path)

    def __getitem__(self, split: str):
        if split not in self._labels:
            raise KeyError(f"Unknown split {split!r}. Accepted: {', '.join(SPLITS)}.")
        return StreamedImages(self.shard_set, split), self._labels[split]

    def __iter__(self) -> Iterator[str]:
        return iter(self._labels)

    def __len__(self) -> int:
        return len(self._labels)

    def sizes(self) -> dict[str, int]:
        return {split: len(labels) for split, labels in self._labels.items()}


def load(
    info: DatasetInfo,
    data_dir,
    *,
    source: str = "auto",
    download: bool = False,
    verify: bool = True,
    say=print,
    recorded: str | None = None,
) -> tuple[Mapping, SourceChoice]:
    """Finds and verifies the npz, then returns ``(splits, choice)``: its splits from the
    chosen source, ``arrays.Splits`` (memory) or ``StreamedSplits`` (stream, shards converted
    once), and the ``SourceChoice`` that picked it (``say`` gets its reason too).
    ``recorded``: the source of the run being resumed (see ``choose``).

    Raises:
        ValueError: a bad ``source``; the errors of ``files``, ``npz`` and ``shards``.
    """
    from tlmed_keras.data import shards

    path = files.find_or_download(info, data_dir or None, download, verify=verify)
    choice = choose(source, path, recorded=recorded)
    say(choice.reason)
    if choice.source == "memory":
        return read_splits(path, info), choice
    shard_set = shards.prepare_shards(path, info, say=say)
    labels = {split: npz.read_array(path, f"{split}_labels") for split in SPLITS}
    for split, values in labels.items():
        npz.validate_labels(values, info, f"{path}:{split}_labels")
    return StreamedSplits(shard_set, labels, info, path), choice
