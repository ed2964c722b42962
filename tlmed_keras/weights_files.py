"""Genuine weight files found by their published names, before any download.

A ``--weights`` value that is not an existing path (``mobilenet_v2-b0353104.pth``, or a
flagfile's ``../shared/weights/torchvision/mobilenet_v2-b0353104.pth`` run from elsewhere)
is looked up by its file name in ``--weights_dir`` (searched recursively) and then in the
caches where PyTorch and Keras keep downloaded weights (``cache_folders``). With
``--weights=imagenet``, a backbone whose ImageNet weights are a published file
(``ModelSpec.published_file``) takes that file from the same places before its own download.

No Keras here: the trainer's flag checks use it before a backend starts.
"""

from __future__ import annotations

import os
from pathlib import Path

from tlmed_keras.errors import TlmedError

KEYWORDS = ("imagenet", "none")


class WeightsNotFoundError(TlmedError, ValueError):
    """A named weights file is nowhere it was looked for (a bad flag value: ValueError, as
    every other check of the trainer's flags)."""

    exit_code = 2  # fix the command line: pass the folder that holds the file


def torch_hub_checkpoints() -> Path:
    """Where ``torch.hub`` caches downloaded weights: ``$TORCH_HOME/hub/checkpoints``
    (default ``$XDG_CACHE_HOME/torch``, ``~/.cache/torch``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    home = os.environ.get("TORCH_HOME") or os.path.join(cache, "torch")
    return Path(home).expanduser() / "hub" / "checkpoints"


def keras_models_cache() -> Path:
    """Where Keras (and this project's converters) cache downloaded weights:
    ``$KERAS_HOME/models`` (default ``~/.keras/models``)."""
    return Path(os.environ.get("KERAS_HOME") or os.path.join("~", ".keras")).expanduser() / "models"


def cache_folders() -> list[Path]:
    """The usual weight caches, searched (not recursively) after ``--weights_dir``."""
    return [torch_hub_checkpoints(), keras_models_cache()]


def check_weights_dir(weights_dir: str) -> None:
    """Raises WeightsNotFoundError when ``--weights_dir`` is given but is not a folder."""
    if weights_dir and not Path(weights_dir).expanduser().is_dir():
        raise WeightsNotFoundError(
            f"Bad --weights_dir={weights_dir!r}: no such folder. Pass the folder that holds "
            "the weight files (it is searched recursively), or leave it out."
        )


def locate(file_name: str, weights_dir: str = "") -> Path | None:
    """``file_name`` in ``weights_dir`` (recursively; the shortest path, then alphabetical,
    wins) or in ``cache_folders()``; None when it is in neither."""
    if weights_dir:
        found = sorted(
            Path(weights_dir).expanduser().rglob(file_name), key=lambda p: (len(p.parts), str(p))
        )
        found = [p for p in found if p.is_file()]
        if found:
            return found[0]
    for folder in cache_folders():
        if (folder / file_name).is_file():
            return folder / file_name
    return None


def find_weights_file(weights: str, weights_dir: str = "") -> str:
    """``--weights`` as a file the trainer can load: a keyword or an existing path as given,
    else the file of that name found by ``locate``.

    Raises:
        WeightsNotFoundError: one line naming the file, the folders searched and the flag
            that fixes it.
    """
    if weights.lower() in KEYWORDS or os.path.isfile(weights):
        return weights
    check_weights_dir(weights_dir)
    name = os.path.basename(weights)
    found = locate(name, weights_dir) if name else None
    if found is None:
        searched = [f"--weights_dir={weights_dir} (recursively)"] if weights_dir else []
        searched += [str(folder) for folder in cache_folders()]
        raise WeightsNotFoundError(
            f"Bad --weights={weights!r}: no such file, and {name!r} is not in "
            f"{', '.join(searched)}. Pass --weights_dir=DIR of a folder that holds it (e.g. "
            "../shared/weights), or --weights=PATH of the file."
        )
    return str(found)


def resolve_weights(weights: str, weights_dir: str = "", published_file: str = "") -> str:
    """What the model is built from: ``find_weights_file(weights, weights_dir)``, except that
    ``imagenet`` becomes the local copy of ``published_file`` (the backbone's published
    ImageNet file, if it has one) where ``locate`` finds it; else it stays ``imagenet`` (the
    backbone's own download, once, into Keras' cache).

    Raises:
        WeightsNotFoundError: see ``find_weights_file``.
    """
    if weights.lower() == "imagenet" and published_file:
        check_weights_dir(weights_dir)
        found = locate(published_file, weights_dir)
        return str(found) if found else weights
    return find_weights_file(weights, weights_dir)
