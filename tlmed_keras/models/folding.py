"""Convolutions that absorb their neighbours, for the TensorFlow backend (CPU training speed).

Three patterns of CNN backbones cost a CPU whole passes over feature maps that a convolution
can do for free or faster (profile and A/B: ``experiments/cpu_speed/README.md``, issue #12):

- **Batch norm after a convolution, in inference mode** (a frozen backbone: the recipe's
  ``--batchnorm`` default when fine-tuning pretrained weights; and every evaluation). It is
  then a fixed per-channel ``x * a + b`` with ``a = gamma / sqrt(var + eps)`` and
  ``b = beta - mean * a``, so ``bn(conv(x, W)) == conv(x, W * a) + b``: a kernel scaled once
  per step and a bias add that oneDNN fuses into the convolution, instead of a batch-norm
  kernel forward and its gradient backward over the whole map.
- **Zero padding before a "valid" convolution** (torchvision-layout models pad symmetrically
  by hand): when it equals TensorFlow's "same" padding the convolution does it itself;
  otherwise a plain convolution takes it as explicit paddings.
- **1x1 convolutions** (stride 1): one MatMul over the channels, whose gradients are matrix
  products that TensorFlow's CPU GEMM runs ~1.4x faster than the convolution gradient
  kernels on channels-last maps (MobileNetV2's shapes, batch 32).

The trainable variables stay the same ones (``W``, not ``W * a``: the optimizer, weight decay
and checkpoints see what they saw before) and the results are the same up to float rounding
(tests compare outputs, gradients and batch-norm statistics with the unrouted model). Batch
norm that learns (a training call of a trainable layer) is left to ``batch_norm.fused_call``.

``fold_convolutions(model)`` routes the ``call`` of matching layers in place, as
``batch_norm.fuse_batch_norm`` does: classes, variables and configs stay Keras' own, so saved
files do not change. A neighbour is absorbed only when the graph says nothing else sees the
map between them: the padding feeds only the convolution, the convolution (called once,
linear activation) feeds only the batch norm. ``TLMED_KERAS_FOLD=0`` turns it all off (for
before/after benchmarks).
"""

from __future__ import annotations

import functools
import os

import keras

from tlmed_keras.models import batch_norm

ENV_SWITCH = "TLMED_KERAS_FOLD"
_CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
# Set on a batch norm by the folding convolution's call, outside Keras' attribute tracking.
_FOLDED_NOW = "_tlmed_folded_now"


def enabled() -> bool:
    """Whether ``fold_convolutions`` routes layers: TensorFlow backend, not turned off."""
    return keras.backend.backend() == "tensorflow" and os.environ.get(ENV_SWITCH, "1") != "0"


# --- the routed calls --------------------------------------------------------------------


def folded_conv_call(conv, inputs, *, padding=None, bn=None):
    """``conv.call`` with the zero ``padding`` before it (``((top, bottom), (left, right))``
    or None) and, when that batch norm runs in inference mode, ``bn`` after it."""
    import tensorflow as tf

    fold = bn is not None and not _bn_learns(bn, _training_context())
    if bn is not None:  # read (and cleared) by the batch norm's call, which comes next
        object.__setattr__(bn, _FOLDED_NOW, fold)
    # The folding arithmetic in float32 at least (bfloat16 kernels are cast after it).
    exact = tf.float64 if conv.compute_dtype == "float64" else tf.float32
    kernel = tf.cast(conv.kernel, exact)
    bias = tf.cast(conv.bias, exact) if conv.use_bias else None
    if fold:
        scale, shift = _scale_and_shift(bn, exact)
        depthwise = isinstance(conv, keras.layers.DepthwiseConv2D)
        kernel = kernel * (tf.reshape(scale, kernel.shape[2:]) if depthwise else scale)
        bias = shift if bias is None else bias * scale + shift
    dtype = conv.compute_dtype
    x = _convolve(conv, tf.cast(inputs, dtype), tf.cast(kernel, dtype), padding)
    if bias is not None:
        x = tf.nn.bias_add(x, tf.cast(bias, dtype))
    if fold:
        return tf.cast(x, bn.compute_dtype)
    return x if _linear(conv) else conv.activation(x)


def folded_bn_call(bn, inputs, training=None, mask=None):
    """``bn.call``: the identity when the convolution before it has just applied it, else the
    fused kernel (``batch_norm.fused_call``)."""
    folded = getattr(bn, _FOLDED_NOW, None)
    object.__setattr__(bn, _FOLDED_NOW, None)
    if not folded:
        return batch_norm.fused_call(bn, inputs, training=training, mask=mask)
    if _bn_learns(bn, training):  # the two calls disagree: never silently skip learning
        raise RuntimeError(
            f"Batch norm {bn.name!r} was folded into the convolution before it but then "
            f"called in training mode; set {ENV_SWITCH}=0 to run this model unfolded."
        )
    return inputs


def skipped_pad_call(pad, inputs):
    """``ZeroPadding2D.call`` when the convolution after it pads: the identity."""
    return inputs


def _training_context():
    """The ``training`` value Keras hands to the layers of the call in progress (None, which
    Keras treats as inference, when unset)."""
    try:
        from keras.src.backend.common import global_state
    except ImportError:  # another Keras layout: assume training, so only frozen BN folds
        return True
    context = global_state.get_global_attribute("current_call_ctx")
    return None if context is None else context.get_value("training")


def _bn_learns(bn, training) -> bool:
    """``BatchNormalization``'s own rule: batch statistics (and moving-average updates)
    only in a training call of a trainable layer."""
    return bool(training) and bn.trainable


def _scale_and_shift(bn, dtype):
    """``(a, b)``, ``[C]`` in ``dtype``: the inference-mode batch norm as ``x * a + b``."""
    import tensorflow as tf

    scale = tf.math.rsqrt(tf.cast(bn.moving_variance, dtype) + bn.epsilon)
    if bn.scale:
        scale = scale * tf.cast(bn.gamma, dtype)
    shift = -tf.cast(bn.moving_mean, dtype) * scale
    if bn.center:
        shift = shift + tf.cast(bn.beta, dtype)
    return scale, shift


# --- the convolution itself ----------------------------------------------------------------


def _convolve(conv, x, kernel, padding):
    """``conv``'s convolution of ``x`` by ``kernel``, zero ``padding`` first (or None)."""
    import tensorflow as tf

    if padding is None and _pointwise(conv):
        return _pointwise_matmul(x, kernel)
    strides = [1, *conv.strides, 1]
    pads = conv.padding.upper() if padding is None else _padding_argument(conv, x.shape, padding)
    if isinstance(conv, keras.layers.DepthwiseConv2D):
        if isinstance(pads, list):
            # TF 2.21's oneDNN depthwise kernel aborts the process on explicit paddings in
            # a graph ("Check failed ... tensor_format.h"): pad as a separate op.
            x, pads = tf.pad(x, pads), "VALID"
        return tf.nn.depthwise_conv2d(x, kernel, strides, pads, dilations=conv.dilation_rate)
    return tf.nn.conv2d(x, kernel, strides, pads, dilations=[1, *conv.dilation_rate, 1])


def _pointwise(conv) -> bool:
    """A 1x1 convolution, stride 1, one group: a matrix product over the channels."""
    return (
        not isinstance(conv, keras.layers.DepthwiseConv2D)
        and tuple(conv.kernel_size) == (1, 1)
        and tuple(conv.strides) == (1, 1)
        and conv.groups == 1
    )


def _pointwise_matmul(x, kernel):
    """``conv2d(x, kernel)`` for a 1x1 ``kernel``, as one MatMul of ``[pixels, C_in]``."""
    import tensorflow as tf

    channels_in, channels_out = kernel.shape[2], kernel.shape[3]
    y = tf.matmul(tf.reshape(x, [-1, channels_in]), tf.reshape(kernel, [channels_in, -1]))
    return tf.reshape(y, tf.concat([tf.shape(x)[:-1], [channels_out]], axis=0))


def _padding_argument(conv, shape, padding):
    """``"SAME"`` when TensorFlow's "same" padding of ``shape`` is exactly ``padding``
    (``((top, bottom), (left, right))``), else the explicit list TensorFlow takes."""
    if all(tuple(padding[axis]) == _same_padding(shape[1 + axis], conv, axis) for axis in (0, 1)):
        return "SAME"
    return [[0, 0], list(padding[0]), list(padding[1]), [0, 0]]


def _same_padding(size, conv, axis: int) -> tuple[int, int] | None:
    """TensorFlow's "same" padding ``(before, after)`` of one spatial axis of ``size`` (an
    odd extra pixel goes after); None for an unknown size."""
    if size is None:
        return None
    stride, dilation = conv.strides[axis], conv.dilation_rate[axis]
    span = dilation * (conv.kernel_size[axis] - 1) + 1
    total = max((-(-size // stride) - 1) * stride + span - size, 0)
    return total // 2, total - total // 2


# --- finding what to route -----------------------------------------------------------------


def _linear(conv) -> bool:
    return conv.activation in (None, keras.activations.linear)


def _called_once(layer) -> bool:
    return len(layer._inbound_nodes) == 1


def _only_consumer(layer):
    """The one layer ``layer``'s only call feeds (None when it feeds several or none)."""
    if not _called_once(layer) or len(layer._outbound_nodes) != 1:
        return None
    return layer._outbound_nodes[0].operation


def _only_producer(layer):
    """The layer whose output is the only input of ``layer``'s only call (None when the
    input is a model input, or there are several)."""
    if not _called_once(layer):
        return None
    node = layer._inbound_nodes[0]
    if len(node.parent_nodes) != 1 or len(node.arguments.keras_tensors) != 1:
        return None
    return node.parent_nodes[0].operation


def _routable_conv(layer) -> bool:
    return (
        isinstance(layer, _CONVOLUTIONS)
        and not batch_norm.is_routed(layer)
        and layer.data_format == "channels_last"
        and getattr(layer, "quantization_mode", None) is None
    )


def _absorbed_padding(conv):
    """The ``ZeroPadding2D`` whose output only ``conv`` (padding "valid") takes, or None."""
    pad = _only_producer(conv)
    if (
        conv.padding == "valid"
        and isinstance(pad, keras.layers.ZeroPadding2D)
        and not batch_norm.is_routed(pad)
        and _only_consumer(pad) is conv
        and pad.data_format == "channels_last"
    ):
        return pad
    return None


def _absorbed_batch_norm(conv):
    """The batch norm (already routed to the fused kernel) that alone takes ``conv``'s output
    (linear activation), or None."""
    bn = _only_consumer(conv) if _linear(conv) else None
    if (
        isinstance(bn, keras.layers.BatchNormalization)
        and batch_norm.is_fused(bn)
        and _called_once(bn)
        and not bn.renorm
        and not getattr(bn, "synchronized", False)
        and bn.axis in (3, -1)
    ):
        return bn
    return None


def _plan(model) -> dict:
    """``{conv: (padding layer or None, batch norm or None)}`` for every convolution of
    ``model`` (nested models included) that is routed: one that absorbs a neighbour, and
    every 1x1 convolution (its MatMul)."""
    plan: dict = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if not _routable_conv(layer):
            continue
        pad, bn = _absorbed_padding(layer), _absorbed_batch_norm(layer)
        if pad is not None or bn is not None or _pointwise(layer):
            plan[layer] = (pad, bn)
    return plan


def fold_convolutions(model: keras.Model) -> dict[str, int]:
    """Routes every convolution of ``model`` that absorbs its zero padding or batch norm, and
    every 1x1 convolution, through ``folded_conv_call``, in place (after
    ``batch_norm.fuse_batch_norm``). Nothing changes when ``enabled()`` is false.

    Returns:
        ``{"batch_norm": n, "padding": m, "pointwise": k}``: how many of each were routed.
    """
    counts = {"batch_norm": 0, "padding": 0, "pointwise": 0}
    if not enabled():
        return counts
    for conv, (pad, bn) in _plan(model).items():
        if pad is not None:
            pad.call = functools.partial(skipped_pad_call, pad)
            counts["padding"] += 1
        if bn is not None:
            bn.call = functools.partial(folded_bn_call, bn)
            counts["batch_norm"] += 1
        counts["pointwise"] += int(_pointwise(conv) and pad is None)
        padding = None if pad is None else pad.padding
        conv.call = functools.partial(folded_conv_call, conv, padding=padding, bn=bn)
    return counts
