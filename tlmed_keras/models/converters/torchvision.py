"""torchvision state dicts -> Keras weights, and a torchvision-faithful MobileNetV2.

Mapping rule: a Keras layer named after a torchvision module path with "_" for "."
(``features_2_conv_1_0`` <- ``features.2.conv.1.0``; Keras' torch backend forbids dots in
names) takes that module's parameters, transposed to Keras' layout. Every Keras weight must find its
key with the right shape and every checkpoint key must be used (or explicitly ignored), else
``WeightMismatchError`` names the first offender; nothing is assigned until all keys check out.

Why a separate MobileNetV2: keras.applications' MobileNetV2 pads its stride-2 convolutions
asymmetrically ("same": 0 before, 1 after) and uses batch-norm epsilon 1e-3, while torchvision
pads 1 on every side with epsilon 1e-5. Loading torchvision weights into the Keras layout
gives the right top-1 class but logits off by up to ~20, so ``mobilenet_v2_torchvision``
rebuilds torchvision's graph exactly.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping

import keras
import numpy as np

MOBILENET_V2_URL = "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth"
MOBILENET_V2_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"

# torch.nn.BatchNorm2d defaults; Keras' momentum is torch's (1 - momentum).
TORCH_BN_EPSILON = 1e-5
TORCH_BN_MOMENTUM = 0.9

# Checkpoint entries that carry no weights a Keras layer needs.
BOOKKEEPING_SUFFIXES = (".num_batches_tracked",)


class WeightMismatchError(ValueError):
    """A checkpoint's keys or shapes do not match the Keras model."""


# --- layout transforms: torch array -> Keras array -------------------------------------


def conv_kernel(weight: np.ndarray) -> np.ndarray:
    """Conv2d ``[out, in/groups, kh, kw]`` -> Keras Conv2D ``[kh, kw, in/groups, out]``."""
    return np.transpose(weight, (2, 3, 1, 0))


def depthwise_kernel(weight: np.ndarray, multiplier: int = 1) -> np.ndarray:
    """Depthwise Conv2d ``[C * m, 1, kh, kw]`` -> Keras DepthwiseConv2D ``[kh, kw, C, m]``."""
    channels = weight.shape[0] // multiplier
    grouped = weight.reshape(channels, multiplier, *weight.shape[2:])
    return np.transpose(grouped, (2, 3, 0, 1))


def dense_kernel(weight: np.ndarray) -> np.ndarray:
    """Linear ``[out, in]`` -> Keras Dense ``[in, out]``."""
    return np.transpose(weight)


def _identity(value: np.ndarray) -> np.ndarray:
    return value


# A plan lists, for one Keras layer, (Keras variable, torch parameter suffix, transform).
Plan = list[tuple[keras.Variable, str, Callable[[np.ndarray], np.ndarray]]]


def layer_plan(layer: keras.layers.Layer) -> Plan:
    """Which torch parameters fill ``layer``'s variables, and how to transpose them.

    Raises:
        WeightMismatchError: a layer type without a torch counterpart here.
    """
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        multiplier = layer.depth_multiplier
        plan = [(layer.kernel, "weight", lambda w: depthwise_kernel(w, multiplier))]
    elif isinstance(layer, keras.layers.Conv2D):
        plan = [(layer.kernel, "weight", conv_kernel)]
    elif isinstance(layer, keras.layers.Dense):
        plan = [(layer.kernel, "weight", dense_kernel)]
    elif isinstance(layer, keras.layers.BatchNormalization):
        return [
            (layer.gamma, "weight", _identity),
            (layer.beta, "bias", _identity),
            (layer.moving_mean, "running_mean", _identity),
            (layer.moving_variance, "running_var", _identity),
        ]
    elif isinstance(layer, keras.layers.LayerNormalization):
        return [(layer.gamma, "weight", _identity), (layer.beta, "bias", _identity)]
    else:
        raise WeightMismatchError(
            f"No torch mapping for Keras layer {layer.name!r} ({type(layer).__name__})."
        )
    if getattr(layer, "use_bias", False):
        plan.append((layer.bias, "bias", _identity))
    return plan


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
    ignore_prefixes: tuple[str, ...] = (),
    key_prefix: Callable[[keras.layers.Layer], str] | None = None,
) -> int:
    """Copies a torch state dict into ``model`` (all-or-nothing).

    Args:
        model: Keras model whose weighted layers are named after torch module paths (or
            mapped to them by ``key_prefix``).
        state: ``{torch key: array}`` as ``torch_pickle.load_state_dict`` returns.
        ignore_prefixes: checkpoint keys the model deliberately lacks (e.g. "classifier."
            for a headless backbone).
        key_prefix: torch module path of a Keras layer (default: its name with "_" -> ".").

    Returns:
        Number of arrays assigned.

    Raises:
        WeightMismatchError: a Keras weight without its key, a shape mismatch, or a
            checkpoint key nothing uses — the message names the first one.
    """
    key_prefix = key_prefix or torch_path
    assignments = []
    used = set()
    for layer in weighted_layers(model):
        prefix = key_prefix(layer)
        for variable, suffix, transform in layer_plan(layer):
            key = f"{prefix}.{suffix}"
            if key not in state:
                raise WeightMismatchError(
                    f"Checkpoint lacks {key!r}, needed by Keras layer {layer.name!r}. Is it "
                    "a checkpoint of this architecture?"
                )
            value = transform(np.asarray(state[key]))
            if tuple(value.shape) != tuple(variable.shape):
                raise WeightMismatchError(
                    f"Shape mismatch at {key!r}: checkpoint {tuple(state[key].shape)} (Keras "
                    f"layout {tuple(value.shape)}) vs Keras {layer.name!r}/{variable.name} "
                    f"{tuple(variable.shape)}."
                )
            assignments.append((variable, value))
            used.add(key)
    unused = [
        key
        for key in state
        if key not in used
        and not key.endswith(BOOKKEEPING_SUFFIXES)
        and not key.startswith(ignore_prefixes)
    ]
    if unused:
        raise WeightMismatchError(
            f"Checkpoint key {unused[0]!r} matches no Keras layer ({len(unused)} unmatched in "
            "all). Is it a checkpoint of this architecture?"
        )
    for variable, value in assignments:
        variable.assign(value.astype(variable.dtype))
    return len(assignments)


# --- torchvision MobileNetV2 ------------------------------------------------------------

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
    has_head = any(layer.name == "classifier_1" for layer in model.layers)
    return assign_state_dict(model, state, ignore_prefixes=() if has_head else ("classifier.",))


def fetch_mobilenet_v2_weights() -> str:
    """Downloads (once, into Keras' cache) torchvision's MobileNetV2 ImageNet weights.

    Returns:
        Local path of the verified ``.pth``.

    Raises:
        Exception: whatever ``keras.utils.get_file`` raises offline; callers re-raise it
            with context (see ``registry``).
    """
    return keras.utils.get_file(
        fname=os.path.basename(MOBILENET_V2_URL),
        origin=MOBILENET_V2_URL,
        file_hash=MOBILENET_V2_SHA256,
        cache_subdir="models",
    )
