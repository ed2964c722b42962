"""The one state-dict engine: PyTorch-layout checkpoints into Keras variables.

Checkpoints are untrusted files, so they are only ever read as arrays: ``.safetensors``
through the ``safetensors`` package's NumPy API and ``.pth``/``.pt``/``.bin`` through the
project's allow-list unpickler (``torch_pickle``). Nothing here imports torch.

A conversion is a list of ``(checkpoint key, Keras variable, layout change)`` steps given to a
``StateDictConsumer``: every key must be used exactly once (or be explicitly ignored) and every
shape must match, otherwise the load stops with ``StateDictMismatchError`` naming the first
offending key and its shape. Nothing is assigned until every step has checked out, so a failed
load leaves the model as it was. That strictness is what catches a wrong architecture variant
before it trains on garbage.

Which key fills which variable is the job of a key-naming map over this engine:
``converters.torchvision`` (Keras layers named after torch module paths) and
``converters.huggingface`` (BEiT's transformers names).
"""

from __future__ import annotations

import os
import pathlib
import re
from collections.abc import Callable, Iterable, Mapping

import numpy as np

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pth", ".pt", ".bin")
READABLE_SUFFIXES = SAFETENSORS_SUFFIXES + TORCH_SUFFIXES

Layout = Callable[[np.ndarray], np.ndarray]


class StateDictMismatchError(ValueError):
    """A checkpoint does not fit the Keras model: missing, unexpected or mis-shaped key."""


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a checkpoint file into ``{key: np.ndarray}`` without executing anything.

    Args:
        path: a ``.safetensors`` file, or a ``.pth``/``.pt``/``.bin`` file from ``torch.save``.

    Returns:
        The file's tensors as NumPy arrays, keys as saved.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the suffix is none of the accepted ones.
        torch_pickle.UnsafeCheckpointError / CheckpointFormatError: see ``torch_pickle``.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {path}.")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors.numpy import load_file

        return dict(load_file(str(path)))
    if suffix in TORCH_SUFFIXES:
        from tlmed_keras.models.converters.torch_pickle import load_state_dict

        return load_state_dict(path)
    raise ValueError(
        f"Cannot read weights from {path}: unknown suffix {suffix!r}. Accepted: "
        f"{', '.join(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)}."
    )


# ---- layout changes: PyTorch (out, in, ...) -> Keras (..., in, out) ----


def dense_kernel(weight: np.ndarray) -> np.ndarray:
    """``nn.Linear.weight`` [out, in] -> ``keras.layers.Dense.kernel`` [in, out]."""
    _require_ndim(weight, 2, "a Linear weight [out, in]")
    return weight.T


def conv_kernel(weight: np.ndarray) -> np.ndarray:
    """``nn.Conv2d.weight`` [out, in/groups, kh, kw] -> ``Conv2D.kernel`` [kh, kw, in, out]."""
    _require_ndim(weight, 4, "a Conv2d weight [out, in, kh, kw]")
    return weight.transpose(2, 3, 1, 0)


def depthwise_kernel(weight: np.ndarray, multiplier: int = 1) -> np.ndarray:
    """Depthwise Conv2d ``[C * m, 1, kh, kw]`` -> Keras DepthwiseConv2D ``[kh, kw, C, m]``."""
    _require_ndim(weight, 4, "a depthwise Conv2d weight [C * m, 1, kh, kw]")
    channels = weight.shape[0] // multiplier
    grouped = weight.reshape(channels, multiplier, *weight.shape[2:])
    return grouped.transpose(2, 3, 0, 1)


def identity(array: np.ndarray) -> np.ndarray:
    """Biases, norm scales and other 1-D parameters keep their layout."""
    return array


def _require_ndim(array: np.ndarray, ndim: int, what: str) -> None:
    if array.ndim != ndim:
        raise StateDictMismatchError(f"Expected {what}, got an array of shape {array.shape}.")


# ---- strict consumption ----


class StateDictConsumer:
    """Hands out checkpoint arrays by key, then assigns them all or reports the first misfit.

    Args:
        state_dict: ``{key: array}`` as read from the checkpoint.
        source: what the checkpoint is, for error messages (e.g. "torchvision AlexNet").
    """

    def __init__(self, state_dict: Mapping[str, np.ndarray], source: str):
        self.source = source
        self._remaining = dict(state_dict)
        self._staged: list[tuple[object, np.ndarray]] = []

    def pop(self, key: str, needed_by: str = "") -> np.ndarray:
        """Returns and consumes ``state_dict[key]``.

        Raises:
            StateDictMismatchError: ``key`` is not in the state dict (the message lists the
                closest keys present, to make renamed layers obvious).
        """
        if key not in self._remaining:
            raise StateDictMismatchError(
                f"{self.source}: missing key {key!r}{needed_by} in the checkpoint. Keys present "
                f"with the same prefix: {self._neighbours(key)}. Is it a checkpoint of this "
                "architecture/variant?"
            )
        return np.asarray(self._remaining.pop(key))

    def assign(self, key: str, variable, layout: Layout = identity) -> None:
        """Consumes ``key``, changes its layout and stages it for the Keras ``variable``.

        Raises:
            StateDictMismatchError: ``key`` is missing, or its shape after ``layout`` differs
                from the variable's.
        """
        target_shape = tuple(variable.shape)
        source_array = self.pop(key, f" (for Keras {variable.path!r}, shape {target_shape})")
        array = layout(source_array)
        if tuple(array.shape) != target_shape:
            raise StateDictMismatchError(
                f"{self.source}: shape mismatch for {key!r}: checkpoint {source_array.shape} "
                f"(as Keras layout {array.shape}) but Keras variable {variable.path!r} has "
                f"{target_shape}. Was the model built with the same configuration "
                "(num_classes, width, include_top) as the checkpoint?"
            )
        self._staged.append((variable, array))

    def ignore(self, patterns: Iterable[str]) -> None:
        """Drops the remaining keys that match any regular expression in ``patterns``."""
        compiled = [re.compile(pattern) for pattern in patterns]
        self._remaining = {
            key: value
            for key, value in self._remaining.items()
            if not any(pattern.search(key) for pattern in compiled)
        }

    def finish(self) -> int:
        """Checks that every checkpoint key was used, then assigns every staged array.

        Returns:
            Number of arrays assigned.

        Raises:
            StateDictMismatchError: naming the first unexpected key, its shape and how many
                there are; nothing is assigned.
        """
        if self._remaining:
            first = next(iter(self._remaining))
            raise StateDictMismatchError(
                f"{self.source}: unexpected key {first!r} (shape "
                f"{np.shape(self._remaining[first])}) in the checkpoint; "
                f"{len(self._remaining)} key(s) unused in all: {list(self._remaining)[:8]}. "
                "The checkpoint holds parameters this Keras model does not have."
            )
        for variable, array in self._staged:
            variable.assign(array.astype(variable.dtype))
        count, self._staged = len(self._staged), []
        return count

    def _neighbours(self, key: str) -> list[str]:
        prefix = key.rsplit(".", 2)[0]
        return [k for k in self._remaining if k.startswith(prefix)][:8]


__all__ = [
    "StateDictConsumer",
    "StateDictMismatchError",
    "conv_kernel",
    "dense_kernel",
    "depthwise_kernel",
    "identity",
    "read_state_dict",
]
