"""The model registry: name -> everything fine-tuning needs.

A ``ModelSpec`` says how to build a backbone without its ImageNet head (pooled features
``[B, F]``), its native and smallest input size, the normalisation its weights expect (a
preset of ``tlmed_keras.data.preprocess``), where its ImageNet weights come from, and how it
splits into blocks for top-N unfreezing. ``build_classifier`` adds a fresh head;
``set_trainable`` freezes / unfreezes.

Weights (``weights=``): "imagenet" (the canonical source, downloaded once into Keras' cache),
"none" (random init), or a local file: Keras weights (``.weights.h5``, legacy ``.h5``,
``.keras`` — weights only, no code is loaded), or a framework checkpoint (``.pth``/``.pt``,
``.safetensors``) for models with a converter.
"""

from __future__ import annotations

import importlib
import os
import pathlib
import pkgutil

import keras
import numpy as np

from tlmed_keras.data.preprocess import Normalization, get_normalization
from tlmed_keras.models import REGISTRY_API, batch_norm, folding
from tlmed_keras.models import spec as spec_module
from tlmed_keras.models.features import FeatureSplit
from tlmed_keras.models.spec import ModelSpec, WeightsUnavailableError  # noqa: F401 (API)

# The package re-exports these lazily (``tlmed_keras.models.__getattr__``).
__all__ = [*REGISTRY_API, "parse_weights"]

KERAS_WEIGHT_SUFFIXES = (".weights.h5", ".h5", ".hdf5", ".keras")
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
TRAINABLE_MODES = ("frozen", "all", "an int N (top N blocks)")

# --- collecting the family modules' specs ---------------------------------------------------

# Every module of this package registers its backbones on import (see ``spec.register``),
# except these, which are the zoo's machinery. A new family file needs no line here.
_NOT_FAMILIES = frozenset({"__main__", "batch_norm", "features", "folding", "registry", "spec"})
# The order ``models --list`` has always shown; other family modules follow alphabetically.
_LISTING_ORDER = (
    "keras_apps",
    "kerashub",
    "mobilenet_v2_torchvision",
    "alexnet",
    "squeezenet",
    "beit",
)

# name -> spec in registration order (the listing order, unless a test imported a family
# module first). Filled on first use: importing keras-hub costs seconds.
_SPECS: dict[str, ModelSpec] = spec_module.REGISTERED
_COLLECTED: list[str] = []  # the family modules imported


def _family_modules() -> list[str]:
    package = __name__.rpartition(".")[0]
    found = {
        info.name
        for info in pkgutil.iter_modules(importlib.import_module(package).__path__)
        if not info.ispkg and not info.name.startswith("_") and info.name not in _NOT_FAMILIES
    }
    listed = [name for name in _LISTING_ORDER if name in found]
    return listed + sorted(found - set(listed))


def _all_specs() -> dict[str, ModelSpec]:
    if not _COLLECTED:
        package = __name__.rpartition(".")[0]
        for module in _family_modules():
            importlib.import_module(f"{package}.{module}")
            _COLLECTED.append(module)
    return _SPECS


def register_layers(model: str | None = None) -> None:
    """Imports every family module, which registers its custom Keras layers, and runs a
    family's ``import_layers(spec)`` where it has one (keras-hub's classes are imported only
    there, for a model of that family, or for any when ``model`` is None or unknown): a
    saved ``model.keras`` of AlexNet, SqueezeNet, BEiT or a keras-hub backbone loads only
    then."""
    spec = _all_specs().get(model) if model else None
    package = __name__.rpartition(".")[0]
    for module in _COLLECTED:
        hook = getattr(importlib.import_module(f"{package}.{module}"), "import_layers", None)
        if hook is not None:
            hook(spec)


def model_names() -> tuple[str, ...]:
    """Registered model names, in listing order."""
    return tuple(_all_specs())


def get_spec(name: str) -> ModelSpec:
    """The ``ModelSpec`` of ``name``.

    Raises:
        ValueError: unknown name; the message lists the valid ones.
    """
    spec = _all_specs().get(name)
    if spec is None:
        raise ValueError(f"Unknown model {name!r}. Valid names: {', '.join(model_names())}.")
    return spec


def parse_weights(weights: str | os.PathLike | None) -> str | pathlib.Path | None:
    """Normalises a ``--weights`` value to None, "imagenet" or an existing file path.

    Raises:
        FileNotFoundError: a path that does not exist (with the accepted keywords).
    """
    if weights is None or (isinstance(weights, str) and weights.lower() == "none"):
        return None
    if isinstance(weights, str) and weights.lower() == "imagenet":
        return "imagenet"
    path = pathlib.Path(weights).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"weights={str(weights)!r} is neither 'imagenet', 'none' nor an existing file."
        )
    return path


def _build(spec: ModelSpec, size: int, weights, include_top: bool) -> keras.Model:
    model = _build_unfused(spec, size, weights, include_top)
    route_layers(model)
    return model


def route_layers(model: keras.Model) -> dict[str, int]:
    """Routes ``model``'s layers (in place) through the faster TensorFlow kernels: batch
    norm through the fused kernel (``batch_norm``, issue #14), then convolutions absorbing
    the inference-mode batch norm / zero padding next to them and 1x1 convolutions as
    MatMuls (``folding``). Same variables, classes and saved files; the same results up to
    float rounding. On other backends nothing changes. Every built model gets it; call it
    on a model loaded from a file (``keras.saving.load_model``) to get it there too.

    Returns:
        How many layers of each kind were routed.
    """
    return {"fused_batch_norm": batch_norm.fuse_batch_norm(model)} | folding.fold_convolutions(
        model
    )


def _build_unfused(spec: ModelSpec, size: int, weights, include_top: bool) -> keras.Model:
    weights = parse_weights(weights)
    shape = (size, size, 3)
    if isinstance(weights, pathlib.Path) and weights.name.endswith(KERAS_WEIGHT_SUFFIXES):
        model = spec.build(shape, None, include_top)
        try:
            model.load_weights(str(weights))
        except ValueError as err:
            raise ValueError(f"{weights} does not fit {spec.name}: {err}") from err
        return model
    if isinstance(weights, pathlib.Path) and not weights.name.endswith(CHECKPOINT_SUFFIXES):
        raise ValueError(
            f"Unrecognised weights file {weights.name}: expected Keras weights "
            f"({', '.join(KERAS_WEIGHT_SUFFIXES)}) or a checkpoint "
            f"({', '.join(CHECKPOINT_SUFFIXES)}) for models with a converter."
        )
    if isinstance(weights, pathlib.Path):
        _require_converter(spec, weights)
    return spec.build(shape, weights, include_top)


def _require_converter(spec: ModelSpec, path: pathlib.Path) -> None:
    if not spec.checkpoint_formats:
        raise ValueError(
            f"{spec.name!r} has no converter for {path.name}; pass Keras weights "
            f"({', '.join(KERAS_WEIGHT_SUFFIXES)}).{spec.checkpoint_hint}"
        )
    if not path.name.endswith(spec.checkpoint_formats):
        raise ValueError(
            f"{spec.name!r} converts {', '.join(spec.checkpoint_formats)} checkpoints, not "
            f"{path.name}."
        )


def build_backbone(
    name: str, *, weights: str | os.PathLike | None = "imagenet", image_size: int | None = None
) -> keras.Model:
    """The headless backbone of ``name``: float32 ``[B, S, S, 3]`` -> features ``[B, F]``.

    Args:
        name: a registered model name.
        weights: "imagenet", "none"/None, or a local weights file (see module docstring).
        image_size: input side S (default: the spec's ``input_size``).

    Raises:
        ValueError: unknown model, bad size, or a weights file that does not fit.
        FileNotFoundError: a weights path that does not exist.
        WeightsUnavailableError: ImageNet weights not cached and not downloadable.
    """
    spec = get_spec(name)
    size = spec.check_image_size(image_size, pretrained=parse_weights(weights) is not None)
    return _build(spec, size, weights, include_top=False)


def build_classifier(
    name: str,
    num_classes: int,
    *,
    weights: str | os.PathLike | None = "imagenet",
    image_size: int | None = None,
    multilabel: bool = False,
    dropout: float = 0.0,
) -> tuple[keras.Model, keras.Model]:
    """Backbone + a fresh linear head emitting logits.

    Args:
        name: a registered model name.
        num_classes: outputs of the head (labels for multi-label tasks).
        weights: "imagenet", "none"/None, or a local weights file.
        image_size: input side (default: the backbone's native size).
        multilabel: the logits are read as independent labels (sigmoid) rather than one
            class (softmax). The head is the same linear layer either way, named "logits";
            the loss and metrics decide.
        dropout: rate of a dropout before the head (0 disables it).

    Returns:
        ``(model, backbone)``: ``model`` maps the Preprocess output float32 ``[B, S, S, 3]``
        to logits ``[B, num_classes]``; ``backbone`` is the nested feature extractor to pass
        to ``set_trainable``.

    Raises:
        ValueError: unknown model, an input size the backbone rejects (checked before any
            build), bad num_classes / dropout, or weights that do not fit.
        FileNotFoundError, WeightsUnavailableError: see ``build_backbone``.
    """
    spec = get_spec(name)
    size = spec.check_image_size(image_size, pretrained=parse_weights(weights) is not None)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}.")
    backbone = _build(spec, size, weights, include_top=False)
    inputs = keras.Input((size, size, 3), name="image")
    x = backbone(inputs)
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    del multilabel  # same layer for both task kinds (see docstring)
    logits = keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name=f"{name}_classifier"), backbone


def build_imagenet_classifier(
    name: str, *, weights: str | os.PathLike | None = "imagenet"
) -> keras.Model:
    """The full ImageNet classifier of ``name`` at its native size, returning probabilities.

    Args:
        name: a registered model name.
        weights: as in ``build_classifier``; the file must include the 1000-class head.

    Returns:
        A model mapping the Preprocess output ``[B, S, S, 3]`` to ``[B, 1000]`` softmax
        probabilities.

    Raises:
        ValueError: unknown model or weights that do not fit.
    """
    spec = get_spec(name)
    model = _build(spec, spec.input_size, weights, include_top=True)
    if spec.top_outputs == "probabilities":
        return model
    probs = keras.layers.Softmax(name="probabilities")(model.output)
    return keras.Model(model.input, probs, name=f"{name}_imagenet")


def _sublayers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    return list(layer._flatten_layers(include_self=False, recursive=True))


def _parse_mode(mode: str | int, num_blocks: int) -> str | int:
    if isinstance(mode, str) and mode.isdigit():
        mode = int(mode)
    if mode in ("frozen", "all"):
        return mode
    if isinstance(mode, int) and not isinstance(mode, bool) and 0 <= mode <= num_blocks:
        return mode
    raise ValueError(
        f"Unknown trainable mode {mode!r}. Accepted: {', '.join(TRAINABLE_MODES)} with "
        f"0 <= N <= {num_blocks}."
    )


def blocks(backbone: keras.Model, name: str) -> list[list[keras.layers.Layer]]:
    """``backbone``'s blocks, bottom to top (lists of layers): the units ``set_trainable``'s
    "top N blocks" and the fine-tune phase's ``--layer_decay`` count in."""
    return get_spec(name).blocks(backbone)


def feature_split(backbone: keras.Model, name: str) -> FeatureSplit:
    """``backbone`` cut at its last spatial features (``ModelSpec.features``): what
    class-activation maps (``tlmed_keras.saliency``) differentiate."""
    return get_spec(name).features(backbone)


def set_trainable(
    backbone: keras.Model, name: str, mode: str | int, *, freeze_batch_norm: bool = True
) -> None:
    """Freezes or unfreezes ``backbone`` (the second value of ``build_classifier``).

    By default batch-norm layers stay frozen, so they run in inference mode (moving
    statistics untouched) while the rest trains: Keras runs a BN layer with
    ``trainable=False`` in inference mode, and re-estimating ImageNet statistics on small
    MedMNIST batches wrecks them. A randomly initialised backbone (``weights="none"``) has
    no statistics worth keeping: pass ``freeze_batch_norm=False`` to train from scratch.

    Args:
        backbone: the backbone returned by ``build_classifier`` / ``build_backbone``.
        name: its registry name (says how it splits into blocks).
        mode: "frozen" (nothing trains), "all", or an int N: only the top N blocks train
            (0 == "frozen").
        freeze_batch_norm: keep BN layers frozen and in inference mode (fine-tuning).

    Raises:
        ValueError: unknown mode or N outside ``[0, num_blocks]``.
    """
    spec = get_spec(name)
    blocks = spec.blocks(backbone)
    mode = _parse_mode(mode, len(blocks))
    if mode == "frozen" or mode == 0:
        backbone.trainable = False
        return
    backbone.trainable = True
    # Keras' setter does not always reach a sublayer frozen on its own (a BN frozen by an
    # earlier call stays frozen): set every layer, so the result never depends on the past.
    for layer in _sublayers(backbone):
        layer.trainable = True
    if mode != "all":
        _freeze_below_top(backbone, blocks, mode)
    if not freeze_batch_norm:
        return
    for layer in _sublayers(backbone):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def _freeze_below_top(backbone: keras.Model, blocks, top: int) -> None:
    keep = {id(v) for block in blocks[-top:] for layer in block for v in layer.weights}
    for layer in _sublayers(backbone):
        if layer.weights and not any(id(v) in keep for v in layer.weights):
            layer.trainable = False
    # Containers mixing kept and frozen parts (a ViT encoder): freeze variable by variable.
    for variable in backbone.trainable_weights:
        if id(variable) not in keep:
            variable.trainable = False


def trainable_summary(backbone: keras.Model) -> str:
    """One line for logs: trainable / total parameters of ``backbone``."""
    total = sum(int(np.prod(v.shape)) for v in backbone.weights)
    trainable = sum(int(np.prod(v.shape)) for v in backbone.trainable_weights)
    return f"{trainable:,} of {total:,} backbone weights trainable"


def normalization_of(name: str) -> Normalization:
    """The ``Normalization`` the weights of ``name`` expect."""
    return get_normalization(get_spec(name).normalization)
