"""The MedMNIST v2 2D catalog, read from ``medmnist.INFO`` (never retyped here)."""

from __future__ import annotations

import dataclasses
import functools
import re

from tlmed_keras._medmnist import info_module

SIZES = (28, 64, 128, 224)
SPLITS = ("train", "val", "test")
TASKS = ("binary-class", "multi-class", "ordinal-regression", "multi-label, binary-class")
_SIDE = re.compile(r"\b(left|right)\b", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What we need to know about one MedMNIST dataset at one size."""

    name: str
    size: int
    task: str
    label_names: tuple[str, ...]
    channels: int
    split_sizes: dict[str, int]
    url: str
    md5: str
    description: str
    license: str

    @property
    def num_classes(self) -> int:
        """Number of classes (or of labels, for multi-label)."""
        return len(self.label_names)

    @property
    def is_multilabel(self) -> bool:
        return self.task.startswith("multi-label")

    @property
    def sided_labels(self) -> tuple[str, ...]:
        """Labels that name a body side ("kidney-left" in the OrganMNIST sets). A horizontal
        mirror can turn such an image into its other side's class, so these sets get no
        flip augmentation and no flip TTA; empty for every set whose labels have no side."""
        return sided_labels(self.label_names)

    @property
    def filename(self) -> str:
        """The file name medmnist uses: ``bloodmnist.npz`` at 28 px, ``bloodmnist_64.npz`` else."""
        return f"{self.name}.npz" if self.size == 28 else f"{self.name}_{self.size}.npz"

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape of one image as stored in the npz (grayscale sets have no channel axis)."""
        hw = (self.size, self.size)
        return hw if self.channels == 1 else (*hw, self.channels)


def sided_labels(label_names) -> tuple[str, ...]:
    """The names among ``label_names`` that name a body side (left or right, as a word)."""
    return tuple(str(name) for name in label_names if _SIDE.search(str(name)))


@functools.cache
def _info() -> dict:
    return info_module().INFO


def dataset_names() -> tuple[str, ...]:
    """Names of every 2D MedMNIST dataset (the 3D ones are out of scope)."""
    return tuple(name for name, meta in _info().items() if not name.endswith("3d"))


def get_info(name: str, size: int = 28) -> DatasetInfo:
    """Returns the catalog entry of dataset ``name`` at ``size`` pixels.

    Raises:
        ValueError: unknown dataset name or size, with the accepted values.
    """
    key = name.lower()
    if key not in dataset_names():
        raise ValueError(
            f"Unknown MedMNIST dataset {name!r}. Accepted: {', '.join(dataset_names())}."
        )
    if size not in SIZES:
        raise ValueError(f"Unknown MedMNIST size {size!r} for {key}. Accepted: {SIZES}.")
    meta = _info()[key]
    suffix = "" if size == 28 else f"_{size}"
    labels = meta["label"]
    return DatasetInfo(
        name=key,
        size=size,
        task=meta["task"],
        label_names=tuple(labels[str(i)] for i in range(len(labels))),
        channels=int(meta["n_channels"]),
        split_sizes=dict(meta["n_samples"]),
        url=meta[f"url{suffix}"],
        md5=meta[f"MD5{suffix}"],
        description=meta["description"],
        license=meta.get("license", ""),
    )


def default_root() -> str | None:
    """medmnist's own cache folder (``~/.medmnist``), so earlier downloads are reused."""
    return info_module().DEFAULT_ROOT
