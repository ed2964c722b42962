"""Any decoded image -> 8 bits per channel, the depth MedMNIST's images have.

Grey images deeper than 8 bits (Pillow modes ``I;16``, ``I;16B``, ``I`` and ``F``: 16-bit
PNG and TIFF exports of radiographs, 32-bit integer or float TIFF) are scaled by the image's
own range, not by their container's bit depth: an X-ray export often holds 10-, 12- or 14-bit
data in a 16-bit file, which scaled by 65535 would reach the model nearly black (and Pillow's
``convert("L")`` clips it nearly white). The range is robust: the 0.5th to 99.5th percentile
of the image's values map to 0 and 255, so a few hot pixels or a burned-in white label do not
squeeze the anatomy into a few grey levels. MedMNIST's own sources were mostly 8-bit
exports whose grey levels already span the image (a viewer's display), and its CT sets were
windowed from Hounsfield units; a stretch to the image's range is the nearest equivalent for a
file that carries no window of its own (DICOM files use theirs: ``dicom.read_dicom``).

Transparency is flattened onto black, as before any conversion.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

DEEP_GREY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
TRANSPARENT_MODES = ("RGBA", "LA", "P", "PA")
ROBUST_PERCENTILES = (0.5, 99.5)
PERCENTILE_SAMPLE = 1_000_000  # values the percentiles are estimated from (strided sample)


def to_8bit(image: Image.Image) -> Image.Image:
    """``image`` with 8 bits per channel: deep grey scaled by ``robust_range``, transparency
    flattened onto black, other modes unchanged (``convert`` handles them)."""
    if image.mode in DEEP_GREY_MODES:
        return Image.fromarray(scale_to_uint8(np.asarray(image)), mode="L")
    if image.mode in TRANSPARENT_MODES:
        rgba = image.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(flat, rgba).convert("RGB")
    return image


def robust_range(values: np.ndarray) -> tuple[float, float]:
    """The ``ROBUST_PERCENTILES`` of the finite ``values`` (estimated from an evenly strided
    sample of at most ~2 x ``PERCENTILE_SAMPLE`` of them); the minimum and maximum where the
    percentiles coincide (a picture on a wide flat background); ``(0, 0)`` when none is
    finite."""
    flat = np.asarray(values).reshape(-1)
    sample = flat[:: max(1, flat.size // PERCENTILE_SAMPLE)].astype(np.float64)
    sample = sample[np.isfinite(sample)]
    if not sample.size:
        return 0.0, 0.0
    low, high = np.percentile(sample, ROBUST_PERCENTILES)
    if high <= low:
        finite = flat if np.issubdtype(flat.dtype, np.integer) else flat[np.isfinite(flat)]
        low, high = finite.min(), finite.max()
    return float(low), float(high)


def scale_to_uint8(
    values: np.ndarray, value_range: tuple[float, float] | None = None
) -> np.ndarray:
    """``values`` mapped linearly from ``value_range`` (default: ``robust_range``) to 0-255,
    clipped and rounded; NaN becomes 0, and a range of one value gives all zeros. Works in
    place on one float32 copy: a 23-megapixel mammogram is a few passes over 92 MB."""
    low, high = value_range if value_range is not None else robust_range(values)
    if high <= low:
        return np.zeros(np.shape(values), np.uint8)
    scaled = np.array(values, dtype=np.float32)
    scaled -= np.float32(low)
    scaled *= np.float32(255.0 / (high - low))
    np.clip(scaled, 0.0, 255.0, out=scaled)
    np.nan_to_num(scaled, copy=False, nan=0.0)
    np.rint(scaled, out=scaled)
    return scaled.astype(np.uint8)
