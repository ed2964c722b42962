"""A verified npz converted once into raw image shards for tf.data (``--data_source=stream``).

    shard_set = prepare_shards(npz_path, info)      # converts once, then reuses
    dataset = pipeline.make_stream_dataset(shard_set, "train", options=...)

The shards live beside the npz, in ``<file stem>.shards/`` (e.g. ``pathmnist_224.shards/``),
or, when that folder cannot be written, in ``$TLMED_CACHE`` / ~/.cache/tlmed_keras/shards.

Conversion streams the npz member by member in chunks (``npz.iter_rows``): it never holds a
split, only one chunk and one shard being written. It writes into a hidden temporary folder
and renames it into place only when every shard and the manifest are on disk, so an
interrupted conversion is never used: the next run finds no manifest, removes the leftover
and converts again. ``manifest.json`` records the source file's MD5 (a changed npz means a
new conversion) and, per split, each shard's file name, record count, size and SHA-1.

A shard is its images' raw uint8 bytes back to back, in npz row order (fixed-length records:
``tf.data.FixedLengthRecordDataset``); a split's labels are one ``<split>-labels.npy`` (read
without pickle). Format 1 was TFRecord ``tf.train.Example`` records: protobuf parsing and a
per-record CRC32C (software in TF's build here) cost 1.45x the CPU of the raw read
(experiments/memory/README.md); format-1 folders are converted anew.

Integrity without per-record checksums: every open checks each file's size against the
manifest, and re-hashes (SHA-1) every file whose size, mtime or ctime differs from when it was
last verified (``verified.json``, written at conversion): a shard written to, truncated,
copied or replaced since is checked in full before it is read. ``ShardSet.verify`` hashes all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import pathlib
import shutil
import tempfile

import numpy as np

from tlmed_keras.data import files, npz
from tlmed_keras.data.catalog import SPLITS, DatasetInfo
from tlmed_keras.data.errors import MedMNISTFileError

MANIFEST = "manifest.json"
VERIFIED = "verified.json"  # per file: (size, mtime_ns, ctime_ns) when its SHA-1 last matched
FORMAT = 2
SHARD_BYTES = 128 << 20  # image bytes per shard: few open files, enough shards to interleave
MIN_SHARDS = 8  # per split (when it has that many images): parallel reads, shard-order shuffle
ROWS_PER_CHUNK = 256
HASH_CHUNK = 4 << 20


class CorruptShardError(MedMNISTFileError, ValueError):
    """A shard file differs from what its manifest recorded (truncated, changed, damaged)."""


@dataclasses.dataclass(frozen=True)
class Shard:
    file: str
    count: int
    bytes: int
    sha1: str


@dataclasses.dataclass(frozen=True)
class ShardSet:
    """Converted shards of one npz: ``folder`` holds them and ``manifest.json``."""

    folder: pathlib.Path
    info: DatasetInfo
    splits: dict[str, list[Shard]]
    labels: dict[str, Shard]  # per split, its ``<split>-labels.npy``

    def count(self, split: str, shards: list[int] | None = None) -> int:
        """Images in ``split``, or in those of its ``shards`` (indices, e.g. ``host_shards``)."""
        files = self.splits[split]
        return sum(files[i].count for i in (range(len(files)) if shards is None else shards))

    def paths(self, split: str) -> list[str]:
        return [str(self.folder / shard.file) for shard in self.splits[split]]

    def starts(self, split: str) -> list[int]:
        """Row (in the split) of each shard's first image."""
        counts = [shard.count for shard in self.splits[split]]
        return [int(x) for x in np.cumsum([0, *counts[:-1]])]

    def read_labels(self, split: str) -> np.ndarray:
        """The split's labels as stored in the npz (``[N, L]``), from its checked file."""
        return np.load(self.folder / self.labels[split].file, allow_pickle=False)

    def host_shards(self, split: str, num_hosts: int = 1, host_index: int = 0) -> list[int]:
        """Indices of the shards host ``host_index`` of ``num_hosts`` reads (every num_hosts-th).

        Raises:
            ValueError: a bad host index, or fewer shards than hosts.
        """
        total = len(self.splits[split])
        if not 0 <= host_index < num_hosts:
            raise ValueError(f"Bad host index {host_index}: must be in 0..{num_hosts - 1}.")
        if num_hosts > total:
            raise ValueError(
                f"{self.folder}: split {split!r} has {total} shards for {num_hosts} hosts; "
                "every host needs at least one. Delete the folder and convert again with "
                "smaller shards (prepare_shards(shard_bytes=...))."
            )
        return list(range(host_index, total, num_hosts))

    def files(self) -> list[Shard]:
        """Every file of the set: each split's shards and labels."""
        return [x for split in self.splits for x in (*self.splits[split], self.labels[split])]

    def verify(self) -> None:
        """Checks every file's size and SHA-1 against the manifest (reads every byte).

        Raises:
            CorruptShardError: naming the first damaged or missing file.
        """
        for shard in self.files():
            _check_shard(self.folder, shard, full=True)


def shard_folder(npz_path: os.PathLike | str) -> pathlib.Path:
    """Where the shards of ``npz_path`` are kept beside it."""
    npz_path = pathlib.Path(npz_path)
    return npz_path.with_name(npz_path.stem + ".shards")


def fallback_folder(source_md5: str) -> pathlib.Path:
    """Shard folder in the user's cache, for an npz whose folder is read-only."""
    return files.md5_cache_dir().parent / "shards" / source_md5


def _sha1(path: pathlib.Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as stream:
        while chunk := stream.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_shard(folder: pathlib.Path, shard: Shard, full: bool) -> None:
    path = folder / shard.file
    remedy = f"Delete {folder} and run again to convert the npz anew."
    if not path.is_file():
        raise CorruptShardError(f"Shard {path} is missing. {remedy}")
    size = path.stat().st_size
    if size != shard.bytes:
        raise CorruptShardError(
            f"Shard {path} is damaged: {size} bytes, the manifest says {shard.bytes}. {remedy}"
        )
    if full and _sha1(path) != shard.sha1:
        raise CorruptShardError(
            f"Shard {path} is damaged: its SHA-1 differs from the manifest's. {remedy}"
        )


def _read_manifest(folder: pathlib.Path, info: DatasetInfo, source_md5: str) -> ShardSet | None:
    """The folder's shards when its manifest is complete and of this source, else None."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("format") != FORMAT or manifest.get("source", {}).get("md5") != source_md5:
        return None
    splits = {split: [Shard(**shard) for shard in manifest["splits"][split]] for split in SPLITS}
    labels = {split: Shard(**manifest["labels"][split]) for split in SPLITS}
    shard_set = ShardSet(folder, info, splits, labels)
    _check_changed_files(shard_set)
    return shard_set


def _stat_stamp(path: pathlib.Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


def _check_changed_files(shard_set: ShardSet) -> None:
    """Sizes of all files (cheap), then the SHA-1 of each file changed since it last matched
    (any write, truncation or copy moves its mtime or ctime); records the new matches.

    Raises:
        CorruptShardError: naming the first missing or damaged file.
    """
    folder = shard_set.folder
    try:
        verified = json.loads((folder / VERIFIED).read_text())
    except (OSError, ValueError):
        verified = {}
    for shard in shard_set.files():
        _check_shard(folder, shard, full=False)
    changed = [x for x in shard_set.files() if verified.get(x.file) != _stat_stamp(folder / x.file)]
    for shard in changed:
        _check_shard(folder, shard, full=True)
    if changed or not verified:
        _write_verified(shard_set)


def _write_verified(shard_set: ShardSet) -> None:
    stamps = {x.file: _stat_stamp(shard_set.folder / x.file) for x in shard_set.files()}
    with contextlib.suppress(OSError):  # a read-only copy is then re-hashed at every open
        (shard_set.folder / VERIFIED).write_text(json.dumps(stamps))


def _num_shards(count: int, row_bytes: int, shard_bytes: int) -> int:
    return max(math.ceil(count * row_bytes / shard_bytes), min(MIN_SHARDS, count), 1)


def _write_split(npz_path, split: str, info, temp: pathlib.Path, shard_bytes: int, bar):
    """Writes ``split``'s shards and labels into ``temp``; returns (shards, labels) entries."""
    labels = npz.read_array(npz_path, f"{split}_labels")
    npz.validate_labels(labels, info, f"{npz_path}:{split}_labels")
    count = len(labels)
    total = _num_shards(count, math.prod(info.image_shape), shard_bytes)
    bounds = [round(i * count / total) for i in range(total + 1)]
    names = [f"{split}-{i:05d}-of-{total:05d}.u8" for i in range(total)]
    chunks = npz.iter_rows(npz_path, f"{split}_images", ROWS_PER_CHUNK)
    pending = np.zeros((0,), np.uint8)  # rows read but not yet written
    for name, start, end in zip(names, bounds, bounds[1:], strict=False):
        with open(temp / name, "wb") as out:
            left = end - start
            while left:
                if not len(pending):
                    pending = next(chunks)  # the npz's header was checked: rows enough
                rows, pending = pending[:left], pending[left:]
                out.write(rows.tobytes())
                left -= len(rows)
                bar.update(len(rows))
    labels_name = f"{split}-labels.npy"
    np.save(temp / labels_name, labels, allow_pickle=False)
    entries = [_entry(temp, name, bounds[i + 1] - bounds[i]) for i, name in enumerate(names)]
    return entries, _entry(temp, labels_name, count)


def _entry(folder: pathlib.Path, name: str, count: int) -> Shard:
    path = folder / name
    return Shard(name, count, path.stat().st_size, _sha1(path))


def _remove_leftovers(parent: pathlib.Path, prefix: str) -> None:
    """Deletes temporary folders of conversions that were interrupted (their process is gone)."""
    for leftover in parent.glob(f"{prefix}*"):
        pid = leftover.name.removeprefix(prefix).split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue  # another process is converting right now
        shutil.rmtree(leftover, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _convert(npz_path, info, folder: pathlib.Path, source_md5: str, shard_bytes, say):
    from tqdm.auto import tqdm

    prefix = f".{folder.name}.tmp-"
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(folder.parent, prefix)
    temp = pathlib.Path(tempfile.mkdtemp(dir=folder.parent, prefix=f"{prefix}{os.getpid()}-"))
    headers = npz.read_headers(npz_path)
    total = sum(headers[f"{split}_images"].shape[0] for split in SPLITS)
    say(f"Converting {npz_path} into image shards in {folder} (once; later runs reuse them).")
    try:
        with tqdm(total=total, unit="img", desc=f"shards {info.name}_{info.size}") as bar:
            written = {
                split: _write_split(npz_path, split, info, temp, shard_bytes, bar)
                for split in SPLITS
            }
        splits = {split: entries for split, (entries, _) in written.items()}
        labels = {split: entry for split, (_, entry) in written.items()}
        manifest = {
            "format": FORMAT,
            "source": {"file": pathlib.Path(npz_path).name, "md5": source_md5},
            "dataset": {"name": info.name, "size": info.size},
            "splits": {s: [dataclasses.asdict(x) for x in shards] for s, shards in splits.items()},
            "labels": {s: dataclasses.asdict(x) for s, x in labels.items()},
        }
        (temp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        if folder.exists():  # stale or from another source: replaced only now, whole
            shutil.rmtree(folder)
        os.replace(temp, folder)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    shard_set = ShardSet(folder, info, splits, labels)
    _write_verified(shard_set)  # hashed just now, while written
    return shard_set


def prepare_shards(
    npz_path: os.PathLike | str,
    info: DatasetInfo,
    *,
    folder: os.PathLike | str | None = None,
    shard_bytes: int = SHARD_BYTES,
    say=print,
) -> ShardSet:
    """The image shards of the (already verified) npz, converted first when needed.

    Args:
        npz_path: the MedMNIST npz (checked by ``files``/``npz`` beforehand).
        info: its catalog entry.
        folder: where the shards go; None: ``shard_folder(npz_path)``, or the user cache
            when the npz's folder is read-only.
        shard_bytes: image bytes per shard (at least ``MIN_SHARDS`` shards per split).
        say: where the one-line conversion notice goes.

    Raises:
        CorruptShardError: a file of a finished conversion is gone, has the wrong size, or
            was changed since it was last verified and its SHA-1 no longer matches.
        The errors of ``npz`` for a bad file.
    """
    npz_path = pathlib.Path(npz_path)
    npz.validate_headers(npz.read_headers(npz_path), info, npz_path)
    source_md5 = files.cached_md5(npz_path)
    if folder is None:
        folder = shard_folder(npz_path)
        if not os.access(folder.parent, os.W_OK) and not folder.exists():
            folder = fallback_folder(source_md5)
    folder = pathlib.Path(folder)
    found = _read_manifest(folder, info, source_md5)
    if found is None:
        found = _convert(npz_path, info, folder, source_md5, shard_bytes, say)
    for opened in _OPENED_IN_SCOPE:
        opened[found.folder] = found
    return found


# One dict per active ``naming_bad_shard`` block: the shard sets opened inside it. Only those
# are checked on a read error (a damaged set opened earlier in the process, by another run or
# test, must not be blamed).
_OPENED_IN_SCOPE: list[dict[pathlib.Path, ShardSet]] = []


@contextlib.contextmanager
def naming_bad_shard(*shard_sets: ShardSet):
    """Turns a TensorFlow read error while streaming shards (a file gone or damaged since it
    was opened: the error names no manifest) into a CorruptShardError naming the file, found
    by checking against their manifests the ``shard_sets`` given and those opened inside this
    block. An error while every file still matches is re-raised as it was."""
    import tensorflow as tf

    opened: dict[pathlib.Path, ShardSet] = {s.folder: s for s in shard_sets}
    _OPENED_IN_SCOPE.append(opened)
    try:
        yield
    except (tf.errors.DataLossError, tf.errors.NotFoundError):
        for shard_set in list(opened.values()):
            shard_set.verify()  # raises, naming the file
        raise
    finally:
        _OPENED_IN_SCOPE.remove(opened)
