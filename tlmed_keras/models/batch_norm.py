"""Fused batch normalisation for the TensorFlow backend (issue #14: CPU training speed).

Keras 3's ``BatchNormalization`` computes the batch moments and the normalisation as separate
element-wise ops (mean, squared difference, mean, subtract, multiply, add, ... and as many
again for the gradient). tf.keras used TensorFlow's fused kernel instead (``fused=True``), and
so does PyTorch: one ``FusedBatchNormV3`` op forward and one gradient op backward, which
oneDNN runs as a single pass over the feature map. On a CPU, where those maps are memory
bound, the element-wise form costs 15-40 % of a training step (measured: profile in
``experiments/cpu_speed/README.md``).

``fuse_batch_norm(model)`` routes the ``call`` of a built model's ``BatchNormalization``
layers through ``fused_call``: the same results (up to float rounding: the moving variance
is still the population variance, as Keras keeps it) through the fused kernel where it
applies (TensorFlow backend, 4-D channels-last inputs, no mask, no renorm), Keras' own
``call`` anywhere else. The layers stay Keras' class: saved files do not change.
``TLMED_KERAS_FUSED_BN=0`` in the environment turns the switch off, for before/after
benchmarks.
"""

from __future__ import annotations

import functools
import os

import keras

ENV_SWITCH = "TLMED_KERAS_FUSED_BN"


def enabled() -> bool:
    """Whether ``fuse_batch_norm`` switches layers: TensorFlow backend, not turned off."""
    return keras.backend.backend() == "tensorflow" and os.environ.get(ENV_SWITCH, "1") != "0"


def fused_call(layer, inputs, training=None, mask=None):
    """``layer.call`` (a Keras ``BatchNormalization``) through the fused kernel where it
    applies, else Keras' own ``call``."""
    if not _fusable(layer, inputs, mask):
        return keras.layers.BatchNormalization.call(layer, inputs, training=training, mask=mask)
    import tensorflow as tf

    learning = bool(training) and layer.trainable
    channels = inputs.shape[-1]
    # The kernel takes float16/bfloat16 inputs with float32 statistics, so a mixed
    # policy needs no casts around it (Keras' layer upcasts the whole map to float32).
    x = inputs if inputs.dtype in (tf.float16, tf.bfloat16) else tf.cast(inputs, tf.float32)
    ones, zeros = tf.ones([channels], tf.float32), tf.zeros([channels], tf.float32)
    scale = tf.cast(layer.gamma, tf.float32) if layer.scale else ones
    offset = tf.cast(layer.beta, tf.float32) if layer.center else zeros
    mean, variance = layer.moving_mean, layer.moving_variance
    # tf.raw_ops, not tf.nn.fused_batch_norm: the wrapper raises epsilon to cuDNN's
    # minimum (1.001e-5), which would change models built with a smaller one.
    y, batch_mean, batch_variance, *_ = tf.raw_ops.FusedBatchNormV3(
        x=x,
        scale=scale,
        offset=offset,
        mean=zeros if learning else tf.cast(mean, tf.float32),
        variance=zeros if learning else tf.cast(variance, tf.float32),
        epsilon=layer.epsilon,
        exponential_avg_factor=1.0,
        data_format="NHWC",
        is_training=learning,
    )
    if learning:
        _update_moving_statistics(layer, x, batch_mean, batch_variance)
    return tf.cast(y, layer.compute_dtype)


def _fusable(layer, inputs, mask) -> bool:
    return (
        keras.backend.backend() == "tensorflow"
        and mask is None
        and not layer.renorm
        and not getattr(layer, "synchronized", False)
        and len(inputs.shape) == 4
        and layer.axis in (3, -1)  # Keras keeps it as given: an int
    )


def _update_moving_statistics(layer, x, batch_mean, batch_variance) -> None:
    import tensorflow as tf

    # The kernel returns the unbiased (n - 1) batch variance; Keras' moving variance
    # averages the population (n) one, which the normalisation itself used.
    n = tf.cast(tf.size(x) // tf.shape(x)[-1], tf.float32)
    population = batch_variance * (n - 1.0) / tf.maximum(n, 1.0)
    m = layer.momentum
    layer.moving_mean.assign(layer.moving_mean * m + batch_mean * (1.0 - m))
    layer.moving_variance.assign(layer.moving_variance * m + population * (1.0 - m))


def fuse_layer(layer: keras.layers.BatchNormalization) -> None:
    """Routes one Keras ``BatchNormalization`` layer's ``call`` through ``fused_call``."""
    layer.call = functools.partial(fused_call, layer)


def is_routed(layer) -> bool:
    """Whether ``layer.call`` was replaced in place (here, or by ``folding``): a partial."""
    return isinstance(getattr(layer, "call", None), functools.partial)


def is_fused(layer) -> bool:
    # A batch norm's call is only ever replaced by fused_call or by folding's call, which
    # runs fused_call whenever the batch norm is not folded away.
    return is_routed(layer)


def fuse_batch_norm(model: keras.Model) -> int:
    """Routes every ``BatchNormalization`` layer of ``model`` (nested models included)
    through the fused kernel, in place; returns how many. Nothing changes when
    ``enabled()`` is false.

    Only the layer object's ``call`` is replaced: its class, variables, names and config
    stay Keras' own, so a saved ``model.keras`` or ``.weights.h5`` is exactly what the
    unfused model writes (Keras names saved variables after the class) and loads anywhere.
    """
    if not enabled():
        return 0
    count = 0
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization) and not is_fused(layer):
            fuse_layer(layer)
            count += 1
    return count


def _all_layers(model):
    # Keras' own walk (as registry._sublayers): nested models and layers held as attributes.
    return model._flatten_layers(include_self=False, recursive=True)
