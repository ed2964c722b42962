"""``ModelSpec``: what the registry knows about one backbone (shared by the families)."""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Callable

import keras

from tlmed_keras.data.preprocess import Normalization

# A builder: (input_shape, weights, include_top) -> keras.Model, where weights is None (random
# init), "imagenet" or a pathlib.Path to a framework checkpoint the family can convert.
Builder = Callable[[tuple[int, int, int], "str | pathlib.Path | None", bool], keras.Model]
Blocks = Callable[[keras.Model], list[list[keras.layers.Layer]]]


class WeightsUnavailableError(RuntimeError):
    """ImageNet weights could not be fetched (typically: offline and not cached)."""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything the trainer needs to know about one backbone.

    Attributes:
        name: registry name (``--model``).
        input_size: native square input side of the ImageNet weights.
        min_input_size: smallest side the architecture accepts.
        normalization: preset name in ``preprocess.NORMALIZATIONS`` (or a ``Normalization``).
        weights_source: where ``weights="imagenet"`` comes from (URL or preset).
        num_blocks: how many blocks ``set_trainable(..., N)`` can unfreeze.
        family: "keras.applications", "keras-hub", "torchvision" or "tlmed_keras".
        checkpoint_formats: local checkpoint suffixes with a converter (besides Keras files).
        pretrained_sizes: input sides the ImageNet weights work at (None: any >= min); e.g.
            ViT's position embeddings fix it to 224.
        build: the family builder (see ``Builder``).
        blocks: splits a built backbone into fine-tuning blocks, bottom to top.
    """

    name: str
    input_size: int
    min_input_size: int
    normalization: str | Normalization
    weights_source: str
    num_blocks: int
    family: str
    build: Builder = dataclasses.field(repr=False, compare=False)
    blocks: Blocks = dataclasses.field(repr=False, compare=False)
    checkpoint_formats: tuple[str, ...] = ()
    pretrained_sizes: tuple[int, ...] | None = None

    def check_image_size(self, image_size: int | None, pretrained: bool = False) -> int:
        """Returns the input side to build at (``input_size`` when None).

        Raises:
            ValueError: below ``min_input_size``, or a size the pretrained weights can't take.
        """
        size = self.input_size if image_size is None else image_size
        if isinstance(size, bool) or not isinstance(size, int):
            raise ValueError(f"image_size must be an int, got {image_size!r}.")
        if size < self.min_input_size:
            raise ValueError(
                f"{self.name} needs inputs of at least {self.min_input_size}x"
                f"{self.min_input_size} px, got image_size={size}. Use a larger image_size "
                f"(native: {self.input_size})."
            )
        if pretrained and self.pretrained_sizes and size not in self.pretrained_sizes:
            raise ValueError(
                f"{self.name}'s pretrained weights only work at image_size in "
                f"{self.pretrained_sizes}, got {size}."
            )
        return size


def keras_home_models() -> str:
    """Keras' download cache for weights (``$KERAS_HOME/models``, read at Keras import)."""
    from keras.src.backend import config

    return os.path.join(config.keras_home(), "models")


def unavailable(name: str, source: str, err: BaseException) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"Could not get the ImageNet weights of {name!r} from {source}: {err}. If offline, "
        f"fetch the file elsewhere and pass --weights=/path/to/file, or place it in Keras' "
        f"cache {keras_home_models()} (set KERAS_HOME to move it), or use --weights=none."
    )


def is_download_failure(err: BaseException) -> bool:
    # keras.utils.get_file turns URLError/HTTPError into a bare Exception("URL fetch failure").
    return isinstance(err, OSError) or "fetch failure" in str(err).lower()
