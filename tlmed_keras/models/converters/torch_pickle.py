"""A PyTorch checkpoint (.pth / .pt) reader that needs neither PyTorch nor trust.

``torch.save`` writes a pickle, and unpickling a file from the internet can run any code it
names. This reader admits only the globals a state dict needs to rebuild its tensors (the same
idea as ``torch.load(weights_only=True)``, stricter) and maps them to NumPy stand-ins, so no
torch object is ever created. Anything else stops the load with ``UnsafeCheckpointError``
before it can be called.

Both on-disk layouts are read:
- zip (``torch.save`` default since PyTorch 1.6): ``<archive>/data.pkl`` plus one raw file per
  storage in ``<archive>/data/<key>``;
- legacy (``_use_new_zipfile_serialization=False``, e.g. torchvision's older weight files): a
  stream of pickles (magic number, protocol, system info, the object, the storage keys)
  followed by each storage's raw bytes, each prefixed by its element count.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import pickle
import struct
import zipfile
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

import ml_dtypes
import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# torch storage class name -> element dtype (little-endian, as torch writes on x86/ARM).
STORAGE_DTYPES = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}

# Keys under which training scripts commonly nest the weights of a full checkpoint.
NESTED_STATE_KEYS = ("state_dict", "model_state_dict", "model", "module")


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The checkpoint names a global outside the tensor-rebuild allow-list."""


class CheckpointFormatError(ValueError):
    """The file is not a readable PyTorch checkpoint or holds no state dict."""


@dataclasses.dataclass(frozen=True)
class _StorageType:
    """Stand-in for ``torch.FloatStorage`` & co.: only its element dtype matters."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        return STORAGE_DTYPES[self.name]


class _Storage:
    """A flat typed buffer; legacy files fill ``data`` only after the object pickle."""

    def __init__(self, dtype: np.dtype, numel: int):
        self.dtype = dtype
        self.numel = int(numel)
        self.data: np.ndarray | None = None

    def fill(self, raw: bytes) -> None:
        expected = self.numel * self.dtype.itemsize
        if len(raw) != expected:
            raise CheckpointFormatError(
                f"Truncated checkpoint: a storage needs {expected} bytes, found {len(raw)}."
            )
        self.data = np.frombuffer(raw, dtype=self.dtype)


@dataclasses.dataclass
class _StorageView:
    """A slice of a storage (legacy files may share one storage between tensors)."""

    root: _Storage
    offset: int
    numel: int

    @property
    def dtype(self) -> np.dtype:
        return self.root.dtype


@dataclasses.dataclass
class _LazyTensor:
    """A tensor whose storage bytes may not have been read yet (legacy layout)."""

    storage: _Storage | _StorageView
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def materialize(self) -> np.ndarray:
        storage, offset = self.storage, self.offset
        if isinstance(storage, _StorageView):
            storage, offset = storage.root, offset + storage.offset
        if storage.data is None:
            raise CheckpointFormatError("A tensor refers to a storage the file never stored.")
        return _strided_copy(storage.data, offset, self.size, self.stride)


def _strided_copy(
    flat: np.ndarray, offset: int, size: tuple[int, ...], stride: tuple[int, ...]
) -> np.ndarray:
    # as_strided trusts its arguments; a hostile file could make it read past the buffer.
    if len(size) != len(stride) or min((*size, *stride, offset, 0)) < 0:
        raise CheckpointFormatError(f"Bad tensor geometry: size {size}, stride {stride}.")
    if 0 in size:
        return np.zeros(size, dtype=flat.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= flat.size:
        raise CheckpointFormatError(
            f"Tensor of size {size} at offset {offset} runs past its storage ({flat.size})."
        )
    item = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        flat[offset:], shape=size, strides=[s * item for s in stride], writeable=False
    )
    return np.array(view)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored) -> _LazyTensor:
    """Stand-in for ``torch._utils._rebuild_tensor{,_v2}``: hooks/metadata are dropped."""
    return _LazyTensor(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad, backward_hooks, *_ignored):
    """Stand-in for ``torch._utils._rebuild_parameter``: a Parameter is just its tensor."""
    return data


# The allow-list: (module, name) -> stand-in. Nothing outside it is ever imported.
SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.nn.parameter", "Parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only ``SAFE_GLOBALS``; storages come back through ``persistent_load``."""

    def __init__(self, file: BinaryIO, load_storage: Callable[[tuple], Any]):
        super().__init__(file, encoding="utf-8")
        self._load_storage = load_storage

    def find_class(self, module: str, name: str) -> Any:
        try:
            return SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"Refusing to load checkpoint: it references the global '{module}.{name}', "
                "which is not a tensor-rebuild function. Only plain state dicts of tensors are "
                "accepted (what torch.load(weights_only=True) reads)."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid or _ascii(pid[0]) != "storage":
            raise UnsafeCheckpointError(f"Refusing unknown persistent id {pid!r:.80}.")
        return self._load_storage(pid[1:])


def _ascii(value: Any) -> Any:
    return value.decode("ascii") if isinstance(value, bytes) else value


def _storage_dtype(storage_type: Any) -> np.dtype:
    if not isinstance(storage_type, _StorageType):
        raise CheckpointFormatError(f"Unsupported storage type {storage_type!r}.")
    return storage_type.dtype


def _read_zip(path: str | os.PathLike) -> Any:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointFormatError(f"{path}: zip archive without one '<name>/data.pkl'.")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder_name = prefix + "byteorder"
        if byteorder_name in names and archive.read(byteorder_name).strip() != b"little":
            raise CheckpointFormatError(f"{path}: big-endian checkpoints are not supported.")
        storages: dict[str, _Storage] = {}

        def load_storage(args: tuple) -> _Storage:
            storage_type, key, _location, numel = args[:4]
            key = _ascii(key)
            if key not in storages:
                storage = _Storage(_storage_dtype(storage_type), numel)
                try:
                    storage.fill(archive.read(f"{prefix}data/{key}"))
                except KeyError:
                    raise CheckpointFormatError(f"{path}: storage {key!r} missing.") from None
                storages[key] = storage
            return storages[key]

        with archive.open(pickles[0]) as stream:
            return _RestrictedUnpickler(stream, load_storage).load()


def _read_legacy(path: str | os.PathLike) -> Any:
    with open(path, "rb") as stream:
        header = _RestrictedUnpickler(stream, _refuse_storage)
        if header.load() != LEGACY_MAGIC_NUMBER:
            raise CheckpointFormatError(f"{path}: not a PyTorch checkpoint (bad magic number).")
        if header.load() != LEGACY_PROTOCOL_VERSION:
            raise CheckpointFormatError(f"{path}: unsupported legacy protocol version.")
        sys_info = header.load()
        if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
            raise CheckpointFormatError(f"{path}: big-endian checkpoints are not supported.")
        storages: dict[str, _Storage] = {}

        def load_storage(args: tuple) -> _Storage | _StorageView:
            storage_type, root_key, _location, numel, view_metadata = args
            root_key = _ascii(root_key)
            if root_key not in storages:
                storages[root_key] = _Storage(_storage_dtype(storage_type), numel)
            if view_metadata is None:
                return storages[root_key]
            _view_key, offset, view_numel = view_metadata
            return _StorageView(storages[root_key], int(offset), int(view_numel))

        result = _RestrictedUnpickler(stream, load_storage).load()
        keys = _RestrictedUnpickler(stream, _refuse_storage).load()
        for key in keys:
            _fill_legacy_storage(stream, storages, _ascii(key), path)
        return result


def _refuse_storage(args: tuple) -> Any:
    raise CheckpointFormatError("A storage appears outside the checkpoint's object pickle.")


def _fill_legacy_storage(
    stream: BinaryIO, storages: dict[str, _Storage], key: str, path: str | os.PathLike
) -> None:
    if key not in storages:
        raise CheckpointFormatError(f"{path}: storage key {key!r} was never declared.")
    storage = storages[key]
    (numel,) = struct.unpack("<q", stream.read(8))
    if numel != storage.numel:
        raise CheckpointFormatError(
            f"{path}: storage {key!r} holds {numel} elements, declared {storage.numel}."
        )
    storage.fill(stream.read(numel * storage.dtype.itemsize))


def _materialize(obj: Any) -> Any:
    if isinstance(obj, _LazyTensor):
        return obj.materialize()
    if isinstance(obj, Mapping):
        return {key: _materialize(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_materialize(value) for value in obj)
    return obj


def _select_state_dict(obj: Any, path: str | os.PathLike) -> dict[str, np.ndarray]:
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, np.ndarray) for v in obj.values()):
            return {str(k): v for k, v in obj.items()}
        for key in NESTED_STATE_KEYS:
            if key in obj:
                return _select_state_dict(obj[key], path)
    raise CheckpointFormatError(
        f"{path}: holds no state dict of tensors (found {type(obj).__name__}"
        + (f" with keys {list(obj)[:8]}" if isinstance(obj, Mapping) else "")
        + f"). Expected a mapping name -> tensor, possibly under one of {NESTED_STATE_KEYS}."
    )


def load_checkpoint(path: str | os.PathLike) -> Any:
    """Unpickles a torch checkpoint safely, tensors as NumPy arrays.

    Args:
        path: a file written by ``torch.save`` (zip or legacy layout).

    Returns:
        The saved object with every tensor replaced by a ``np.ndarray``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafeCheckpointError: the pickle names a global outside ``SAFE_GLOBALS``.
        CheckpointFormatError: the file is not a (supported, intact) torch checkpoint.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No checkpoint at {path}.")
    reader = _read_zip if zipfile.is_zipfile(path) else _read_legacy
    try:
        return _materialize(reader(path))
    except (UnsafeCheckpointError, CheckpointFormatError):
        raise
    except (pickle.UnpicklingError, EOFError, struct.error, ValueError, TypeError) as err:
        raise CheckpointFormatError(f"{path}: not a readable PyTorch checkpoint ({err}).") from err


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a PyTorch state dict without PyTorch and without running code from the file.

    Args:
        path: a ``.pth``/``.pt`` file from ``torch.save`` (zip or legacy layout) holding a
            state dict, or a training checkpoint with one under ``NESTED_STATE_KEYS``.

    Returns:
        ``{parameter name: np.ndarray}`` in the file's order, dtypes as saved.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafeCheckpointError: the file names a global outside the tensor-rebuild allow-list
            (the message names it); nothing from the file was executed.
        CheckpointFormatError: not a torch checkpoint, or no state dict inside.
    """
    return _select_state_dict(load_checkpoint(path), path)


__all__ = [
    "CheckpointFormatError",
    "UnsafeCheckpointError",
    "load_checkpoint",
    "load_state_dict",
]
