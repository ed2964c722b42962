"""Fused batch normalisation for the TensorFlow backend (issue #14: CPU training speed).

Keras 3's ``BatchNormalization`` computes the batch moments and the normalisation as separate
element-wise ops (mean, squared difference, mean, subtract, multiply, add, ... and as many
again for the gradient). tf.keras used TensorFlow's fused kernel instead (``fused=True``), and
so does PyTorch: one ``FusedBatchNormV3`` op forward and one gradient op backward, which
oneDNN runs as a single pass over the feature map. On a CPU, where those maps are memory
bound, the element-wise form costs 15-40 % of a training step (measured: profile in
``experiments/cpu_speed/README.md``).

``FusedBatchNormalization`` is ``BatchNormalization`` with the same variables, config and
results (up to float rounding: the moving variance is still the population variance, as
Keras keeps it), whose ``call`` uses the fused kernel where it applies: TensorFlow backend,
4-D channels-last inputs, no mask, no renorm. Anywhere else it is the Keras layer.
``fuse_batch_norm(model)`` switches a built model's plain ``BatchNormalization`` layers to it
in place (weights untouched; ``isinstance(layer, BatchNormalization)`` stays true).
``TLMED_KERAS_FUSED_BN=0`` in the environment turns the switch off, for before/after
benchmarks.
"""

from __future__ import annotations

import os

import keras

ENV_SWITCH = "TLMED_KERAS_FUSED_BN"


def enabled() -> bool:
    """Whether ``fuse_batch_norm`` switches layers: TensorFlow backend, not turned off."""
    return keras.backend.backend() == "tensorflow" and os.environ.get(ENV_SWITCH, "1") != "0"


@keras.saving.register_keras_serializable(package="tlmed_keras")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """``BatchNormalization`` through TensorFlow's fused kernel where it applies."""

    def _fusable(self, inputs, mask) -> bool:
        return (
            keras.backend.backend() == "tensorflow"
            and mask is None
            and not self.renorm
            and not getattr(self, "synchronized", False)
            and len(inputs.shape) == 4
            and self.axis in ([3], [-1], 3, -1)
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        learning = bool(training) and self.trainable
        channels = inputs.shape[-1]
        # The kernel takes float16/bfloat16 inputs with float32 statistics, so a mixed
        # policy needs no casts around it (Keras' layer upcasts the whole map to float32).
        x = inputs if inputs.dtype in (tf.float16, tf.bfloat16) else tf.cast(inputs, tf.float32)
        ones, zeros = tf.ones([channels], tf.float32), tf.zeros([channels], tf.float32)
        scale = tf.cast(self.gamma, tf.float32) if self.scale else ones
        offset = tf.cast(self.beta, tf.float32) if self.center else zeros
        mean, variance = self.moving_mean, self.moving_variance
        # tf.raw_ops, not tf.nn.fused_batch_norm: the wrapper raises epsilon to cuDNN's
        # minimum (1.001e-5), which would change models built with a smaller one.
        y, batch_mean, batch_variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=x,
            scale=scale,
            offset=offset,
            mean=zeros if learning else tf.cast(mean, tf.float32),
            variance=zeros if learning else tf.cast(variance, tf.float32),
            epsilon=self.epsilon,
            exponential_avg_factor=1.0,
            data_format="NHWC",
            is_training=learning,
        )
        if learning:
            self._update_moving_statistics(x, batch_mean, batch_variance)
        return tf.cast(y, self.compute_dtype)

    def _update_moving_statistics(self, x, batch_mean, batch_variance) -> None:
        import tensorflow as tf

        # The kernel returns the unbiased (n - 1) batch variance; Keras' moving variance
        # averages the population (n) one, which the normalisation itself used.
        n = tf.cast(tf.size(x) // tf.shape(x)[-1], tf.float32)
        population = batch_variance * (n - 1.0) / tf.maximum(n, 1.0)
        m = self.momentum
        self.moving_mean.assign(self.moving_mean * m + batch_mean * (1.0 - m))
        self.moving_variance.assign(self.moving_variance * m + population * (1.0 - m))


def fuse_batch_norm(model: keras.Model) -> int:
    """Switches every plain ``BatchNormalization`` layer of ``model`` (nested models
    included) to ``FusedBatchNormalization``, in place; returns how many. Nothing changes
    when ``enabled()`` is false.

    The class of each layer object is swapped rather than the model cloned: variables,
    names, weight order and the functional graph stay exactly as built, and a layer of the
    subclass behaves as the Keras one wherever the fused kernel does not apply.
    """
    if not enabled():
        return 0
    count = 0
    for layer in _all_layers(model):
        if type(layer) is keras.layers.BatchNormalization:
            layer.__class__ = FusedBatchNormalization
            count += 1
    return count


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)
