"""Is an input like the images the model was trained on? A warning, not a verdict.

A classifier answers every input with a probability, even a photo of a cat or an X-ray that
reached it blank. ``predict`` therefore compares each image, after the same conversion that
feeds the model (``images.to_medmnist``), with the model's training images on simple
statistics: the mean of each channel, the standard deviation, and texture (the mean absolute
difference of neighbouring pixels divided by the standard deviation: noise and photographs
are rougher or smoother than the scans). An image with any statistic outside the training
images' range (their minimum to maximum) gets a warning line; its probabilities are still
printed. On the MedMNIST files this flags 1.3 % / 1.9 % of BreastMNIST's validation / test
images and 0 % / 1.2 % of RetinaMNIST's, and every uniform-noise image and the cat photo; it
cannot flag an image whose brightness, contrast and texture match the scans (a photo of grey
coffee passed), so no warning is no proof that an image is a fitting scan.

The range is computed once from the training split of the run's dataset file (the one its
config.json names; cross-fitted runs: their training folds) and cached in the run directory
as ``pixel_range.json``, so old run directories work too. An exported SavedModel uses the run
directory its metadata names if it is still there, else the dataset file in the default data
folder; with neither, predict says once that it did not check.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
from typing import Any

import numpy as np

RANGE_FILE = "pixel_range.json"
CONFIG_FILE = "config.json"  # the run directory's resolved config (train.rundir)
CHUNK = 4096  # images per pass, so a large training split is summarised in bounded memory


@dataclasses.dataclass(frozen=True)
class PixelRange:
    """The minimum and maximum of each statistic over a dataset's training images."""

    dataset: str
    size: int
    images: int
    names: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> PixelRange:
        return cls(
            dataset=str(values["dataset"]),
            size=int(values["size"]),
            images=int(values["images"]),
            names=tuple(values["names"]),
            low=tuple(float(v) for v in values["low"]),
            high=tuple(float(v) for v in values["high"]),
        )


def statistic_names(channels: int) -> tuple[str, ...]:
    """The names of ``statistics``' columns for images of ``channels`` channels."""
    means = ("mean",) if channels == 1 else tuple(f"mean {c}" for c in "RGB"[:channels])
    return (*means, "sd", "texture")


def statistics(images: np.ndarray) -> np.ndarray:
    """Per image of uint8 ``[B, H, W, C]``: each channel's mean, the sd, the texture."""
    x = np.asarray(images, dtype=np.float32)
    means = x.mean(axis=(1, 2))
    sd = x.std(axis=(1, 2, 3))
    across = np.abs(np.diff(x, axis=2)).mean(axis=(1, 2, 3))
    down = np.abs(np.diff(x, axis=1)).mean(axis=(1, 2, 3))
    texture = (across + down) / 2 / np.maximum(sd, 1e-6)
    return np.concatenate([means, sd[:, None], texture[:, None]], axis=1)


def pixel_range(images: np.ndarray, dataset: str, size: int) -> PixelRange:
    """The range of ``statistics`` over ``images`` (uint8 ``[N, H, W]`` or ``[N, H, W, C]``)."""
    images = images[..., None] if images.ndim == 3 else images
    stats = np.concatenate(
        [statistics(images[i : i + CHUNK]) for i in range(0, len(images), CHUNK)]
    )
    return PixelRange(
        dataset=dataset,
        size=size,
        images=len(images),
        names=statistic_names(images.shape[-1]),
        low=tuple(float(v) for v in stats.min(axis=0)),
        high=tuple(float(v) for v in stats.max(axis=0)),
    )


def outside(known: PixelRange, pixels: np.ndarray) -> str | None:
    """Which statistics of one image (uint8 ``[H, W, C]``) lie outside ``known``, said in
    words, or None when all lie inside."""
    values = statistics(pixels[None])[0]
    misses = [
        f"{name} {value:.2f} (training {low:.2f} to {high:.2f})"
        for name, value, low, high in zip(known.names, values, known.low, known.high, strict=True)
        if not low <= value <= high
    ]
    return "; ".join(misses) or None


def warning_line(path: str, reason: str, known: PixelRange) -> str:
    """The one warning line for an image outside the training images' range."""
    return (
        f"warning: {path} does not look like {known.dataset}'s training images ({reason}): "
        "its probabilities are not to be trusted; check that it is a scan of the kind the "
        "model was trained on, converted as such."
    )


def range_for_run(workdir: os.PathLike | str) -> PixelRange | None:
    """The cached range of a run directory, computed and cached on first use; None when the
    run's dataset file is not on this machine (nothing is downloaded)."""
    root = pathlib.Path(workdir)
    cached = root / RANGE_FILE
    if cached.is_file():
        return PixelRange.from_json(json.loads(cached.read_text()))
    # The few keys needed, read as training wrote them (no dependency on the trainer's code).
    config = json.loads((root / CONFIG_FILE).read_text())
    dataset, size = config["data"], int(config.get("size", 28))
    images = _training_images(
        dataset,
        size,
        config.get("data_dir") or None,
        int(config.get("cv_folds") or 0),
        int(config.get("cv_fold") or 0),
    )
    if images is None:
        return None
    known = pixel_range(images, dataset, size)
    _cache(cached, known)
    return known


def range_for_dataset(dataset: str, size: int) -> PixelRange | None:
    """The range of a dataset's training split from the default data folder, or None."""
    images = _training_images(dataset, size, None, 0, 0)
    return None if images is None else pixel_range(images, dataset, size)


def _training_images(dataset, size, data_dir, cv_folds, cv_fold) -> np.ndarray | None:
    from tlmed_keras.data import folds, load_arrays
    from tlmed_keras.data.errors import MedMNISTFileError

    try:
        splits = load_arrays(dataset, size, data_dir, download=False, verify=False)
    except MedMNISTFileError:
        return None
    if cv_folds:
        splits = folds.cross_fit(splits, cv_folds, cv_fold)
    return splits["train"][0]


def _cache(path: pathlib.Path, known: PixelRange) -> None:
    """Writes the range beside the run (atomically); a run directory it cannot be written to
    (read-only, or the name taken) is left as it is: the range is computed again next time."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        temporary.write_text(json.dumps(known.to_json(), indent=2) + "\n")
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)


def training_range(predictors) -> tuple[PixelRange | None, str | None]:
    """The training images' range for ``predictors`` (an ensemble: its first member's run,
    all share the dataset), and a note for the user when it cannot be had."""
    first = predictors[0]
    spec = first.spec
    workdir = getattr(first, "workdir", None)
    if workdir and (pathlib.Path(workdir) / CONFIG_FILE).is_file():
        known = range_for_run(workdir)
    else:
        known = range_for_dataset(spec.dataset, spec.size)
    if known is not None:
        return known, None
    return None, (
        f"note: the images were not compared with {spec.dataset}'s training images: neither "
        "the training run's directory nor the dataset file is on this machine (predict "
        "downloads nothing). Put the dataset file in medmnist's ~/.medmnist or pass "
        "--workdir=RUN to get that check."
    )
