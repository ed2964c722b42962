"""What "a class" means for each MedMNIST task, and readable class names.

Single-label tasks (binary, multi-class, ordinal) have one class per image. Multi-label
ChestMNIST does not, so we use two views, both documented in the EDA index:

* **members** (counts, mean images, histograms, montages): one group per label holding every
  image positive for it, plus a "no finding" group of images with no positive label. Groups
  overlap, so counts sum to more than the number of images.
* **colour group** (PCA / t-SNE scatter, stratified sampling): a partition, "no finding" or
  the first positive label in catalog order. First-positive favours low label indices, but it
  keeps every image in exactly one colour, which a scatter plot needs.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from tlmed_keras.data.catalog import DatasetInfo

NO_FINDING = "no finding"
MAX_NAME_CHARS = 24


@dataclasses.dataclass(frozen=True)
class ClassView:
    """Class membership of one split, in both views (see the module docstring).

    Attributes:
        names: short, unique display names of the member groups.
        full_names: the catalog names behind ``names`` (``NO_FINDING`` for that group).
        members: bool [K, N]; ``members[k, i]`` is True when image i belongs to group k.
        colour_names: display names of the colour groups (a partition of the images).
        colour: int [N], each image's colour group index into ``colour_names``.
    """

    names: tuple[str, ...]
    full_names: tuple[str, ...]
    members: np.ndarray
    colour_names: tuple[str, ...]
    colour: np.ndarray
    ordered: bool = False  # ordinal grades: drawn with a sequential colour map

    @property
    def counts(self) -> np.ndarray:
        """Number of images in each member group (int64 [K])."""
        return self.members.sum(axis=1).astype(np.int64)

    @property
    def imbalance_ratio(self) -> float:
        """Largest over smallest member-group count (``inf`` when a group is empty)."""
        counts = self.counts
        return float("inf") if counts.min() == 0 else float(counts.max() / counts.min())


def short_name(name: str, task: str = "", max_chars: int = MAX_NAME_CHARS) -> str:
    """A label name short enough for a legend.

    Drops parenthesised detail ("immature granulocytes(myelocytes, ...)" becomes
    "immature granulocytes"), names bare digits ("3" becomes "grade 3" for ordinal tasks,
    "class 3" otherwise) and cuts what is still too long at a word boundary with an ellipsis.
    """
    text = re.sub(r"\s*\(.*?\)\s*", " ", name).strip() or name.strip()
    if text.isdigit():
        text = f"{'grade' if task == 'ordinal-regression' else 'class'} {text}"
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - 1].rsplit(" ", 1)[0].rstrip(" ,;:-")
    return f"{cut}…"


def _unique(names: list[str]) -> tuple[str, ...]:
    # Shortening can make two names equal; a legend must still tell them apart.
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} #{seen[name]}")
    return tuple(out)


def _validated_labels(labels: np.ndarray, info: DatasetInfo) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim == 1:
        labels = labels[:, None]
    width = info.num_classes if info.is_multilabel else 1
    if labels.ndim != 2 or labels.shape[1] != width:
        raise ValueError(
            f"{info.name} labels must have shape [N, {width}] (or [N] for single-label tasks); "
            f"got {labels.shape}."
        )
    if labels.shape[0] == 0:
        raise ValueError(f"{info.name}: no labels given; the split is empty.")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{info.name} labels must be integers; got dtype {labels.dtype}.")
    high = 2 if info.is_multilabel else info.num_classes
    bad = (labels < 0) | (labels >= high)
    if bad.any():
        value = labels[bad].flat[0]
        raise ValueError(
            f"{info.name} label value {value} is out of range: expected 0..{high - 1} "
            f"({info.task}). Are these the labels of another dataset?"
        )
    return labels.astype(np.int64)


def class_view(labels: np.ndarray, info: DatasetInfo) -> ClassView:
    """Builds the class view of ``labels`` ([N, 1], [N] or multi-label [N, L]).

    Raises:
        ValueError: labels whose shape, dtype or values do not fit ``info``'s task.
    """
    labels = _validated_labels(labels, info)
    names = [short_name(n, info.task) for n in info.label_names]
    if not info.is_multilabel:
        index = labels[:, 0]
        members = index[None, :] == np.arange(info.num_classes)[:, None]
        unique = _unique(names)
        ordered = info.task == "ordinal-regression"
        return ClassView(unique, info.label_names, members, unique, index, ordered)
    positive = labels.astype(bool)
    none = ~positive.any(axis=1)
    members = np.concatenate([positive.T, none[None, :]], axis=0)
    # Colour groups share the member groups' order (no finding last), so a class has the
    # same colour in the bar chart and in the scatter plots.
    first = np.where(none, info.num_classes, positive.argmax(axis=1))
    unique = (*_unique(names), NO_FINDING)
    return ClassView(
        names=unique,
        full_names=(*info.label_names, NO_FINDING),
        members=members,
        colour_names=unique,
        colour=first,
    )
