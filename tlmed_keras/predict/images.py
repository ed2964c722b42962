"""Image files -> the pixels a MedMNIST model was trained on.

MedMNIST made its images from the source scans as ``medmnist.INFO``'s descriptions say:
centre-cropped when the description says "center-crop" (OCT, pneumonia, retina, blood...),
otherwise the whole image, resized to the stored size (28, 64, 128 or 224 px), with 1
channel for the grey sets and 3 for the colour ones, uint8. ``to_medmnist`` does the same to
any image ``read_image`` decodes: EXIF orientation applied, 8 bits per channel
(``depth.to_8bit``: transparency onto black, 16- and 32-bit grey scaled by the image's own
range), a centre square crop where the dataset's description names one, PIL's bicubic resize
(antialiased when it shrinks; medmnist.INFO does not name the filter its authors used), grey
by PIL's ITU-R 601-2 luma (``L``) and colour by repeating grey into RGB. DICOM files go
through ``dicom.read_dicom`` (its LUTs and window) into the same path. The model's own
``Preprocess`` (resize to the backbone size, normalisation) then runs exactly as in training.

What cannot give a meaningful answer is refused with one line (``ImageFileError``): files
that are not images, images over ``MAX_PIXELS`` (decompression bombs), multi-frame or
undecodable DICOM, and images that are one flat value after conversion.

Needs only numpy, Pillow (and pydicom for DICOM): files are checked before TensorFlow starts.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tlmed_keras.predict.depth import to_8bit

RESAMPLE = Image.Resampling.BICUBIC
CROP_WORDS = ("center-crop", "center-cropped", "centre-crop")
# Larger than any single radiograph or mammogram (a 4096 x 5625 mammogram is 23 MP) and small
# enough that decoding one stays under ~1 GB; a file declaring more is a decompression bomb.
MAX_PIXELS = 100_000_000
ACCEPTED = "PNG, JPEG, TIFF (8/16/32-bit grey, RGB, palette) or single-frame DICOM"


class ImageFileError(ValueError):
    """An input file that is missing, not a decodable image, or no usable picture."""


def read_image(path: os.PathLike | str) -> Image.Image:
    """Opens and fully decodes one image file, upright (EXIF orientation applied).

    DICOM files (``.dcm``/``.dicom`` or the ``DICM`` preamble) come back as 8-bit ``L`` or
    ``RGB`` images, their modality LUT, VOI LUT or window and MONOCHROME1 applied.

    Raises:
        ImageFileError: the file is missing, a folder, not a decodable image, larger than
            ``MAX_PIXELS``, or a DICOM file predict cannot use (see ``dicom.read_dicom``).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ImageFileError(f"No image file at {path!r}: pass paths of {ACCEPTED} files.")
    from tlmed_keras.predict import dicom  # pydicom loads only when a DICOM file comes

    if dicom.looks_like_dicom(path):
        return dicom.read_dicom(path)
    try:
        with _only_our_pixel_limit(), Image.open(path) as image:
            check_pixel_count(path, *image.size)  # from the header, before any decoding
            image.load()
            return ImageOps.exif_transpose(image)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ImageFileError(
            f"{path!r} is not an image Pillow can read ({type(e).__name__}: {e}). Pass "
            f"{ACCEPTED} files."
        ) from e


@contextlib.contextmanager
def _only_our_pixel_limit():
    """``MAX_PIXELS`` as the one limit: Pillow's own check (a warning above 89 MP, an error
    above 179 MP, its wording) is off while one file opens, and restored after."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def check_pixel_count(path: str, width: int, height: int) -> None:
    """Refuses an image declaring more than ``MAX_PIXELS`` before any pixel is decoded.

    Raises:
        ImageFileError: ``width * height > MAX_PIXELS``.
    """
    if width * height > MAX_PIXELS:
        raise ImageFileError(
            f"{path!r} declares {width}x{height} = {width * height:,} pixels, over the limit "
            f"of {MAX_PIXELS:,}: refused unread, as a possible decompression bomb. Downscale "
            "it (e.g. to 2048 px on its longer side) and pass the smaller copy."
        )


def read_images(paths: Sequence[os.PathLike | str]) -> tuple[list, list[str]]:
    """Every file of ``paths`` that predict can use, and one line for each it refuses.

    Returns:
        ``(kept, refusals)``: ``kept`` holds ``(path, image)`` pairs in the given order;
        ``refusals`` the one-line reason of each refused file (unreadable, too large, or one
        flat value once brought to 8 bits).
    """
    kept, refusals = [], []
    for path in paths:
        try:
            image = read_image(path)
            check_not_constant(np.asarray(to_8bit(image)), os.fspath(path))
        except ImageFileError as e:
            refusals.append(str(e))
        else:
            kept.append((os.fspath(path), image))
    return kept, refusals


def check_not_constant(pixels: np.ndarray, path: str) -> None:
    """Refuses pixels that hold one value only (a flat grey, a fully transparent PNG).

    Raises:
        ImageFileError: every pixel of ``pixels`` is equal.
    """
    flat = np.asarray(pixels).reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        raise ImageFileError(
            f"{path!r} is one flat value ({flat[0]}) once converted: it holds no picture, so "
            "any class the model gave it would be meaningless. Pass the scan itself (a "
            "transparent PNG, a blank export or a 1-pixel image is refused)."
        )


def crops_centre(description: str) -> bool:
    """Whether MedMNIST centre-cropped this dataset's sources (from its INFO description)."""
    text = description.lower()
    return any(word in text for word in CROP_WORDS)


def centre_square(image: Image.Image) -> Image.Image:
    """The largest centred square of ``image``."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))


def to_medmnist(image: Image.Image, size: int, channels: int, centre_crop: bool) -> np.ndarray:
    """``image`` as MedMNIST stores a picture: uint8 ``[size, size, channels]``.

    Args:
        image: a decoded image of any size and mode (8-, 16- or 32-bit).
        size: the dataset's stored side in pixels.
        channels: 1 (grey sets) or 3.
        centre_crop: crop the centred square first (``crops_centre`` of the dataset).

    Raises:
        ValueError: ``channels`` other than 1 or 3.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}.")
    image = to_8bit(image).convert("L" if channels == 1 else "RGB")
    if centre_crop:
        image = centre_square(image)
    image = image.resize((size, size), RESAMPLE)
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[..., None] if channels == 1 else pixels
