"""Files cut into pieces that travel one per device call, and put back together there.

The files (wheels, then the check's data) are read as one stream, in manifest order, and the
stream is cut into pieces of at most ``piece_bytes``. The manifest records the SHA-256 of every
whole file and of every piece, so the far side refuses a damaged piece as soon as it arrives
and a damaged file before it is installed. Standard library only: this module runs on the
device machine before anything is installed there.

Layout written by ``pack``::

    OUT/manifest.json          the plan: files (name, kind, size, sha256, offset), pieces
    OUT/01/piece-01.bin        the first piece, and a copy of manifest.json beside it
    OUT/02/piece-02.bin ...    one folder per device call (the call's carry list names it)
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
from collections.abc import Iterator

MANIFEST = "manifest.json"
FORMAT = 1
_CHUNK = 1 << 20


class BundleError(Exception):
    """A piece or file is missing or damaged; the message says which and what to do."""


def file_sha256(path: os.PathLike | str) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def piece_name(index: int) -> str:
    """``piece-01.bin`` for index 0: the names sort in stream order."""
    return f"piece-{index + 1:02d}.bin"


def piece_folder(index: int) -> str:
    """``01`` for index 0: the folder one device call carries."""
    return f"{index + 1:02d}"


def describe_files(files: list[tuple[pathlib.Path, str]]) -> list[dict]:
    """Manifest entries (name, kind, size, sha256, offset in the stream) of ``(path, kind)``."""
    entries, offset = [], 0
    names = [path.name for path, _ in files]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BundleError(f"Two files share the name {duplicates[0]}: keep one of them.")
    for path, kind in files:
        size = path.stat().st_size
        entries.append(
            {
                "name": path.name,
                "kind": kind,
                "size": size,
                "sha256": file_sha256(path),
                "offset": offset,
            }
        )
        offset += size
    return entries


def _stream(files: list[pathlib.Path]) -> Iterator[bytes]:
    for path in files:
        with open(path, "rb") as f:
            yield from iter(lambda: f.read(_CHUNK), b"")


def _write_pieces(files: list[pathlib.Path], out: pathlib.Path, piece_bytes: int) -> list[dict]:
    """Cuts the concatenated files into pieces of ``piece_bytes`` (the last one shorter)."""
    chunks, pending, pieces = _stream(files), b"", []
    while pending or (pending := next(chunks, b"")):
        name = piece_name(len(pieces))
        folder = out / piece_folder(len(pieces))
        folder.mkdir(parents=True)
        digest, written = hashlib.sha256(), 0
        with open(folder / name, "wb") as f:
            while written < piece_bytes and (pending or (pending := next(chunks, b""))):
                part, pending = pending[: piece_bytes - written], pending[piece_bytes - written :]
                f.write(part)
                digest.update(part)
                written += len(part)
        pieces.append({"name": name, "size": written, "sha256": digest.hexdigest()})
    return pieces


def pack(files: list[tuple[pathlib.Path, str]], out: os.PathLike | str, piece_bytes: int) -> dict:
    """Writes the pieces of ``files`` (``(path, kind)``, kind "wheel" or "data") under ``out``
    (emptied first), a manifest beside them and a copy in every piece's folder. Returns the
    manifest."""
    if piece_bytes <= 0:
        raise BundleError(f"piece size {piece_bytes} bytes: give a positive size.")
    out = pathlib.Path(out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    entries = describe_files(files)
    pieces = _write_pieces([path for path, _ in files], out, piece_bytes)
    manifest = {
        "format": FORMAT,
        "piece_bytes": piece_bytes,
        "total_bytes": sum(e["size"] for e in entries),
        "files": entries,
        "pieces": pieces,
    }
    text = json.dumps(manifest, indent=1) + "\n"
    (out / MANIFEST).write_text(text)
    for index in range(len(pieces)):
        (out / piece_folder(index) / MANIFEST).write_text(text)
    return manifest


def read_manifest(folder: os.PathLike | str) -> dict:
    """The manifest in ``folder``; BundleError when it is missing or not this format."""
    path = pathlib.Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise BundleError(f"{path} cannot be read ({e}): carry a piece folder made by pack.") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{path} is not a format-{FORMAT} manifest: pack the pieces again.")
    return manifest


def bundle_id(manifest: dict) -> str:
    """A short id of the whole bundle: pieces of two different packs never mix."""
    joined = "".join(p["sha256"] for p in manifest["pieces"])
    return hashlib.sha256(joined.encode()).hexdigest()[:16]


def check_piece(path: os.PathLike | str, manifest: dict) -> None:
    """Raises BundleError when ``path`` is not one of the manifest's pieces, byte for byte."""
    path = pathlib.Path(path)
    expected = {p["name"]: p for p in manifest["pieces"]}.get(path.name)
    if expected is None:
        raise BundleError(f"{path.name} is not a piece of this bundle: carry a folder from pack.")
    if path.stat().st_size != expected["size"] or file_sha256(path) != expected["sha256"]:
        raise BundleError(
            f"Piece {path.name} is damaged (its SHA-256 differs from the manifest's): "
            "send that piece again."
        )


def missing_pieces(store: os.PathLike | str, manifest: dict) -> list[str]:
    """Names of the manifest's pieces that ``store`` does not hold yet, in order."""
    store = pathlib.Path(store)
    return [p["name"] for p in manifest["pieces"] if not (store / p["name"]).is_file()]


def reassemble(store: os.PathLike | str, manifest: dict, out: os.PathLike | str) -> list[dict]:
    """Writes every file of the manifest to ``out`` from the pieces in ``store``, checks each
    piece and each whole file by SHA-256, and returns the manifest's file entries.

    Raises:
        BundleError: a piece is missing or damaged (named), or a rebuilt file's SHA-256 differs.
    """
    store, out = pathlib.Path(store), pathlib.Path(out)
    missing = missing_pieces(store, manifest)
    if missing:
        raise BundleError(
            f"Missing piece{'s' if len(missing) > 1 else ''} {', '.join(missing)} of "
            f"{len(manifest['pieces'])}: send {'them' if len(missing) > 1 else 'it'}, then "
            "rebuild."
        )
    for piece in manifest["pieces"]:
        check_piece(store / piece["name"], manifest)
    out.mkdir(parents=True, exist_ok=True)
    chunks = _stream([store / p["name"] for p in manifest["pieces"]])
    pending = b""
    for entry in manifest["files"]:
        target = out / entry["name"]
        digest, left = hashlib.sha256(), entry["size"]
        with open(target, "wb") as f:
            while left:
                if not pending:
                    pending = next(chunks)
                part, pending = pending[:left], pending[left:]
                f.write(part)
                digest.update(part)
                left -= len(part)
        if digest.hexdigest() != entry["sha256"]:
            raise BundleError(
                f"{entry['name']} rebuilt from the pieces differs from the original (SHA-256): "
                "pack the bundle again and send every piece."
            )
    return manifest["files"]
