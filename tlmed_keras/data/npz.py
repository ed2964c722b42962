"""Reading and validating MedMNIST npz files, whole or in pieces.

An npz is a zip of ``.npy`` members. Reading the member headers (shape, dtype) needs no pixel
data, and reading a member row by row through ``zipfile`` never holds more than one chunk, so
TissueMNIST at 224 px (~12 GB of pixels) can be checked and streamed on a small machine.
Nothing here unpickles: object arrays are refused.
"""

from __future__ import annotations

import dataclasses
import math
import os
import zipfile
from collections.abc import Iterator
from typing import IO

import numpy as np

from tlmed_keras.data.catalog import SPLITS, DatasetInfo
from tlmed_keras.data.errors import (
    BadArrayError,
    BadLabelsError,
    MissingKeysError,
    NotAnNpzError,
)

KINDS = ("images", "labels")
KEYS = tuple(f"{split}_{kind}" for split in SPLITS for kind in KINDS)


@dataclasses.dataclass(frozen=True)
class ArrayHeader:
    """What an ``.npy`` header says about its array."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool


def _read_npy_header(stream: IO[bytes], where: str) -> ArrayHeader:
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except ValueError as err:
        raise BadArrayError(f"{where}: not a readable .npy array ({err}).") from err
    if dtype.hasobject:
        raise BadArrayError(
            f"{where}: holds Python objects (dtype {dtype}), which would need unpickling; "
            "MedMNIST arrays are plain uint8/integers. Use the official file."
        )
    return ArrayHeader(tuple(shape), dtype, fortran)


def _open_zip(path: os.PathLike | str) -> zipfile.ZipFile:
    if not zipfile.is_zipfile(path):
        raise NotAnNpzError(
            f"{path} is not an npz file (not a zip archive of .npy arrays). MedMNIST files are "
            "npz; delete or move this file and fetch the official one."
        )
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        raise NotAnNpzError(f"{path} is not a readable npz file: {err}.") from err


def read_headers(path: os.PathLike | str) -> dict[str, ArrayHeader]:
    """Returns the header of every array in the npz at ``path``, keyed by array name.

    Raises:
        NotAnNpzError: the file is not a zip archive.
        BadArrayError: a member is not a readable, pickle-free ``.npy`` array.
    """
    headers = {}
    with _open_zip(path) as archive:
        for member in archive.namelist():
            if not member.endswith(".npy"):
                continue
            with archive.open(member) as stream:
                headers[member[:-4]] = _read_npy_header(stream, f"{path}:{member}")
    return headers


def _read_exact(stream: IO[bytes], count: int, where: str) -> bytes:
    data = stream.read(count)
    if len(data) != count:
        raise BadArrayError(f"{where}: ends early ({len(data)} of {count} bytes read).")
    return data


def iter_rows(
    path: os.PathLike | str, key: str, rows_per_chunk: int = 1024
) -> Iterator[np.ndarray]:
    """Yields array ``key`` of the npz at ``path`` in chunks of up to ``rows_per_chunk`` rows.

    Memory use is one chunk, whatever the array's size.

    Raises:
        MissingKeysError: the npz has no array ``key``.
        BadArrayError: the member is unreadable, Fortran-ordered or truncated.
    """
    if rows_per_chunk < 1:
        raise ValueError(f"rows_per_chunk must be >= 1, got {rows_per_chunk}.")
    where = f"{path}:{key}.npy"
    with _open_zip(path) as archive:
        if f"{key}.npy" not in archive.namelist():
            raise MissingKeysError(f"{path} has no array {key!r}.")
        with archive.open(f"{key}.npy") as stream:
            header = _read_npy_header(stream, where)
            if header.fortran_order and len(header.shape) > 1:
                raise BadArrayError(f"{where}: Fortran-ordered arrays cannot be streamed.")
            row_shape = header.shape[1:]
            row_bytes = math.prod(row_shape) * header.dtype.itemsize
            for start in range(0, header.shape[0], rows_per_chunk):
                count = min(rows_per_chunk, header.shape[0] - start)
                data = _read_exact(stream, count * row_bytes, where)
                yield np.frombuffer(data, header.dtype).reshape((count, *row_shape))


def read_array(path: os.PathLike | str, key: str) -> np.ndarray:
    """Reads one whole array of the npz (use for labels; images may be huge)."""
    chunks = list(iter_rows(path, key, rows_per_chunk=1 << 20))
    if not chunks:
        header = read_headers(path)[key]
        return np.zeros(header.shape, header.dtype)
    return np.concatenate(chunks)


def label_width(info: DatasetInfo) -> int:
    """Columns of the label array: one per label for multi-label, else a single class id."""
    return info.num_classes if info.is_multilabel else 1


def validate_headers(headers: dict[str, ArrayHeader], info: DatasetInfo, path) -> None:
    """Checks that every split's images and labels exist with the catalog's shape and dtype.

    Raises:
        MissingKeysError: an expected array is absent.
        BadArrayError: wrong dtype, image shape, label shape, or images/labels count mismatch.
    """
    missing = [key for key in KEYS if key not in headers]
    if missing:
        raise MissingKeysError(
            f"{path} lacks arrays {missing} (it has {sorted(headers)}). A MedMNIST npz holds "
            f"{list(KEYS)}; fetch the official {info.filename}."
        )
    for split in SPLITS:
        _check_images(headers[f"{split}_images"], info, f"{path}:{split}_images")
        _check_labels(headers[f"{split}_labels"], info, f"{path}:{split}_labels")
        n_images = headers[f"{split}_images"].shape[0]
        n_labels = headers[f"{split}_labels"].shape[0]
        if n_images != n_labels:
            raise BadArrayError(
                f"{path}: split {split!r} has {n_images} images but {n_labels} labels."
            )


def _check_images(header: ArrayHeader, info: DatasetInfo, where: str) -> None:
    expected = "(N, " + ", ".join(str(d) for d in info.image_shape) + ")"
    if header.dtype != np.uint8:
        raise BadArrayError(
            f"{where}: images must be uint8 (0-255), got {header.dtype}. "
            f"{info.name} at {info.size} px stores uint8 arrays of shape {expected}."
        )
    if header.shape[1:] != info.image_shape:
        raise BadArrayError(
            f"{where}: image shape {header.shape} does not match {info.name} at {info.size} px, "
            f"which is {expected}. Check --size and that the file is {info.filename}."
        )


def _check_labels(header: ArrayHeader, info: DatasetInfo, where: str) -> None:
    width = label_width(info)
    if header.dtype.kind not in "iub":
        raise BadArrayError(f"{where}: labels must be integers, got dtype {header.dtype}.")
    if len(header.shape) != 2 or header.shape[1] != width:
        raise BadArrayError(
            f"{where}: labels have shape {header.shape}; {info.name} ({info.task}) needs "
            f"(N, {width})."
        )


def validate_labels(labels: np.ndarray, info: DatasetInfo, where: str) -> None:
    """Checks label values: 0/1 per label for multi-label, else a class id in range.

    Raises:
        BadLabelsError: a value outside the allowed range (the first offender is named).
    """
    high = 2 if info.is_multilabel else info.num_classes
    bad = np.flatnonzero((labels < 0) | (labels >= high))
    if bad.size:
        row = bad[0] // labels.shape[1]
        what = "0 or 1" if info.is_multilabel else f"a class id in 0..{high - 1}"
        raise BadLabelsError(
            f"{where}: {bad.size} label value(s) out of range, e.g. row {row} = "
            f"{labels.reshape(-1)[bad[0]]}; {info.name} ({info.task}) labels are {what}."
        )
