"""The one preprocessing definition: resize, channel tripling, normalisation.

The same ``Preprocess`` layer is mapped over the tf.data pipeline in training and sits at the
front of the exported serving model, so training and serving cannot drift apart.

It subclasses Keras' ``DataLayer`` (keras.src, not yet exported publicly): inside a tf.data
graph its ``self.backend`` runs TensorFlow ops whatever the Keras backend is, and inside a
model it runs the active backend's ops. That is exactly the behaviour Keras' own
``Rescaling`` and ``Resizing`` layers rely on.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import platform

import keras
from keras.src.layers.preprocessing.data_layer import DataLayer
from keras.src.utils.backend_utils import DynamicBackend, in_tf_graph

INTERPOLATIONS = ("bilinear", "nearest", "bicubic")


@dataclasses.dataclass(frozen=True)
class Normalization:
    """How a backbone wants its pixels: ``(x[, channels] * scale - mean) / std``.

    ``x`` is the raw RGB image in [0, 255]. ``bgr`` reverses the channels first (the Caffe
    convention of keras.applications' VGG and ResNet).
    """

    scale: float
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    bgr: bool = False


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

NORMALIZATIONS = {
    # torchvision, timm, Hugging Face: [0, 1] then ImageNet mean / std.
    "torch": Normalization(scale=1 / 255, mean=IMAGENET_MEAN, std=IMAGENET_STD),
    # keras.applications VGG / ResNet v1: BGR, minus the ImageNet mean in 0-255 units.
    "caffe": Normalization(scale=1.0, mean=(103.939, 116.779, 123.68), bgr=True),
    # keras.applications Inception / MobileNet: [-1, 1].
    "tf": Normalization(scale=1 / 127.5, mean=(1.0, 1.0, 1.0)),
    # [0, 1]: models that normalise inside themselves.
    "unit": Normalization(scale=1 / 255),
    # BEiT / ViT checkpoints from Hugging Face: [0, 1] then mean 0.5 / std 0.5, i.e. [-1, 1].
    "half": Normalization(scale=1 / 255, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    # Google's EfficientNet-Lite checkpoints: (x - 127) / 128.
    "lite": Normalization(scale=1 / 128, mean=(127 / 128,) * 3),
}


def get_normalization(name_or_spec: str | Normalization) -> Normalization:
    """Returns a ``Normalization`` from a preset name (see ``NORMALIZATIONS``) or a spec."""
    if isinstance(name_or_spec, Normalization):
        return name_or_spec
    if name_or_spec not in NORMALIZATIONS:
        raise ValueError(
            f"Unknown normalization {name_or_spec!r}. Accepted: {', '.join(NORMALIZATIONS)}."
        )
    return NORMALIZATIONS[name_or_spec]


def _onednn_enabled() -> bool:
    """Whether TensorFlow runs oneDNN kernels: on x86-64 by default, or as
    ``TF_ENABLE_ONEDNN_OPTS`` says (runtime.setup sets it). Elsewhere the depthwise form has
    not been measured, so the broadcast form stays."""
    default = "1" if platform.machine().lower() in ("x86_64", "amd64") else "0"
    return os.environ.get("TF_ENABLE_ONEDNN_OPTS", default).lower() not in ("0", "false")


def _depthwise_affine(x, gain, offset):
    """``x * gain[c] - offset[c]`` as a 1x1 depthwise convolution + bias (TensorFlow): oneDNN
    does it in one kernel, 1.11x the streamed 224 px pipeline's rate of the broadcast multiply
    and subtract, same values (experiments/memory/README.md)."""
    import tensorflow as tf

    kernel = tf.constant([[[[g] for g in gain]]], tf.float32)  # [1, 1, channels, 1]
    y = tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "VALID")
    return tf.nn.bias_add(y, tf.constant([-o for o in offset], tf.float32))


def _affine(norm: Normalization) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(gain, offset)`` per channel: the normalisation is ``x * gain[c] - offset[c]``."""
    gain = tuple(norm.scale / s for s in norm.std)
    offset = tuple(m / s for m, s in zip(norm.mean, norm.std, strict=True))
    return gain, offset


@functools.cache
def xla_available() -> bool:
    """Whether this TensorFlow can JIT-compile a function with XLA on the CPU (probed once,
    eagerly, on a scalar: a build without XLA's CPU JIT fails here, not mid-epoch)."""
    import tensorflow as tf

    try:
        with tf.init_scope():
            probe = tf.function(lambda x: x * 2.0, jit_compile=True)
            return float(probe(tf.constant(1.5))) == 3.0
    except Exception:  # noqa: BLE001 - any failure means: do without XLA
        return False


@functools.cache
def _fused_conversion(gain: tuple[float, ...], offset: tuple[float, ...], bgr: bool):
    """uint8 ``[B, H, W, 1 or 3]`` -> ``x * gain[c] - offset[c]`` on 3 channels, one
    XLA-compiled kernel: cast, channel tripling or reversal and the affine map fused into ONE
    pass over the pixels, whatever the normalisation (TensorFlow has a one-pass op only for
    a single scale, ``Dequantize``)."""
    import tensorflow as tf

    tf_ops = DynamicBackend("tensorflow")

    @tf.function(jit_compile=True)
    def convert(images):
        x = _to_rgb(tf.cast(images, tf.float32), tf_ops, bgr)
        return x * tf.constant(gain, tf.float32) - tf.constant(offset, tf.float32)

    return convert


def _with_channel_axis(x, ops):
    """``[B, H, W]`` (grayscale stored without a channel axis) or ``[B, H, W, C]`` ->
    ``[B, H, W, C]``, C in {1, 3}.

    Raises:
        ValueError: another number of channels.
    """
    if len(x.shape) == 3:
        x = ops.numpy.expand_dims(x, -1)
    if x.shape[-1] not in (1, 3):
        raise ValueError(f"Preprocess takes 1 or 3 channels, got {x.shape[-1]}.")
    return x


def _to_rgb(x, ops, bgr: bool):
    """``[B, H, W, 1 or 3]`` -> 3 channels, reversed when the normalisation wants BGR."""
    if x.shape[-1] == 1:
        # Backbones are ImageNet RGB models: a grey image is the same value on 3 channels.
        # (repeat: ~1.8x faster than concatenate in TensorFlow at 224 px, measured)
        return ops.numpy.repeat(x, 3, axis=-1)
    return ops.numpy.flip(x, axis=-1) if bgr else x


@keras.saving.register_keras_serializable(package="tlmed_keras")
class Preprocess(DataLayer):
    """Raw MedMNIST images (uint8, ``[B, H, W]`` or ``[B, H, W, C]``, C in {1, 3}) to the
    float32 ``[B, size, size, 3]`` tensor a backbone expects.

    Args:
        image_size: side of the square the backbone takes.
        normalization: preset name from ``NORMALIZATIONS`` or a ``Normalization``.
        interpolation: "bilinear" (default), "nearest" (as MedMNIST's 224 baselines) or
            "bicubic".
    """

    def __init__(
        self,
        image_size: int,
        normalization: str | Normalization = "torch",
        interpolation: str = "bilinear",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(image_size) < 1:
            raise ValueError(f"image_size must be a positive integer, got {image_size!r}.")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"Unknown interpolation {interpolation!r}. Accepted: {', '.join(INTERPOLATIONS)}."
            )
        self.image_size = int(image_size)
        self.interpolation = interpolation
        self.normalization = get_normalization(normalization)

    def __call__(self, inputs, **kwargs):
        # Keras' DataLayer casts a TF graph's inputs to float32 before ``call``: a uint8 batch
        # that can take the one-pass conversion must be caught before that.
        one_pass = None if kwargs else self._dequantized(inputs)
        return one_pass if one_pass is not None else super().__call__(inputs, **kwargs)

    def map_batch(self, images):
        """The tf.data pipeline's call: ``self(images)``, except that a uint8 batch already at
        ``image_size`` goes to floats in one XLA-compiled pass (``_fused_conversion``) where
        TensorFlow has XLA: 2.5x less CPU than oneDNN's depthwise form for "torch" at 224 px
        (14.3 vs 35.9 ms per 128-image batch, experiments/memory/normalize_ops.py), the
        streamed pipeline's main cost. The same values
        within float rounding (XLA may fuse the multiply and subtract). Serving keeps the
        layer's own ops: a TF Serving build need not have XLA's JIT.
        """
        import tensorflow as tf

        at_size = tuple(images.shape[1:3]) == (self.image_size, self.image_size)
        if not (isinstance(images, tf.Tensor) and images.dtype == tf.uint8 and at_size):
            return self(images)
        if not xla_available():
            return self(images)
        gain, offset = _affine(self.normalization)
        x = _with_channel_axis(images, DynamicBackend("tensorflow"))
        return _fused_conversion(gain, offset, self.normalization.bgr)(x)

    def call(self, images):
        x = _with_channel_axis(self.backend.cast(images, "float32"), self.backend)
        # Resizing's weights sum to 1, so it commutes with the per-channel affine map: apply
        # the map at whichever side has fewer pixels (28 px MedMNIST -> 224 px: 64x fewer).
        height, width = x.shape[1], x.shape[2]
        known = height is not None and width is not None
        if known and height * width > self.image_size**2:
            x = self._resize(x)
        x = self._to_normalized_rgb(x)
        if not known or tuple(x.shape[1:3]) != (self.image_size, self.image_size):
            x = self._resize(x)
        return x

    def _dequantized(self, images):
        """In a TensorFlow graph only (tf.data, TF serving): uint8 images already at ``image_size``
        under a normalisation with one scale and one offset for all channels ("tf", "unit",
        "half") go to floats in ONE pass, TF's ``Dequantize`` (``x * scale + low``), instead
        of three (cast, multiply, subtract: ~53 % of the streamed 224 px pipeline's CPU,
        experiments/memory/README.md). None when that does not apply (other normalisations
        have per-channel constants, which TF has no one-pass op for)."""
        norm = self.normalization
        if len(set(norm.std)) != 1 or len(set(norm.mean)) != 1 or not in_tf_graph():
            return None
        import tensorflow as tf

        if not isinstance(images, tf.Tensor) or images.dtype != tf.uint8:
            return None
        if tuple(images.shape[1:3]) != (self.image_size, self.image_size):
            return None

        # x -> (x * scale - mean) / std for x in 0..255: low at 0, high at 255.
        low = -norm.mean[0] / norm.std[0]
        high = low + 255 * norm.scale / norm.std[0]
        x = tf.quantization.dequantize(
            tf.bitcast(images, tf.quint8), low, high, mode="MIN_COMBINED", dtype=tf.float32
        )
        tf_ops = DynamicBackend("tensorflow")  # self.backend is set only inside call
        return self._to_rgb(_with_channel_axis(x, tf_ops), tf_ops)

    def _resize(self, x):
        size = (self.image_size, self.image_size)
        return self.backend.image.resize(x, size, interpolation=self.interpolation)

    def _to_rgb(self, x, ops):
        return _to_rgb(x, ops, self.normalization.bgr)

    def _to_normalized_rgb(self, x):
        """Float ``[B, H, W, 1 or 3]`` -> normalised RGB (or BGR) ``[B, H, W, 3]``."""
        ops = self.backend
        x = self._to_rgb(x, ops)
        gain, offset = (list(v) for v in _affine(self.normalization))
        height, width = x.shape[1], x.shape[2]
        if height is None or width is None:
            return x * ops.convert_to_tensor(gain) - ops.convert_to_tensor(offset)
        if ops.name == "tensorflow" and _onednn_enabled():
            return _depthwise_affine(x, gain, offset)
        # Row layout [B, H, W*3]: TensorFlow's CPU broadcasting over an inner axis of 3 is
        # ~3x slower than over W*3 (measured at 224 px); XLA fuses either form.
        rows = ops.numpy.reshape(x, (-1, height, width * 3))
        rows = rows * ops.convert_to_tensor(gain * width) - ops.convert_to_tensor(offset * width)
        return ops.numpy.reshape(rows, (-1, height, width, 3))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.image_size, self.image_size, 3)

    def get_config(self):
        config = super().get_config()
        norm = self.normalization
        config.update(
            image_size=self.image_size,
            interpolation=self.interpolation,
            normalization={
                "scale": norm.scale,
                "mean": list(norm.mean),
                "std": list(norm.std),
                "bgr": norm.bgr,
            },
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        norm = config.pop("normalization")
        if isinstance(norm, dict):
            norm = Normalization(
                scale=norm["scale"],
                mean=tuple(norm["mean"]),
                std=tuple(norm["std"]),
                bgr=norm["bgr"],
            )
        return cls(normalization=norm, **config)
