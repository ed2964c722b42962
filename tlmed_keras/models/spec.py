"""``ModelSpec`` and ``register``: how a family module declares its backbones.

A family module (``keras_apps``, ``kerashub``, ``alexnet``, ...) builds one complete
``ModelSpec`` per backbone, with keyword fields, and hands it to ``register`` where it is
built; the registry only collects what the modules registered (see ``registry``).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import urllib.parse
from collections.abc import Callable

import keras

from tlmed_keras.data.preprocess import Normalization
from tlmed_keras.models.features import Splitter

# A builder: (input_shape, weights, include_top) -> keras.Model, where weights is None (random
# init), "imagenet" or a pathlib.Path to a framework checkpoint the family can convert.
Builder = Callable[[tuple[int, int, int], "str | pathlib.Path | None", bool], keras.Model]
Blocks = Callable[[keras.Model], list[list[keras.layers.Layer]]]


# Checkpoint files whose published name identifies them (a hash in the name, as torchvision's).
PUBLISHED_SUFFIXES = (".pth", ".pt")


class WeightsUnavailableError(RuntimeError):
    """ImageNet weights could not be fetched (typically: offline and not cached)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
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
        checkpoint_formats: local checkpoint suffixes with a converter (besides Keras files);
            the registry refuses the others before building.
        checkpoint_hint: appended to the refusal of a checkpoint without converter (e.g. a
            twin model that converts it).
        top_outputs: what ``include_top=True`` ends in: "logits" or "probabilities".
        pretrained_sizes: input sides the ImageNet weights work at (None: any >= min); e.g.
            ViT's position embeddings fix it to 224.
        build: the family builder (see ``Builder``).
        blocks: splits a built backbone into fine-tuning blocks, bottom to top.
        features: cuts a built backbone at its last spatial features (``features.Splitter``:
            a CNN's last convolutional block, a transformer's last block's patch tokens);
            what class-activation maps differentiate.
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
    features: Splitter = dataclasses.field(repr=False, compare=False)
    checkpoint_formats: tuple[str, ...] = ()
    pretrained_sizes: tuple[int, ...] | None = None
    checkpoint_hint: str = ""
    top_outputs: str = "logits"

    @property
    def published_file(self) -> str:
        """The file name its ImageNet weights are published under (the last part of a
        ``weights_source`` URL or file name naming a checkpoint, e.g.
        ``mobilenet_v2-b0353104.pth``), or "" when they come from a library
        (keras.applications, keras-hub). ``--weights=imagenet`` takes a local copy of it from
        ``--weights_dir`` or a cache before downloading (``tlmed_keras.weights_files``)."""
        first = self.weights_source.split()[0] if self.weights_source.strip() else ""
        name = os.path.basename(urllib.parse.urlparse(first).path)
        return name if name.endswith(PUBLISHED_SUFFIXES) else ""

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


def fetch_weights(name: str, url: str, *, fname: str, file_hash: str | None = None) -> pathlib.Path:
    """Downloads ``url`` once into Keras' cache (``models/fname``) and returns its path.

    Raises:
        WeightsUnavailableError: offline and not cached (names the source and the ways out).
    """
    try:
        return pathlib.Path(
            keras.utils.get_file(
                fname=fname, origin=url, file_hash=file_hash, cache_subdir="models"
            )
        )
    except Exception as err:
        if is_download_failure(err):
            raise unavailable(name, url, err) from err
        raise


def checkpoint_builder(
    name: str,
    url: str,
    build_backbone: Callable[..., keras.Model],
    *,
    fname: str | None = None,
    file_hash: str | None = None,
) -> Builder:
    """The ``Builder`` of a model that converts framework checkpoints itself.

    Args:
        name: registry name (for errors; prefixes the cached file by default, since Hugging
            Face files are all called "model.safetensors").
        url: where ``weights="imagenet"`` downloads the checkpoint from.
        build_backbone: ``(input_shape, weights_path_or_None, include_top=...) -> Model``.
        fname: name of the cached file (default ``{name}-{basename(url)}``).
        file_hash: sha256 the download must have.
    """
    fname = fname or f"{name}-{os.path.basename(url)}"

    def build(input_shape, weights, include_top):
        if weights == "imagenet":
            weights = fetch_weights(name, url, fname=fname, file_hash=file_hash)
        path = None if weights is None else str(weights)
        return build_backbone(tuple(input_shape), path, include_top=include_top)

    return build


# Every spec the family modules registered, by name, in registration order.
REGISTERED: dict[str, ModelSpec] = {}


def register(*specs: ModelSpec) -> None:
    """Adds ``specs`` to the zoo; call it in the module that defines them.

    Raises:
        ValueError: a name registered twice (names the module-level clash to fix).
    """
    for spec in specs:
        if spec.name in REGISTERED:
            first = REGISTERED[spec.name].family
            raise ValueError(
                f"Model name {spec.name!r} is registered twice (families {first!r} and "
                f"{spec.family!r}); give the new backbone another name."
            )
        REGISTERED[spec.name] = spec
