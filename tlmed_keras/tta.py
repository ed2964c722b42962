"""Test-time augmentation (TTA) modes, named once for every flag, the trainer's config and the
evaluation code. The views themselves are built with keras.ops in ``runs/ensemble.py``;
this module imports no Keras, so the command lines check ``--tta`` before a backend starts.
"""

from __future__ import annotations

# A shift moves the image by this fraction of its side, with the edge rows or columns
# repeated: 1/32 of 112 px is 4 px, one source pixel of a 28 px image upsampled to 112.
SHIFT_FRACTION = 1 / 32

MODES = {
    "none": "the image alone",
    "flip": "mean of the image and its horizontal mirror",
    "shift": "mean of the image and its 4 shifts (up, down, left, right) by 1/32 of the side",
    "flip_shift": "mean of shift's 5 views and their 5 horizontal mirrors",
}
NAMES = tuple(MODES)
HELP = "Test-time augmentation: " + "; ".join(f"{k} ({v})" for k, v in MODES.items()) + "."


def mirrors(mode: str) -> bool:
    """Whether ``mode`` averages over horizontal mirrors (refused on sets whose labels name
    a body side)."""
    return mode in ("flip", "flip_shift")


def shifts(mode: str) -> bool:
    """Whether ``mode`` averages over shifted copies."""
    return mode in ("shift", "flip_shift")


def shift_pixels(side: int) -> int:
    """Pixels a ``shift`` view moves an image of ``side`` pixels: at least one."""
    return max(1, round(side * SHIFT_FRACTION))
