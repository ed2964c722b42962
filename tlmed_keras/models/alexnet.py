"""AlexNet exactly as torchvision defines it (``torchvision.models.alexnet``), in Keras 3.

Layer names mirror torchvision's module indices (``features_0`` is ``features.0``) so the
weight mapping reads as a table. Torch pads the 11x11/4 stem symmetrically by 2, which no
Keras ``padding`` string does, hence the explicit ``ZeroPadding2D``; the stride-1 convolutions
have odd kernels, where ``padding="same"`` is the same symmetric padding.

``include_top=False`` returns the 4096-d output of the second fully connected layer (after its
ReLU): fine-tuning AlexNet conventionally keeps the pretrained FC layers and only swaps the
last 4096 -> 1000 layer, so a new head on this vector is exactly that.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import keras
import numpy as np

from tlmed_keras.models._arch import check_rgb_input_shape, has_layer
from tlmed_keras.models.converters.state_dict import (
    READABLE_SUFFIXES,
    StateDictMismatchError,
    read_state_dict,
)
from tlmed_keras.models.converters.torchvision import assign_state_dict
from tlmed_keras.models.features import at_output
from tlmed_keras.models.spec import ModelSpec, checkpoint_builder, register

INPUT_SIZE = 224
MIN_INPUT_SIZE = 63  # smallest input whose last max-pool still sees a 3x3 window
WEIGHTS_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
FEATURE_DIM = 4096
POOLED_SIZE = 6  # torchvision's AdaptiveAvgPool2d((6, 6))

# (Keras layer / torchvision module index, filters, kernel, stride, torch padding)
_CONVS = (
    ("features_0", 64, 11, 4, 2),
    ("features_3", 192, 5, 1, 2),
    ("features_6", 384, 3, 1, 1),
    ("features_8", 256, 3, 1, 1),
    ("features_10", 256, 3, 1, 1),
)
_MAX_POOL_AFTER = ("features_0", "features_3", "features_10")
_HIDDEN_DENSES = ("classifier_1", "classifier_4")
_TOP_DENSE = "classifier_6"


def adaptive_pool_matrix(in_size: int, out_size: int) -> np.ndarray:
    """[out, in] averaging weights of torch's ``adaptive_avg_pool`` along one axis.

    Bin ``i`` averages ``[floor(i * in / out), ceil((i + 1) * in / out))``: bins overlap when
    ``in`` is not a multiple of ``out`` and repeat pixels when ``in < out``.
    """
    matrix = np.zeros((out_size, in_size), dtype=np.float32)
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -((-(i + 1) * in_size) // out_size)  # ceil division
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


@keras.saving.register_keras_serializable(package="tlmed_keras")
class AdaptiveAveragePooling2D(keras.layers.Layer):
    """``torch.nn.AdaptiveAvgPool2d(output_size)`` on NHWC input with static H and W.

    The bins are fixed once H and W are known, so pooling is two small matrix products.

    Args:
        output_size: side of the square output grid.
    """

    def __init__(self, output_size: int, **kwargs):
        super().__init__(**kwargs)
        self.output_size = int(output_size)

    def build(self, input_shape):
        height, width = input_shape[1], input_shape[2]
        if height is None or width is None:
            raise ValueError(
                f"{self.name}: adaptive pooling needs static height and width; got {input_shape}."
            )
        self._rows = adaptive_pool_matrix(height, self.output_size)
        self._cols = adaptive_pool_matrix(width, self.output_size)

    def call(self, inputs):
        rows = keras.ops.convert_to_tensor(self._rows, dtype=inputs.dtype)
        cols = keras.ops.convert_to_tensor(self._cols, dtype=inputs.dtype)
        return keras.ops.einsum("oh,bhwc,pw->bopc", rows, inputs, cols)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_size, self.output_size, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "output_size": self.output_size}


def build_backbone(
    input_shape: tuple[int, int, int] = (INPUT_SIZE, INPUT_SIZE, 3),
    weights: str | os.PathLike | None = None,
    include_top: bool = False,
    num_classes: int = 1000,
    dropout: float = 0.5,  # torchvision's, in front of both hidden FC layers
) -> keras.Model:
    """Builds torchvision's AlexNet.

    Args:
        input_shape: ``(H, W, 3)``, each side at least ``MIN_INPUT_SIZE``.
        weights: None (random init) or a local torchvision ``.pth`` (or ``.safetensors``).
        include_top: True: logits ``[B, num_classes]``; False: the 4096-d features.
        num_classes: classes of the top layer (1000 for the ImageNet checkpoint).
        dropout: rate of the two dropouts in front of the FC layers (torchvision: 0.5).

    Returns:
        A functional ``keras.Model`` named "alexnet": logits with ``include_top``, else the
        4096-d features.

    Raises:
        ValueError: the input is under ``MIN_INPUT_SIZE`` (63 px, where the last max-pool
            still sees a 3x3 window) or not 3-channel.
        StateDictMismatchError: the weights do not fit.
    """
    check_rgb_input_shape(input_shape, "AlexNet", MIN_INPUT_SIZE, INPUT_SIZE)
    inputs = keras.Input(shape=input_shape, name="image")
    x = _features(inputs)
    x = AdaptiveAveragePooling2D(POOLED_SIZE, name="avgpool")(x)
    # Torch flattens [C, 6, 6]; the converter reorders classifier.1 to Keras' [6, 6, C].
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dropout(dropout, name="classifier_0")(x)
    x = keras.layers.Dense(4096, activation="relu", name="classifier_1")(x)
    x = keras.layers.Dropout(dropout, name="classifier_3")(x)
    x = keras.layers.Dense(FEATURE_DIM, activation="relu", name="classifier_4")(x)
    if include_top:
        x = keras.layers.Dense(num_classes, name=_TOP_DENSE)(x)
    model = keras.Model(inputs, x, name="alexnet")
    if weights is not None:
        load_torch_state_dict(model, read_state_dict(weights))
    return model


def _features(x):
    for name, filters, kernel, stride, padding in _CONVS:
        if stride == 1:
            x = keras.layers.Conv2D(filters, kernel, padding="same", name=name)(x)
        else:
            x = keras.layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
            x = keras.layers.Conv2D(filters, kernel, strides=stride, name=name)(x)
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
        if name in _MAX_POOL_AFTER:
            x = keras.layers.MaxPooling2D(3, strides=2, name=f"{name}_maxpool")(x)
    return x


def blocks(backbone: keras.Model) -> list[list[keras.layers.Layer]]:
    """Trainable layers grouped input -> output: the five convolutions, then the FC layers.

    Args:
        backbone: a model from ``build_backbone``.

    Returns:
        One single-layer block per conv / dense layer, the top layer last when present.
    """
    names = [name for name, *_ in _CONVS] + list(_HIDDEN_DENSES)
    if has_layer(backbone, _TOP_DENSE):
        names.append(_TOP_DENSE)
    return [[backbone.get_layer(name)] for name in names]


def load_torch_state_dict(model: keras.Model, state_dict: Mapping[str, np.ndarray]) -> None:
    """Copies torchvision AlexNet weights (``features.0.weight``, ...) into ``model``.

    ``classifier.6`` (the ImageNet classes) is skipped when ``model`` has no top; a
    ``StateDictMismatchError`` names the first missing, unexpected or mis-shaped key.
    """
    # classifier.1 reads torch's flatten of [C, 6, 6]: its kernel needs its own reordering.
    layouts = {"classifier_1": _first_fc_kernel}
    assign_state_dict(
        model, state_dict, source="torchvision AlexNet", top=_TOP_DENSE, kernel_layouts=layouts
    )


def _first_fc_kernel(weight: np.ndarray) -> np.ndarray:
    """classifier.1 reads torch's channel-major flatten [C, 6, 6]; Keras flattens [6, 6, C]."""
    if weight.ndim != 2 or weight.shape[1] % (POOLED_SIZE * POOLED_SIZE):
        raise StateDictMismatchError(
            f"classifier.1.weight has shape {weight.shape}; expected [out, C * "
            f"{POOLED_SIZE} * {POOLED_SIZE}] as in a torchvision AlexNet."
        )
    out_features, in_features = weight.shape
    channels = in_features // (POOLED_SIZE * POOLED_SIZE)
    weight = weight.reshape(out_features, channels, POOLED_SIZE, POOLED_SIZE)
    return weight.transpose(2, 3, 1, 0).reshape(in_features, out_features)


SPEC = ModelSpec(
    name="alexnet",
    family="tlmed_keras",
    input_size=INPUT_SIZE,  # torchvision's; the original study used 227
    min_input_size=MIN_INPUT_SIZE,
    normalization="torch",
    weights_source=WEIGHTS_URL,
    num_blocks=7,  # len(blocks(backbone)) without the top: five convolutions, two FC layers
    build=checkpoint_builder("alexnet", WEIGHTS_URL, build_backbone),
    # The last convolution's ReLU, before its max-pool: the finest map of the last block.
    features=at_output("features_10_relu"),
    blocks=blocks,
    checkpoint_formats=READABLE_SUFFIXES,
)
register(SPEC)
