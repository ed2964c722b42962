"""Where a backbone's last spatial features are: each ``ModelSpec`` knows its feature layer.

As timm's pretrained configs name a model's feature layer, each spec carries ``features``: a
function that cuts a built backbone in two at its last spatial representation and returns a
``FeatureSplit``. ``split.features`` maps preprocessed images to that representation (a
CNN's last convolutional block ``[B, h, w, C]``, or a transformer's tokens ``[B, T, D]``);
``split.pool`` maps it on to the backbone's pooled output ``[B, F]``, so that
``pool(features(x)) == backbone(x)``. Class-activation maps (``tlmed_keras.saliency``) take
the gradient of a class score with respect to that representation.

``at_output(name)`` and ``at_input(name)`` cut a functional backbone at one layer (its output,
or what feeds it); the transformers of keras-hub, whose blocks live inside one encoder layer,
cut themselves (``kerashub``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras


@dataclasses.dataclass(frozen=True)
class FeatureSplit:
    """A backbone cut at its feature layer.

    Attributes:
        features: preprocessed images ``[B, S, S, 3]`` -> the feature map ``[B, h, w, C]`` or
            the tokens ``[B, T, D]``.
        pool: that map -> the backbone's output ``[B, F]``.
        prefix_tokens: None for a spatial map; for tokens, how many lead the patch tokens
            (class token, registers), which have no place on the image.
    """

    features: Callable
    pool: Callable
    prefix_tokens: int | None = None


Splitter = Callable[[keras.Model], FeatureSplit]


def _split_at(backbone: keras.Model, tensor, prefix_tokens: int | None) -> FeatureSplit:
    # Keras builds a functional model between any two tensors of one graph: the part above
    # the cut (pooling, a residual tail, fully connected layers) is kept whatever its shape.
    return FeatureSplit(
        features=keras.Model(backbone.input, tensor, name=f"{backbone.name}_features"),
        pool=keras.Model(tensor, backbone.output, name=f"{backbone.name}_pool"),
        prefix_tokens=prefix_tokens,
    )


def at_output(name: str, prefix_tokens: int | None = None) -> Splitter:
    """Splits a functional backbone after its layer ``name`` (called once in its graph)."""

    def split(backbone: keras.Model) -> FeatureSplit:
        return _split_at(backbone, backbone.get_layer(name).output, prefix_tokens)

    return split


def at_input(name: str) -> Splitter:
    """Splits a functional backbone before its layer ``name`` (e.g. the final pooling, when
    the map comes out of a nested model whose name Keras numbers)."""

    def split(backbone: keras.Model) -> FeatureSplit:
        return _split_at(backbone, backbone.get_layer(name).input, None)

    return split


def token_grid(tokens: int, prefix_tokens: int) -> int:
    """The side of the square patch grid that ``tokens`` tokens hold after ``prefix_tokens``.

    Raises:
        ValueError: the patch tokens do not fill a square (inputs here are always square).
    """
    patches = tokens - prefix_tokens
    side = int(round(patches**0.5))
    if patches < 1 or side * side != patches:
        raise ValueError(
            f"{tokens} tokens with {prefix_tokens} leading ones leave {patches} patch tokens, "
            "not a square grid; feature maps need square inputs."
        )
    return side
