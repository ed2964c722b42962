"""DICOM files -> the 8-bit picture a radiologist's viewer shows, for ``images.read_image``.

The stored values go through the Modality LUT (Rescale Slope/Intercept: e.g. CT to
Hounsfield units), then the file's VOI LUT or first window (Window Center/Width), and are
mapped from that window's output range to 0-255, as a viewer displays them; MedMNIST's CT
sets were windowed the same way. A file without a window is scaled by its own robust range
(``depth.robust_range``). MONOCHROME1 (white is 0) is inverted. Colour files come back as
RGB (palette colour through its colour LUT).

Refused with one line: multi-frame files (a CT/MR series or a cine loop: predict takes one
image; export the frame or slice you mean), files without pixel data, and compressed
transfer syntaxes pydicom cannot decode here (JPEG-LS, for one, needs pylibjpeg or gdcm).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from typing import NoReturn

import numpy as np
from PIL import Image

from tlmed_keras.predict.depth import scale_to_uint8

DICOM_SUFFIXES = (".dcm", ".dicom")
PREAMBLE = 128  # DICOM Part 10: 128 bytes, then "DICM"
MONOCHROME = ("MONOCHROME1", "MONOCHROME2")


def looks_like_dicom(path: os.PathLike | str) -> bool:
    """A ``.dcm``/``.dicom`` name, or the Part 10 ``DICM`` marker after the preamble."""
    if os.fspath(path).lower().endswith(DICOM_SUFFIXES):
        return True
    with open(path, "rb") as f:
        head = f.read(PREAMBLE + 4)
    return head[PREAMBLE:] == b"DICM"


def read_dicom(path: os.PathLike | str) -> Image.Image:
    """The picture of a single-frame DICOM file: ``L`` (grey) or ``RGB``, 8 bits.

    Raises:
        ImageFileError: not readable as DICOM, no pixel data, several frames, more than
            ``images.MAX_PIXELS`` pixels, or a transfer syntax pydicom cannot decode.
    """
    path = os.fspath(path)
    with _quiet_pydicom():
        return _picture(path)


@contextlib.contextmanager
def _quiet_pydicom():
    """pydicom warns (and logs) about tolerated deviations from the standard; the image is
    read all the same, so they would only be noise around predict's own one-line messages."""
    logger = logging.getLogger("pydicom")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        logger.setLevel(level)


def _picture(path: str) -> Image.Image:
    """``read_dicom`` without the quieting."""
    from tlmed_keras.predict.images import check_pixel_count

    dataset = _dataset(path)
    frames = int(dataset.get("NumberOfFrames") or 1)
    if frames > 1:
        _refuse(
            path,
            f"is a multi-frame DICOM ({frames} frames)",
            "save the one frame or slice you mean as its own file (e.g. with pydicom, "
            "dcmtk or your viewer) and pass that",
        )
    check_pixel_count(path, int(dataset.get("Columns", 0)), int(dataset.get("Rows", 0)))
    pixels = _decoded(path, dataset)
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric in MONOCHROME:
        return Image.fromarray(_grey(pixels, dataset, photometric), mode="L")
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        pixels = apply_color_lut(pixels, dataset)
    rgb = pixels if pixels.dtype == np.uint8 else scale_to_uint8(pixels)
    return Image.fromarray(np.ascontiguousarray(rgb), mode="RGB")


def _refuse(path: str, what: str, todo: str) -> NoReturn:
    from tlmed_keras.predict.images import ACCEPTED, ImageFileError

    raise ImageFileError(f"{path!r} {what}: predict takes {ACCEPTED}; {todo}.")


def _dataset(path: str):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        dataset = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, ValueError, EOFError) as e:
        _refuse(
            path,
            f"is not a DICOM file pydicom can read ({type(e).__name__}: {e})",
            "pass a DICOM Part 10 file or one of the other accepted formats",
        )
    if "PixelData" not in dataset:
        kind = dataset.get("SOPClassUID")
        _refuse(
            path,
            f"holds no image (no Pixel Data; SOP class {getattr(kind, 'name', kind)})",
            "pass the DICOM image itself",
        )
    return dataset


def _decoded(path: str, dataset) -> np.ndarray:
    """The stored pixel values; a compressed syntax without a decoder here is named."""
    syntax = dataset.file_meta.TransferSyntaxUID
    try:
        return dataset.pixel_array
    except (RuntimeError, NotImplementedError, ValueError) as e:
        if syntax.is_compressed:
            _refuse(
                path,
                f"is compressed as {syntax.name}, which pydicom cannot decode here",
                "decompress it first (dcmtk: dcmdjpls or dcmdjpeg; gdcm: gdcmconv --raw) "
                "or install pylibjpeg with its plugins",
            )
        _refuse(
            path,
            f"has pixel data pydicom cannot decode ({type(e).__name__}: {e})",
            "re-export it uncompressed from your viewer or PACS",
        )


def _grey(stored: np.ndarray, dataset, photometric: str) -> np.ndarray:
    """Modality LUT, VOI LUT or window, 8 bits, MONOCHROME1 inverted."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_modality_lut(stored, dataset)
    try:
        value_range = _voi_output_range(dataset)
        if value_range is not None:
            values = apply_voi_lut(values, dataset)
    except (ValueError, NotImplementedError):  # a malformed window or LUT: show the range
        value_range = None
    grey = scale_to_uint8(values, value_range)
    return 255 - grey if photometric == "MONOCHROME1" else grey


def _voi_output_range(dataset) -> tuple[float, float] | None:
    """What the file's VOI stage maps to (its display black and white), or None if it has
    none. A VOI LUT spans 0 to 2^bits - 1 (PS3.3 C.11.2.1.1); a window's range is what
    pydicom's windowing gives the lowest and highest inputs."""
    from pydicom.pixels import apply_voi_lut

    if dataset.get("VOILUTSequence"):
        bits = int(dataset.VOILUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    if "WindowCenter" not in dataset or "WindowWidth" not in dataset:
        return None
    low, high = apply_voi_lut(np.array([-1e300, 1e300]), dataset)
    return float(low), float(high)
