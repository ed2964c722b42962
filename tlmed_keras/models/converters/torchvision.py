"""torchvision checkpoints: the key-naming map over the ``state_dict`` engine.

Mapping rule: a Keras layer named after a torchvision module path with "_" for "."
(``features_2_conv_1_0`` <- ``features.2.conv.1.0``; Keras' torch backend forbids dots in
names) takes that module's parameters, transposed to Keras' layout by its layer type. Every
Keras weight must find its key with the right shape and every checkpoint key must be used (or
explicitly ignored), else ``StateDictMismatchError`` names the first offender; nothing is
assigned until all keys check out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

import keras
import numpy as np

from tlmed_keras.models._arch import has_layer
from tlmed_keras.models.converters.state_dict import (
    Layout,
    StateDictConsumer,
    StateDictMismatchError,
    conv_kernel,
    dense_kernel,
    depthwise_kernel,
    identity,
)

# The former name of the engine's error, kept for callers that catch it.
WeightMismatchError = StateDictMismatchError

# Checkpoint entries that carry no weights a Keras layer needs.
BOOKKEEPING_SUFFIXES = (".num_batches_tracked",)

# A plan lists, for one Keras layer, (Keras variable, torch parameter suffix, layout).
Plan = list[tuple[keras.Variable, str, Layout]]


def layer_plan(layer: keras.layers.Layer, kernel_layout: Layout | None = None) -> Plan:
    """Which torch parameters fill ``layer``'s variables, and how to transpose them.

    Args:
        layer: a leaf Keras layer with weights.
        kernel_layout: replaces the layer type's kernel layout (e.g. a Dense reading a
            channel-major flatten).

    Raises:
        StateDictMismatchError: a layer type without a torch counterpart here.
    """
    if isinstance(layer, keras.layers.BatchNormalization):
        return [
            (layer.gamma, "weight", identity),
            (layer.beta, "bias", identity),
            (layer.moving_mean, "running_mean", identity),
            (layer.moving_variance, "running_var", identity),
        ]
    if isinstance(layer, keras.layers.LayerNormalization):
        return [(layer.gamma, "weight", identity), (layer.beta, "bias", identity)]
    default_layout = _kernel_layout(layer)  # refuses unmapped layer types first
    plan = [(layer.kernel, "weight", kernel_layout or default_layout)]
    if getattr(layer, "use_bias", False):
        plan.append((layer.bias, "bias", identity))
    return plan


def _kernel_layout(layer: keras.layers.Layer) -> Layout:
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return lambda weight: depthwise_kernel(weight, layer.depth_multiplier)
    if isinstance(layer, keras.layers.Conv2D):
        return conv_kernel
    if isinstance(layer, keras.layers.Dense):
        return dense_kernel
    raise StateDictMismatchError(
        f"No torch mapping for Keras layer {layer.name!r} ({type(layer).__name__}); mapped "
        "types: Conv2D, DepthwiseConv2D, Dense, BatchNormalization, LayerNormalization."
    )


def torch_path(layer: keras.layers.Layer) -> str:
    """``features_2_conv_1_0`` -> ``features.2.conv.1.0``."""
    return layer.name.replace("_", ".")


def weighted_layers(model: keras.layers.Layer) -> Iterable[keras.layers.Layer]:
    """Leaf layers holding weights, in model order (nested models are entered)."""
    for layer in getattr(model, "layers", ()):
        if isinstance(layer, keras.Model):
            yield from weighted_layers(layer)
        elif layer.weights:
            yield layer


def assign_state_dict(
    model: keras.Model,
    state: Mapping[str, np.ndarray],
    *,
    source: str = "torchvision checkpoint",
    top: str | None = None,
    ignore_prefixes: tuple[str, ...] = (),
    key_prefix: Callable[[keras.layers.Layer], str] | None = None,
    kernel_layouts: Mapping[str, Layout] | None = None,
) -> int:
    """Copies a torch state dict into ``model`` (all-or-nothing).

    Args:
        model: Keras model whose weighted layers are named after torch module paths (or
            mapped to them by ``key_prefix``).
        state: ``{torch key: array}`` as ``state_dict.read_state_dict`` returns.
        source: what the checkpoint is, for error messages.
        top: Keras name of the ImageNet classifier layer (e.g. "classifier_1"): when ``model``
            lacks it (a headless backbone), the checkpoint's classifier keys are skipped.
        ignore_prefixes: checkpoint keys the model deliberately lacks (e.g. "classifier."
            for a headless backbone).
        key_prefix: torch module path of a Keras layer (default: its name with "_" -> ".").
        kernel_layouts: Keras layer name -> kernel layout, where the layer type's default
            does not fit.

    Returns:
        Number of arrays assigned.

    Raises:
        StateDictMismatchError: a Keras weight without its key, a shape mismatch, or a
            checkpoint key nothing uses; the message names the first one and its shape.
    """
    key_prefix = key_prefix or torch_path
    kernel_layouts = kernel_layouts or {}
    if top is not None and not has_layer(model, top):
        ignore_prefixes = (*ignore_prefixes, top.replace("_", ".") + ".")
    consumer = StateDictConsumer(state, source)
    for layer in weighted_layers(model):
        prefix = key_prefix(layer)
        for variable, suffix, layout in layer_plan(layer, kernel_layouts.get(layer.name)):
            consumer.assign(f"{prefix}.{suffix}", variable, layout)
    consumer.ignore([re.escape(suffix) + "$" for suffix in BOOKKEEPING_SUFFIXES])
    consumer.ignore(["^" + re.escape(prefix) for prefix in ignore_prefixes])
    return consumer.finish()


__all__ = [
    "BOOKKEEPING_SUFFIXES",
    "StateDictMismatchError",
    "WeightMismatchError",
    "assign_state_dict",
    "conv_kernel",
    "dense_kernel",
    "depthwise_kernel",
    "layer_plan",
    "torch_path",
    "weighted_layers",
]
