"""Finding, downloading and verifying the MedMNIST npz files.

Where a file is looked for, in order:
  1. ``data_dir``, when given;
  2. medmnist's own cache (``~/.medmnist``), so files downloaded with the ``medmnist`` package
     are reused.
When absent from both, it is downloaded into ``data_dir`` if given, else into the cache.

A download goes to a hidden temporary name in the destination folder, is checked (length and
MD5), and only then renamed atomically to its final name: an interrupted or corrupt download
never leaves a file that looks complete. Files the user put in place are never overwritten or
deleted, even when they fail verification; the error says what to do instead.

MD5 of large files: hashing TissueMNIST 224 (~12 GB) takes a while, so files of at least
``MD5_CACHE_MIN_BYTES`` have their verified MD5 remembered in ``md5_cache_dir()`` (one small
JSON per file path, keyed on size and mtime). Changing the file (size or mtime) invalidates it.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import pathlib
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import IO, Literal

from tlmed_keras.data import catalog
from tlmed_keras.data.catalog import DatasetInfo
from tlmed_keras.data.errors import ChecksumError, DownloadError, FileMissingError

CHUNK_BYTES = 1 << 20
MD5_CACHE_MIN_BYTES = 256 << 20
DOWNLOAD_TIMEOUT_S = 60

# An opener takes a URL and returns a context manager yielding a readable binary response
# (``urllib.request.urlopen``'s shape). Tests inject their own.
Opener = Callable[[str], contextlib.AbstractContextManager[IO[bytes]]]
CacheDir = os.PathLike | str | None | Literal["medmnist"]


def _urlopen(url: str):
    return urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S)


def md5_cache_dir() -> pathlib.Path:
    """Where verified MD5s of large files are remembered (``$TLMED_CACHE`` or ~/.cache)."""
    root = os.environ.get("TLMED_CACHE") or pathlib.Path.home() / ".cache" / "tlmed_keras"
    return pathlib.Path(root) / "md5"


def md5sum(path: os.PathLike | str, chunk_bytes: int = CHUNK_BYTES) -> str:
    """MD5 hex digest of the file at ``path``, read in chunks (constant memory)."""
    digest = hashlib.md5()
    with open(path, "rb") as stream:
        while chunk := stream.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def _md5_record_path(path: pathlib.Path) -> pathlib.Path:
    key = hashlib.sha1(str(path.resolve()).encode()).hexdigest()
    return md5_cache_dir() / f"{key}.json"


def _file_stamp(path: pathlib.Path) -> dict:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def cached_md5(path: os.PathLike | str) -> str:
    """``md5sum(path)``, remembered for large files while their size and mtime are unchanged."""
    path = pathlib.Path(path)
    stamp = _file_stamp(path)
    if stamp["size"] < MD5_CACHE_MIN_BYTES:
        return md5sum(path)
    record = _md5_record_path(path)
    with contextlib.suppress(OSError, ValueError):
        saved = json.loads(record.read_text())
        if {k: saved.get(k) for k in stamp} == stamp:
            return saved["md5"]
    digest = md5sum(path)
    with contextlib.suppress(OSError):  # the cache is a convenience: never fail because of it
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({**stamp, "md5": digest}))
    return digest


def verify_md5(path: os.PathLike | str, expected_md5: str) -> None:
    """Checks the file's MD5 against ``expected_md5``; the file itself is never touched.

    Raises:
        ChecksumError: the digests differ, naming both and what to do.
    """
    actual = cached_md5(path)
    if actual != expected_md5.lower():
        raise ChecksumError(
            f"{path} has MD5 {actual}, expected {expected_md5}: the file is corrupt, "
            "incomplete or a different version. It was left as it is; move or delete it and run "
            "again to download a fresh copy."
        )


def resolve_cache_dir(cache_dir: CacheDir = "medmnist") -> pathlib.Path | None:
    """The cache folder: medmnist's default root for "medmnist", None for no cache."""
    if cache_dir == "medmnist":
        root = catalog.default_root()
        return pathlib.Path(root) if root else None
    return None if cache_dir is None else pathlib.Path(cache_dir)


def search_dirs(
    data_dir: os.PathLike | str | None, cache_dir: CacheDir = "medmnist"
) -> list[pathlib.Path]:
    """Folders looked in, in order: ``data_dir`` (when given), then the cache."""
    dirs = [pathlib.Path(data_dir)] if data_dir is not None else []
    cache = resolve_cache_dir(cache_dir)
    if cache is not None and cache not in dirs:
        dirs.append(cache)
    return dirs


def find_or_download(
    info: DatasetInfo,
    data_dir: os.PathLike | str | None = None,
    download: bool = True,
    *,
    cache_dir: CacheDir = "medmnist",
    verify: bool = True,
    expected_md5: str | None = None,
    url: str | None = None,
    opener: Opener = _urlopen,
    progress: bool = True,
) -> pathlib.Path:
    """Returns the path of ``info``'s npz, downloading it when absent, verified by MD5.

    Args:
        info: catalog entry (``catalog.get_info(name, size)``).
        data_dir: folder to look in first and to download into; None uses the cache only.
        download: fetch the file when it is not found; False raises instead.
        cache_dir: medmnist's cache ("medmnist", the default), another folder, or None.
        verify: check the MD5 (default). Only tests of synthetic files turn this off.
        expected_md5: MD5 to check against instead of the catalog's (synthetic test files).
        url: where to download from instead of the catalog's URL.
        opener: ``url -> context manager of a readable response``; ``urlopen`` by default.
        progress: show a tqdm progress bar while downloading.

    Returns:
        The path of the verified file.

    Raises:
        FileMissingError: not found and ``download`` is False.
        DownloadError: the download failed or was incomplete (no partial file left).
        ChecksumError: a found or downloaded file has the wrong MD5.
    """
    md5 = (expected_md5 or info.md5) if verify else None
    dirs = search_dirs(data_dir, cache_dir)
    for folder in dirs:
        candidate = folder / info.filename
        if candidate.is_file():
            if md5:
                verify_md5(candidate, md5)
            return candidate
    source = url or info.url
    if not download or not dirs:
        raise FileMissingError(_missing_message(info, dirs, source))
    destination = dirs[0] / info.filename
    if destination.is_dir():  # the download could not land there; name the folder
        raise FileMissingError(_missing_message(info, dirs, source))
    try:
        return download_file(source, destination, md5, opener=opener, progress=progress)
    except DownloadError as err:
        raise DownloadError(f"{err} {_missing_message(info, dirs, source)}") from err


def _missing_message(info: DatasetInfo, dirs: list[pathlib.Path], url: str) -> str:
    places = ", ".join(str(d) for d in dirs) or "(nowhere: no data_dir and no cache folder)"
    blocked = [str(d / info.filename) for d in dirs if (d / info.filename).is_dir()]
    if blocked:  # e.g. an unzip gone wrong: say so, or the user looks at a "missing" file
        places += f" ({', '.join(blocked)} is a folder, not the file: move it away)"
    return (
        f"MedMNIST file {info.filename} ({info.name} at {info.size} px) was not found; looked "
        f"in: {places}. Download it from {url} and put it in one of those folders (or pass "
        "--data_dir to the folder holding it), or rerun with --download to fetch it (MD5 "
        "verified)."
    )


def download_file(
    url: str,
    destination: os.PathLike | str,
    expected_md5: str | None,
    *,
    opener: Opener = _urlopen,
    progress: bool = True,
) -> pathlib.Path:
    """Downloads ``url`` to ``destination`` atomically: temp file, checks, then rename.

    Raises:
        DownloadError: network failure, or fewer bytes than announced.
        ChecksumError: the downloaded bytes have the wrong MD5.
        FileExistsError: ``destination`` already exists (it is never overwritten).
    """
    destination = pathlib.Path(destination)
    if destination.exists():
        raise FileExistsError(f"{destination} already exists; it is never overwritten.")
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(
        dir=destination.parent, prefix=f".{destination.name}.", suffix=".part"
    )
    temp = pathlib.Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _fetch_into(url, out, destination.name, opener, progress)
        if expected_md5 and digest != expected_md5.lower():
            raise ChecksumError(
                f"Downloaded {url} has MD5 {digest}, expected {expected_md5} (corrupted in "
                "transit or changed upstream). Nothing was kept; run again to retry."
            )
        # Another process may have finished the same download meanwhile: keep theirs.
        if destination.exists():
            temp.unlink()
        else:
            os.replace(temp, destination)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return destination


def _fetch_into(url: str, out: IO[bytes], label: str, opener: Opener, progress: bool) -> str:
    from tqdm.auto import tqdm

    digest = hashlib.md5()
    received = 0
    try:
        with opener(url) as response:
            total = _content_length(response)
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=label, disable=not progress
            ) as bar:
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except (OSError, http.client.HTTPException, urllib.error.URLError) as err:
        raise DownloadError(f"Download of {url} failed after {received} bytes: {err}.") from err
    if total is not None and received != total:
        raise DownloadError(f"Download of {url} stopped at {received} of {total} bytes.")
    out.flush()
    os.fsync(out.fileno())
    return digest.hexdigest()


def _content_length(response) -> int | None:
    headers = getattr(response, "headers", None)
    value = headers.get("Content-Length") if headers is not None else None
    return int(value) if value and value.isdigit() else None
