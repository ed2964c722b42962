"""The one preprocessing definition: channel tripling, normalisation, resize.

The same ``Preprocess`` layer is mapped over the tf.data pipeline in training and sits at the
front of the exported serving model, so training and serving cannot drift apart.

It subclasses Keras' ``DataLayer`` (keras.src, not yet exported publicly): inside a tf.data
graph its ``self.backend`` runs TensorFlow ops whatever the Keras backend is, and inside a
model it runs the active backend's ops. That is exactly the behaviour Keras' own
``Rescaling`` and ``Resizing`` layers rely on.
"""

from __future__ import annotations

import dataclasses

import keras
from keras.src.layers.preprocessing.data_layer import DataLayer

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

    def call(self, images):
        ops = self.backend
        x = ops.cast(images, "float32")
        if len(x.shape) == 3:  # grayscale stored without a channel axis
            x = ops.numpy.expand_dims(x, -1)
        channels = x.shape[-1]
        if channels not in (1, 3):
            raise ValueError(f"Preprocess takes 1 or 3 channels, got {channels}.")
        # Normalise before resizing: resize weights sum to 1, so the per-channel affine map
        # commutes with it, and at the stored 28-128 px it costs up to 64x less than at 224 px
        # (measured: the whole layer ~3.5x cheaper). A grey image (1 channel) broadcasts
        # against the 3-channel mean/std, which also triples it: backbones are RGB models.
        norm = self.normalization
        if norm.bgr and channels == 3:
            x = ops.numpy.flip(x, axis=-1)
        gain = ops.convert_to_tensor([norm.scale / s for s in norm.std], dtype="float32")
        offset = ops.convert_to_tensor(
            [m / s for m, s in zip(norm.mean, norm.std, strict=True)], dtype="float32"
        )
        x = x * gain - offset
        if tuple(x.shape[1:3]) != (self.image_size, self.image_size):
            x = ops.image.resize(
                x, (self.image_size, self.image_size), interpolation=self.interpolation
            )
        return x

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
