"""Hugging Face checkpoints: the BEiT key-naming map over the ``state_dict`` engine.

transformers 5 renamed the BEiT modules (``encoder.layer.N`` -> ``layers.N``,
``attention.attention.query`` -> ``attention.q_proj``, ...) but the files on the Hub, e.g.
``microsoft/beit-base-patch16-224/model.safetensors``, keep the old names.
``canonical_beit_keys`` maps both spellings onto the current one; ``models.beit`` then hands
each canonical key to a ``StateDictConsumer``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

# The engine's names, still importable from here.
from tlmed_keras.models.converters.state_dict import (
    StateDictConsumer,
    StateDictMismatchError,
    conv_kernel,
    dense_kernel,
    identity,
    read_state_dict,
)

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
