"""How often predict's training-range warning fires, on real scans and on garbage.

    uv run python -m experiments.predict_inputs.rates --medmnist_dir=../shared/data/medmnist \
        --photos_dir=../shared/data/photos

For BreastMNIST and RetinaMNIST (28 px): the range of the training split's statistics
(``tlmed_keras.predict.familiar``), then the share of validation and test images, 20
uniform-noise images, a near-white image, each photo, and the other dataset's test images
(converted to this one's channels) that fall outside it.
"""

from __future__ import annotations

import pathlib

import numpy as np
from absl import flags
from PIL import Image

from tlmed_keras import cli
from tlmed_keras.predict import familiar
from tlmed_keras.predict.images import to_medmnist

flags.DEFINE_string("medmnist_dir", "../shared/data/medmnist", "breastmnist/retinamnist.npz.")
flags.DEFINE_string("photos_dir", "../shared/data/photos", "PNG photos to try (cats, cups).")
FLAGS = flags.FLAGS
SETS = {"breastmnist": False, "retinamnist": True}  # name -> MedMNIST centre-cropped it


def _split(folder: pathlib.Path, name: str, split: str) -> np.ndarray:
    with np.load(folder / f"{name}.npz") as data:
        images = data[f"{split}_images"]
    return images[..., None] if images.ndim == 3 else images


def _flagged(known: familiar.PixelRange, images: np.ndarray) -> str:
    hits = sum(familiar.outside(known, image) is not None for image in images)
    return f"{hits}/{len(images)} ({100 * hits / len(images):.1f} %)"


def _garbage(folder: pathlib.Path, photos: pathlib.Path, name: str, crop: bool) -> dict:
    channels = _split(folder, name, "test").shape[-1]
    other = next(n for n in SETS if n != name)
    others = [Image.fromarray(i.squeeze()) for i in _split(folder, other, "test")]
    white = np.full((1, 28, 28, channels), 254, np.uint8)
    white[0, 0, 0] = 0
    found = {
        "uniform noise": np.random.default_rng(0).integers(0, 256, (20, 28, 28, channels)),
        "near-white": white,
        f"{other} test": np.stack([to_medmnist(i, 28, channels, False) for i in others]),
    }
    for photo in sorted(photos.glob("*.png")):
        found[photo.stem] = to_medmnist(Image.open(photo), 28, channels, crop)[None]
    return {k: v.astype(np.uint8) for k, v in found.items()}


def main(argv: list[str]) -> None:
    del argv
    folder, photos = pathlib.Path(FLAGS.medmnist_dir), pathlib.Path(FLAGS.photos_dir)
    for name, crop in SETS.items():
        known = familiar.pixel_range(_split(folder, name, "train"), name, 28)
        ranges = zip(known.names, known.low, known.high, strict=True)
        print(f"{name}: " + ", ".join(f"{n} {lo:.2f} to {hi:.2f}" for n, lo, hi in ranges))
        for split in ("val", "test"):
            print(f"  {split}: {_flagged(known, _split(folder, name, split))}")
        for label, images in _garbage(folder, photos, name, crop).items():
            print(f"  {label}: {_flagged(known, images)}")


if __name__ == "__main__":
    cli.run(main)
