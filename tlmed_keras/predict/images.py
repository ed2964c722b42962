"""Ordinary image files -> the pixels a MedMNIST model was trained on.

MedMNIST made its images from the source scans as ``medmnist.INFO``'s descriptions say:
centre-cropped when the description says "center-crop" (OCT, pneumonia, retina, blood...),
otherwise the whole image, resized to the stored size (28, 64, 128 or 224 px), with 1
channel for the grey sets and 3 for the colour ones, uint8. ``to_medmnist`` does the same to
any PNG/JPEG (any size, RGB, RGBA, grey or palette): EXIF orientation applied, a centre square
crop where the dataset's description names one, PIL's bicubic resize (antialiased when it
shrinks; medmnist.INFO does not name the filter its authors used), grey by PIL's ITU-R 601-2
luma (``L``) and colour by repeating grey into RGB. The model's own ``Preprocess`` (resize to
the backbone size, normalisation) then runs exactly as in training.

Needs only numpy and Pillow: files are checked before TensorFlow starts.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

RESAMPLE = Image.Resampling.BICUBIC
CROP_WORDS = ("center-crop", "center-cropped", "centre-crop")


class ImageFileError(ValueError):
    """An input file that is missing or is not an image Pillow can decode."""


def read_image(path: os.PathLike | str) -> Image.Image:
    """Opens and fully decodes one image file, upright (EXIF orientation applied).

    Raises:
        ImageFileError: the file is missing, a folder, or not a decodable image.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ImageFileError(f"No image file at {path!r}: pass paths of PNG or JPEG files.")
    try:
        with Image.open(path) as image:
            image.load()
            return ImageOps.exif_transpose(image)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ImageFileError(
            f"{path!r} is not an image Pillow can read ({type(e).__name__}: {e}). Pass PNG or "
            "JPEG files (any size; RGB, RGBA, grey or palette)."
        ) from e


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
        image: a decoded image of any size and mode.
        size: the dataset's stored side in pixels.
        channels: 1 (grey sets) or 3.
        centre_crop: crop the centred square first (``crops_centre`` of the dataset).

    Raises:
        ValueError: ``channels`` other than 1 or 3.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}.")
    if image.mode in ("RGBA", "LA", "P", "PA"):  # transparency: flatten onto black
        rgba = image.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(flat, rgba)
    image = image.convert("L" if channels == 1 else "RGB")
    if centre_crop:
        image = centre_square(image)
    image = image.resize((size, size), RESAMPLE)
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[..., None] if channels == 1 else pixels
