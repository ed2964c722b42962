"""torchvision's MobileNetV2 rebuilt layer for layer in Keras, loading its ``.pth`` exactly.

Why a separate MobileNetV2: keras.applications' MobileNetV2 pads its stride-2 convolutions
asymmetrically ("same": 0 before, 1 after) and uses batch-norm epsilon 1e-3, while torchvision
pads 1 on every side with epsilon 1e-5. Loading torchvision weights into the Keras layout
gives the right top-1 class but logits off by up to ~20, so ``mobilenet_v2_torchvision``
rebuilds torchvision's graph exactly. Layers are named after torchvision's module paths, so the
torchvision key map (``converters.torchvision``) loads the checkpoint without a table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import keras
import numpy as np

from tlmed_keras.models.converters.state_dict import read_state_dict
from tlmed_keras.models.converters.torchvision import assign_state_dict
from tlmed_keras.models.features import at_output
from tlmed_keras.models.spec import ModelSpec, checkpoint_builder, register

MOBILENET_V2_URL = "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth"
MOBILENET_V2_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"

# torch.nn.BatchNorm2d defaults; Keras' momentum is torch's (1 - momentum).
TORCH_BN_EPSILON = 1e-5
TORCH_BN_MOMENTUM = 0.9


# (expansion t, output channels c, repeats n, first stride s), torchvision's table.
MOBILENET_V2_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
MOBILENET_V2_BLOCKS = sum(n for _, _, n, _ in MOBILENET_V2_SETTINGS)  # features.1 .. 17
MOBILENET_V2_FEATURES = 1280


# torchvision's init (kaiming_normal_, mode="fan_out"): keeps a random-init net's activations
# alive through 50 layers, where Keras' default glorot shrinks them to ~1e-12.
def _he_init() -> keras.initializers.Initializer:
    return keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")


def _batch_norm(name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(
        epsilon=TORCH_BN_EPSILON, momentum=TORCH_BN_MOMENTUM, name=name
    )


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, *, depthwise=False, relu6=True):
    """torchvision's Conv2dNormActivation: conv ``name_0``, BN ``name_1``, ReLU6."""
    if kernel > 1:
        # Symmetric padding (k // 2 each side), as torch's padding=k//2.
        x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
    if depthwise:
        conv = keras.layers.DepthwiseConv2D(
            kernel, stride, use_bias=False, depthwise_initializer=_he_init(), name=f"{name}_0"
        )
    else:
        conv = keras.layers.Conv2D(
            filters, kernel, stride, use_bias=False, kernel_initializer=_he_init(), name=f"{name}_0"
        )
    x = _batch_norm(f"{name}_1")(conv(x))
    return keras.layers.ReLU(max_value=6.0, name=f"{name}_2")(x) if relu6 else x


def _inverted_residual(x, in_channels: int, out_channels: int, stride: int, expand: int, name):
    hidden = in_channels * expand
    y, index = x, 0
    if expand != 1:
        y = _conv_bn(y, hidden, 1, 1, f"{name}_conv_0")
        index = 1
    y = _conv_bn(y, hidden, 3, stride, f"{name}_conv_{index}", depthwise=True)
    y = keras.layers.Conv2D(
        out_channels,
        1,
        use_bias=False,
        kernel_initializer=_he_init(),
        name=f"{name}_conv_{index + 1}",
    )(y)
    y = _batch_norm(f"{name}_conv_{index + 2}")(y)
    if stride == 1 and in_channels == out_channels:
        y = keras.layers.Add(name=f"{name}_add")([x, y])
    return y


def mobilenet_v2_features(inputs):
    """torchvision ``MobileNetV2().features`` (width 1.0) on ``inputs``."""
    x = _conv_bn(inputs, 32, 3, 2, "features_0")
    channels, index = 32, 1
    for expand, out_channels, repeats, first_stride in MOBILENET_V2_SETTINGS:
        for repeat in range(repeats):
            stride = first_stride if repeat == 0 else 1
            x = _inverted_residual(x, channels, out_channels, stride, expand, f"features_{index}")
            channels, index = out_channels, index + 1
    return _conv_bn(x, MOBILENET_V2_FEATURES, 1, 1, f"features_{index}")


def mobilenet_v2(input_shape: tuple[int, int, int], include_top: bool = False) -> keras.Model:
    """torchvision's MobileNetV2 in Keras, randomly initialised.

    Args:
        input_shape: ``(H, W, 3)``, channels last; inputs normalised the "torch" way.
        include_top: append torchvision's 1000-class ``classifier.1`` (logits, no softmax).

    Returns:
        ``[B, 1280]`` pooled features, or ``[B, 1000]`` logits with ``include_top``.
    """
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(mobilenet_v2_features(inputs))
    name = "mobilenet_v2_torchvision"
    if include_top:
        x = keras.layers.Dropout(0.2, name="classifier_0")(x)
        x = keras.layers.Dense(1000, name="classifier_1")(x)
        name += "_imagenet"
    return keras.Model(inputs, x, name=name)


def mobilenet_v2_blocks(backbone: keras.Model) -> list[list[keras.layers.Layer]]:
    """The 17 inverted-residual blocks, bottom to top; the final 1x1 conv joins the last."""
    last = f"features_{MOBILENET_V2_BLOCKS + 1}_"
    blocks: list[list[keras.layers.Layer]] = [[] for _ in range(MOBILENET_V2_BLOCKS)]
    for layer in backbone.layers:
        parts = layer.name.split("_")
        if len(parts) < 2 or parts[0] != "features" or not parts[1].isdigit():
            continue
        index = int(parts[1])
        if 1 <= index <= MOBILENET_V2_BLOCKS:
            blocks[index - 1].append(layer)
        elif layer.name.startswith(last):
            blocks[-1].append(layer)
    return blocks


def load_mobilenet_v2(model: keras.Model, state: Mapping[str, np.ndarray]) -> int:
    """Fills a ``mobilenet_v2`` model from a torchvision state dict (head kept if present)."""
    return assign_state_dict(model, state, source="torchvision MobileNetV2", top="classifier_1")


def build_backbone(
    input_shape: tuple[int, int, int],
    weights: str | os.PathLike | None = None,
    include_top: bool = False,
) -> keras.Model:
    """``mobilenet_v2`` filled from a torchvision checkpoint (``weights``) or random (None)."""
    model = mobilenet_v2(input_shape, include_top=include_top)
    if weights is not None:
        load_mobilenet_v2(model, read_state_dict(weights))
    return model


SPEC = ModelSpec(
    name="mobilenet_v2_torchvision",
    family="torchvision",
    input_size=224,
    min_input_size=32,
    normalization="torch",
    weights_source=MOBILENET_V2_URL,
    num_blocks=MOBILENET_V2_BLOCKS,
    build=checkpoint_builder(
        "mobilenet_v2_torchvision",
        MOBILENET_V2_URL,
        build_backbone,
        # The file name torchvision and earlier versions of this package cache it under.
        fname=os.path.basename(MOBILENET_V2_URL),
        file_hash=MOBILENET_V2_SHA256,
    ),
    blocks=mobilenet_v2_blocks,
    features=at_output(f"features_{MOBILENET_V2_BLOCKS + 1}_2"),  # the last 1x1 conv's ReLU6
    checkpoint_formats=(".pth", ".pt"),
)
register(SPEC)
