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
from collections.abc import Callable

import keras
import numpy as np

from tlmed_keras.data.preprocess import Normalization, get_normalization
from tlmed_keras.models import keras_apps
from tlmed_keras.models.converters import torch_pickle
from tlmed_keras.models.converters import torchvision as tv
from tlmed_keras.models.spec import (
    Blocks,
    Builder,
    ModelSpec,
    WeightsUnavailableError,
    is_download_failure,
    unavailable,
)

__all__ = [
    "ModelSpec",
    "WeightsUnavailableError",
    "build_backbone",
    "build_classifier",
    "build_imagenet_classifier",
    "get_spec",
    "model_names",
    "normalization_of",
    "parse_weights",
    "set_trainable",
]

KERAS_WEIGHT_SUFFIXES = (".weights.h5", ".h5", ".hdf5", ".keras")
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
TRAINABLE_MODES = ("frozen", "all", "an int N (top N blocks)")

# --- family: keras.applications ----------------------------------------------------------


def _keras_app_builder(name: str, app: keras_apps.KerasApp, torch_twin: str | None) -> Builder:
    def build(input_shape, weights, include_top):
        if isinstance(weights, pathlib.Path):
            hint = f" Use {torch_twin!r}, which converts it exactly." if torch_twin else ""
            raise ValueError(
                f"{name!r} (keras.applications layout) takes Keras weight files only, not "
                f"{weights.name}.{hint}"
            )
        if weights != "imagenet":
            return app.build(input_shape, None, include_top)
        try:
            return app.build(input_shape, "imagenet", include_top)
        except Exception as err:
            if is_download_failure(err):
                raise unavailable(name, "keras.applications", err) from err
            raise

    return build


_KERAS_APP_INFO = {
    # name: (input_size, min_input_size, normalization, num_blocks)
    "vgg16": (224, 32, "caffe", 5),
    "vgg19": (224, 32, "caffe", 5),
    "resnet50": (224, 32, "caffe", 16),
    "resnet101": (224, 32, "caffe", 33),
    "resnet152": (224, 32, "caffe", 50),
    "inception_v3": (299, 75, "tf", 11),
    "densenet121": (224, 32, "torch", 58),
    "mobilenet_v2": (224, 32, "tf", 17),
}


def _keras_app_specs() -> dict[str, ModelSpec]:
    specs = {}
    for name, (size, min_size, norm, num_blocks) in _KERAS_APP_INFO.items():
        app = keras_apps.KERAS_APPS[name]
        twin = "mobilenet_v2_torchvision" if name == "mobilenet_v2" else None
        specs[name] = ModelSpec(
            name=name,
            input_size=size,
            min_input_size=min_size,
            normalization=norm,
            weights_source=f"keras.applications.{app.constructor}",
            num_blocks=num_blocks,
            family="keras.applications",
            build=_keras_app_builder(name, app, twin),
            blocks=app.blocks,
        )
    return specs


# --- family: torchvision-faithful graphs with a .pth converter -----------------------------


def _fetch(name: str, url: str, fetch: Callable[[], str]) -> pathlib.Path:
    try:
        return pathlib.Path(fetch())
    except Exception as err:
        if is_download_failure(err):
            raise unavailable(name, url, err) from err
        raise


def _mobilenet_v2_torchvision(input_shape, weights, include_top) -> keras.Model:
    if weights == "imagenet":
        weights = _fetch(
            "mobilenet_v2_torchvision", tv.MOBILENET_V2_URL, tv.fetch_mobilenet_v2_weights
        )
    model = tv.mobilenet_v2(input_shape, include_top=include_top)
    if weights is not None:
        _require_suffix("mobilenet_v2_torchvision", weights, (".pth", ".pt"))
        tv.load_mobilenet_v2(model, torch_pickle.load_state_dict(weights))
    return model


def _require_suffix(name: str, path: pathlib.Path, suffixes: tuple[str, ...]) -> None:
    if not path.name.endswith(suffixes):
        raise ValueError(f"{name!r} converts {', '.join(suffixes)} checkpoints, not {path.name}.")


def _torchvision_specs() -> dict[str, ModelSpec]:
    return {
        "mobilenet_v2_torchvision": ModelSpec(
            name="mobilenet_v2_torchvision",
            input_size=224,
            min_input_size=32,
            normalization="torch",
            weights_source=tv.MOBILENET_V2_URL,
            num_blocks=tv.MOBILENET_V2_BLOCKS,
            family="torchvision",
            build=_mobilenet_v2_torchvision,
            blocks=tv.mobilenet_v2_blocks,
            checkpoint_formats=(".pth", ".pt"),
        )
    }


# --- family: architectures written in this package (alexnet, squeezenet, beit) -------------

_OWN_MODULES = {
    "alexnet": "tlmed_keras.models.alexnet",
    "squeezenet1_1": "tlmed_keras.models.squeezenet",
    "beit_base_patch16_224": "tlmed_keras.models.beit",
}


def _own_builder(name: str, module) -> Builder:
    def build(input_shape, weights, include_top):
        if weights == "imagenet":
            url = module.WEIGHTS_URL
            # Prefixed: Hugging Face files are all called "model.safetensors".
            fname = f"{name}-{os.path.basename(url)}"
            weights = _fetch(
                name,
                url,
                lambda: keras.utils.get_file(fname=fname, origin=url, cache_subdir="models"),
            )
        kwargs = {"include_top": True} if include_top else {}
        return module.build_backbone(
            tuple(input_shape), None if weights is None else str(weights), **kwargs
        )

    return build


def _own_blocks(module) -> Blocks:
    if hasattr(module, "blocks"):
        return module.blocks
    prefixes = tuple(module.BLOCK_PREFIXES)

    def blocks(backbone):
        return [[lyr for lyr in backbone.layers if lyr.name.startswith(p)] for p in prefixes]

    return blocks


# Block counts of the own modules that do not export NUM_BLOCKS (test_zoo checks them
# against blocks(backbone)); counting by building would cost seconds at every start-up.
_OWN_NUM_BLOCKS = {"alexnet": 7, "squeezenet1_1": 9}


def _own_num_blocks(name: str, module, blocks: Blocks) -> int:
    for attribute in ("NUM_BLOCKS", "BLOCK_PREFIXES"):
        if hasattr(module, attribute):
            value = getattr(module, attribute)
            return value if isinstance(value, int) else len(value)
    if name in _OWN_NUM_BLOCKS:
        return _OWN_NUM_BLOCKS[name]
    side = getattr(module, "MIN_INPUT_SIZE", module.INPUT_SIZE)
    return len(blocks(module.build_backbone((side, side, 3), None)))


def _own_spec(name: str, module_name: str) -> ModelSpec | None:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name == module_name:
            return None  # not written yet: the registry simply does not offer it
        raise
    blocks = _own_blocks(module)
    return ModelSpec(
        name=name,
        input_size=module.INPUT_SIZE,
        min_input_size=getattr(module, "MIN_INPUT_SIZE", module.INPUT_SIZE),
        normalization=module.NORMALIZATION,
        weights_source=module.WEIGHTS_URL,
        num_blocks=_own_num_blocks(name, module, blocks),
        family="tlmed_keras",
        build=_own_builder(name, module),
        blocks=blocks,
        checkpoint_formats=tuple(getattr(module, "CHECKPOINT_FORMATS", (".pth", ".pt"))),
        pretrained_sizes=getattr(module, "PRETRAINED_SIZES", None),
    )


# --- the registry --------------------------------------------------------------------------

_SPECS: dict[str, ModelSpec] = {}
_OWN_SPECS: dict[str, ModelSpec | None] = {}


def _all_specs() -> dict[str, ModelSpec]:
    if not _SPECS:
        from tlmed_keras.models import kerashub

        _SPECS.update(_keras_app_specs())
        _SPECS.update(kerashub.specs())
        _SPECS.update(_torchvision_specs())
    return _SPECS


def _own(name: str) -> ModelSpec | None:
    if name not in _OWN_SPECS:
        _OWN_SPECS[name] = _own_spec(name, _OWN_MODULES[name])
    return _OWN_SPECS[name]


def model_names() -> tuple[str, ...]:
    """Registered model names (architectures not yet available are left out)."""
    own = tuple(name for name in _OWN_MODULES if _own(name) is not None)
    return tuple(_all_specs()) + own


def get_spec(name: str) -> ModelSpec:
    """The ``ModelSpec`` of ``name``.

    Raises:
        ValueError: unknown name; the message lists the valid ones.
    """
    spec = _own(name) if name in _OWN_MODULES else _all_specs().get(name)
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
    if (
        isinstance(weights, pathlib.Path)
        and not spec.checkpoint_formats
        and spec.family
        not in (
            "keras.applications",  # that builder gives its own, more specific error
        )
    ):
        raise ValueError(f"{spec.name!r} has no converter for {weights.name}; pass Keras weights.")
    return spec.build(shape, weights, include_top)


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
    if spec.family == "keras.applications":
        return model  # already ends in softmax
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
