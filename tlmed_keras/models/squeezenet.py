"""SqueezeNet 1.1 exactly as torchvision defines it (``torchvision.models.squeezenet1_1``).

Layer names mirror torchvision's modules (``features_3_squeeze`` is ``features.3.squeeze``).

Torch's max pools here use ``ceil_mode=True``: the output has ``ceil((n - 3) / 2) + 1`` cells
and the last window may hang over the bottom/right edge. Keras has no ceil mode, so each pool
is preceded by zero padding on the bottom/right just wide enough for that last window. Zeros
are neutral for a max here because every pool follows a ReLU (its inputs are >= 0 and each
window keeps at least one real cell).

``include_top=False`` returns the global average of the last Fire module (512-d). torchvision's
classifier is a 1x1 convolution to the classes, a ReLU and a global average; a new Dense head
on the pooled features is the linear equivalent that transfer learning swaps in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import keras
import numpy as np

from tlmed_keras.models._arch import check_rgb_input_shape, has_layer
from tlmed_keras.models.converters.state_dict import READABLE_SUFFIXES, read_state_dict
from tlmed_keras.models.converters.torchvision import assign_state_dict
from tlmed_keras.models.features import at_output
from tlmed_keras.models.spec import ModelSpec, checkpoint_builder, register

INPUT_SIZE = 224
MIN_INPUT_SIZE = 25  # smallest input whose third max-pool still sees one window
WEIGHTS_URL = "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth"
FEATURE_DIM = 512

# torchvision features index -> (squeeze, expand1x1, expand3x3) channels of each Fire module.
_FIRES = {
    3: (16, 64, 64),
    4: (16, 64, 64),
    6: (32, 128, 128),
    7: (32, 128, 128),
    9: (48, 192, 192),
    10: (48, 192, 192),
    11: (64, 256, 256),
    12: (64, 256, 256),
}
_POOLS = (2, 5, 8)  # torchvision features indices of the ceil-mode max pools
_FIRE_CONVS = ("squeeze", "expand1x1", "expand3x3")
_STEM = "features_0"
_TOP_CONV = "classifier_1"


def build_backbone(
    input_shape: tuple[int, int, int] = (INPUT_SIZE, INPUT_SIZE, 3),
    weights: str | os.PathLike | None = None,
    include_top: bool = False,
    num_classes: int = 1000,
    dropout: float = 0.5,
) -> keras.Model:
    """Builds torchvision's SqueezeNet 1.1.

    Args:
        input_shape: ``(H, W, 3)``, each side at least ``MIN_INPUT_SIZE``.
        weights: None (random init) or a local torchvision ``.pth`` (or ``.safetensors``).
        include_top: True: torchvision's classifier (logits ``[B, num_classes]``, which are
            non-negative: torchvision puts a ReLU before its average); False: the pooled
            512-d features.
        num_classes: classes of the top convolution (1000 for the ImageNet checkpoint).
        dropout: rate of the dropout in front of the top convolution (torchvision: 0.5).

    Returns:
        A functional ``keras.Model`` named "squeezenet1_1".

    Raises:
        ValueError: the input is too small or not 3-channel.
        StateDictMismatchError: the weights do not fit.
    """
    check_rgb_input_shape(input_shape, "SqueezeNet 1.1", MIN_INPUT_SIZE, INPUT_SIZE)
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Conv2D(64, 3, strides=2, activation="relu", name=_STEM)(inputs)
    for index in range(2, 13):
        if index in _POOLS:
            x = _ceil_max_pool(x, f"features_{index}")
        else:
            x = _fire(x, f"features_{index}", *_FIRES[index])
    if include_top:
        x = keras.layers.Dropout(dropout, name="classifier_0")(x)
        x = keras.layers.Conv2D(num_classes, 1, activation="relu", name=_TOP_CONV)(x)
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    model = keras.Model(inputs, x, name="squeezenet1_1")
    if weights is not None:
        load_torch_state_dict(model, read_state_dict(weights))
    return model


def ceil_mode_extra(size: int, kernel: int = 3, stride: int = 2) -> int:
    """Cells to pad at the end so a floor-mode pool gives torch's ``ceil_mode=True`` size."""
    cells = -(-(size - kernel) // stride) + 1
    # torch drops a last window that would start in the padding; with no padding it never does.
    return (cells - 1) * stride + kernel - size


def _ceil_max_pool(x, name: str):
    height, width = x.shape[1], x.shape[2]
    padding = ((0, ceil_mode_extra(height)), (0, ceil_mode_extra(width)))
    x = keras.layers.ZeroPadding2D(padding, name=f"{name}_ceil_pad")(x)
    return keras.layers.MaxPooling2D(3, strides=2, name=name)(x)


def _fire(x, name: str, squeeze: int, expand1x1: int, expand3x3: int):
    x = keras.layers.Conv2D(squeeze, 1, activation="relu", name=f"{name}_squeeze")(x)
    left = keras.layers.Conv2D(expand1x1, 1, activation="relu", name=f"{name}_expand1x1")(x)
    right = keras.layers.Conv2D(
        expand3x3, 3, padding="same", activation="relu", name=f"{name}_expand3x3"
    )(x)
    return keras.layers.Concatenate(axis=-1, name=f"{name}_concat")([left, right])


def blocks(backbone: keras.Model) -> list[list[keras.layers.Layer]]:
    """Trainable layers grouped input -> output: the stem, each Fire module, the top conv.

    Args:
        backbone: a model from ``build_backbone``.

    Returns:
        ``[[features_0], [fire 3 squeeze, expand1x1, expand3x3], ..., [classifier_1]?]``.
    """
    groups = [[backbone.get_layer(_STEM)]]
    for index in _FIRES:
        groups.append([backbone.get_layer(f"features_{index}_{conv}") for conv in _FIRE_CONVS])
    if has_layer(backbone, _TOP_CONV):
        groups.append([backbone.get_layer(_TOP_CONV)])
    return groups


def load_torch_state_dict(model: keras.Model, state_dict: Mapping[str, np.ndarray]) -> None:
    """Copies torchvision SqueezeNet 1.1 weights (``features.3.squeeze.weight``, ...).

    Without a top layer ``classifier.1.*`` is skipped. Raises ``StateDictMismatchError``
    naming the first missing, unexpected or mis-shaped key.
    """
    assign_state_dict(model, state_dict, source="torchvision SqueezeNet 1.1", top=_TOP_CONV)


SPEC = ModelSpec(
    name="squeezenet1_1",
    family="tlmed_keras",
    input_size=INPUT_SIZE,
    min_input_size=MIN_INPUT_SIZE,  # 25: the third max-pool still sees one window
    normalization="torch",
    weights_source=WEIGHTS_URL,
    num_blocks=9,  # len(blocks(backbone)) without the top: the stem and eight Fire modules
    build=checkpoint_builder("squeezenet1_1", WEIGHTS_URL, build_backbone),
    features=at_output("features_12_concat"),  # the last Fire module
    blocks=blocks,
    checkpoint_formats=READABLE_SUFFIXES,
)
register(SPEC)
