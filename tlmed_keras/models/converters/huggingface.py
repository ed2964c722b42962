"""PyTorch-layout state dicts (Hugging Face and torchvision) into Keras variables.

Checkpoints are untrusted files, so they are only ever read as arrays: ``.safetensors``
through the ``safetensors`` package's NumPy API and ``.pth``/``.pt`` through the project's
allow-list unpickler (``torch_pickle``). Nothing here imports torch.

A conversion is a list of ``(checkpoint key, Keras variable, layout change)`` steps consumed
by ``StateDictConsumer``: every key must be used exactly once (or be explicitly ignored), and
every shape must match, otherwise the load stops naming the first offending key. That
strictness is what catches a wrong architecture variant before it trains on garbage.

The Hugging Face part: transformers 5 renamed the BEiT modules (``encoder.layer.N`` ->
``layers.N``, ``attention.attention.query`` -> ``attention.q_proj``, ...) but the files on the
Hub, e.g. ``microsoft/beit-base-patch16-224/model.safetensors``, keep the old names.
``canonical_beit_keys`` maps both spellings onto the current one.
"""

from __future__ import annotations

import os
import pathlib
import re
from collections.abc import Callable, Iterable, Mapping

import numpy as np

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pth", ".pt", ".bin")


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
    """``nn.Conv2d.weight`` [out, in, kh, kw] -> ``Conv2D.kernel`` [kh, kw, in, out]."""
    _require_ndim(weight, 4, "a Conv2d weight [out, in, kh, kw]")
    return weight.transpose(2, 3, 1, 0)


def identity(array: np.ndarray) -> np.ndarray:
    """Biases, LayerNorm scales and other 1-D parameters keep their layout."""
    return array


def _require_ndim(array: np.ndarray, ndim: int, what: str) -> None:
    if array.ndim != ndim:
        raise StateDictMismatchError(f"Expected {what}, got an array of shape {array.shape}.")


# ---- strict consumption ----


class StateDictConsumer:
    """Hands out checkpoint arrays by key and reports what was missing or left over.

    Args:
        state_dict: ``{key: array}`` as read from the checkpoint.
        source: what the checkpoint is, for error messages (e.g. "torchvision AlexNet").
    """

    def __init__(self, state_dict: Mapping[str, np.ndarray], source: str):
        self.source = source
        self._remaining = dict(state_dict)

    def pop(self, key: str) -> np.ndarray:
        """Returns and consumes ``state_dict[key]``.

        Raises:
            StateDictMismatchError: ``key`` is not in the state dict (the message lists the
                closest keys present, to make renamed layers obvious).
        """
        if key not in self._remaining:
            raise StateDictMismatchError(
                f"{self.source}: missing key {key!r} in the checkpoint. Keys present with the "
                f"same prefix: {self._neighbours(key)}. Is this the right architecture/variant?"
            )
        return np.asarray(self._remaining.pop(key))

    def assign(
        self,
        key: str,
        variable,
        layout: Callable[[np.ndarray], np.ndarray] = identity,
    ) -> None:
        """Consumes ``key``, changes its layout and assigns it to a Keras ``variable``.

        Raises:
            StateDictMismatchError: ``key`` is missing, or its shape after ``layout`` differs
                from the variable's.
        """
        source_array = self.pop(key)
        array = layout(source_array)
        target_shape = tuple(variable.shape)
        if tuple(array.shape) != target_shape:
            raise StateDictMismatchError(
                f"{self.source}: shape mismatch for {key!r}: checkpoint {source_array.shape} "
                f"(as Keras layout {array.shape}) but Keras variable {variable.path!r} has "
                f"{target_shape}. Was the model built with the same configuration "
                "(num_classes, width, include_top) as the checkpoint?"
            )
        variable.assign(array.astype(variable.dtype))

    def ignore(self, patterns: Iterable[str]) -> None:
        """Drops the remaining keys that match any regular expression in ``patterns``."""
        compiled = [re.compile(pattern) for pattern in patterns]
        self._remaining = {
            key: value
            for key, value in self._remaining.items()
            if not any(pattern.search(key) for pattern in compiled)
        }

    def finish(self) -> None:
        """Checks that every checkpoint key was used.

        Raises:
            StateDictMismatchError: naming the first unexpected key and how many there are.
        """
        if self._remaining:
            first = next(iter(self._remaining))
            raise StateDictMismatchError(
                f"{self.source}: unexpected key {first!r} (shape "
                f"{np.shape(self._remaining[first])}) in the checkpoint; "
                f"{len(self._remaining)} key(s) unused in all: {list(self._remaining)[:8]}. "
                "The checkpoint holds parameters this Keras model does not have."
            )

    def _neighbours(self, key: str) -> list[str]:
        prefix = key.rsplit(".", 2)[0]
        return [k for k in self._remaining if k.startswith(prefix)][:8]


# ---- Hugging Face BEiT key names ----

# transformers <5 (and the Hub's files) -> transformers >=5 module names. Order matters:
# ``attention.output.dense`` must be renamed before the MLP's ``output.dense``.
_BEIT_LEGACY_RENAMES = (
    (r"(^|\.)encoder\.layer\.(\d+)\.", r"\1layers.\2."),
    (r"\.attention\.attention\.relative_position_bias\.", ".relative_position_bias."),
    (r"\.attention\.attention\.query\.", ".attention.q_proj."),
    (r"\.attention\.attention\.key\.", ".attention.k_proj."),
    (r"\.attention\.attention\.value\.", ".attention.v_proj."),
    (r"\.attention\.output\.dense\.", ".attention.o_proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"\.output\.dense\.", ".mlp.fc2."),
    (r"(^|\.)encoder\.relative_position_bias\.", r"\1shared_position_bias."),
)

_BEIT_BACKBONE_PREFIXES = ("embeddings.", "layers.", "encoder.", "pooler.", "layernorm.")


def canonical_beit_keys(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Renames a BEiT state dict to ``BeitForImageClassification`` names of transformers 5.

    Accepts the Hub's legacy names and the current ones, from ``BeitForImageClassification``
    (``beit.`` prefix) or a bare ``BeitModel`` (no prefix, which gets one).

    Args:
        state_dict: ``{key: array}`` from a BEiT checkpoint.

    Returns:
        A new dict with the same arrays under canonical keys.

    Raises:
        StateDictMismatchError: two keys map to the same canonical name.
    """
    renamed: dict[str, np.ndarray] = {}
    for key, value in state_dict.items():
        new_key = key
        for pattern, replacement in _BEIT_LEGACY_RENAMES:
            new_key = re.sub(pattern, replacement, new_key)
        if new_key.startswith(_BEIT_BACKBONE_PREFIXES):
            new_key = "beit." + new_key
        if new_key in renamed:
            raise StateDictMismatchError(
                f"BEiT checkpoint: keys {key!r} and another both map to {new_key!r}; the file "
                "mixes old and new transformers names."
            )
        renamed[new_key] = value
    return renamed


# ---- torch.nn.functional.interpolate(mode="bilinear", align_corners=False) ----


def _linear_resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """[out, in] weights of torch's 1-D linear resize with half-pixel centres, no antialias."""
    scale = in_size / out_size
    matrix = np.zeros((out_size, in_size), dtype=np.float64)
    for i in range(out_size):
        source = max((i + 0.5) * scale - 0.5, 0.0)  # torch clamps negatives to 0
        low = min(int(np.floor(source)), in_size - 1)
        high = min(low + 1, in_size - 1)
        frac = source - low
        matrix[i, low] += 1.0 - frac
        matrix[i, high] += frac
    return matrix


def bilinear_resize(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resizes ``grid`` [H, W, C] to ``size`` as ``F.interpolate(..., "bilinear")`` does.

    Used on BEiT's relative position bias tables when the image size differs from the
    checkpoint's, so the result equals what transformers computes at run time.
    """
    rows = _linear_resize_matrix(grid.shape[0], size[0])
    cols = _linear_resize_matrix(grid.shape[1], size[1])
    resized = np.einsum("oh,hwc,pw->opc", rows, grid.astype(np.float64), cols)
    return resized.astype(grid.dtype)


__all__ = [
    "StateDictConsumer",
    "StateDictMismatchError",
    "bilinear_resize",
    "canonical_beit_keys",
    "conv_kernel",
    "dense_kernel",
    "identity",
    "read_state_dict",
]
