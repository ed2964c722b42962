"""Backbones from keras.applications: builders and their fine-tuning blocks.

Each entry wraps the application with ``include_top=False, pooling="avg"`` so the backbone
returns pooled features ``[B, F]``; with ``include_top=True`` it is the full ImageNet
classifier (softmax probabilities, as keras.applications ships it).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import keras


@dataclasses.dataclass(frozen=True)
class KerasApp:
    """How to build one keras.applications model and cut it into blocks.

    Attributes:
        constructor: name of the function in ``keras.applications``.
        block_pattern: regex on layer names; its first group names the block a layer belongs
            to (consecutive layers with the same group form one block).
        block_end: if True, ``block_pattern`` instead matches the *last* layer of each block
            (for graphs whose inner layer names are generic, as InceptionV3's).
    """

    constructor: str
    block_pattern: str
    block_end: bool = False

    def build(self, input_shape, weights: str | None, include_top: bool = False) -> keras.Model:
        """Builds the application; ``weights`` is "imagenet", None or a weights file."""
        constructor: Callable[..., keras.Model] = getattr(keras.applications, self.constructor)
        if include_top:
            # keras.applications fixes the head's input size: always the native one.
            return constructor(include_top=True, weights=weights)
        return constructor(
            include_top=False, weights=weights, input_shape=tuple(input_shape), pooling="avg"
        )

    def blocks(self, backbone: keras.Model) -> list[list[keras.layers.Layer]]:
        """Fine-tuning blocks bottom to top (stem excluded; trailing layers join the top)."""
        pattern = re.compile(self.block_pattern)
        if self.block_end:
            return _blocks_by_end(backbone.layers, pattern)
        return _blocks_by_group(backbone.layers, pattern)


def _blocks_by_group(layers, pattern: re.Pattern) -> list[list[keras.layers.Layer]]:
    blocks: list[list[keras.layers.Layer]] = []
    current_key = None
    for layer in layers:
        match = pattern.match(layer.name)
        if match and match.group(1) != current_key:
            current_key = match.group(1)
            blocks.append([])
        if blocks:  # before the first match: the stem, which is never a block
            blocks[-1].append(layer)
    return blocks


def _blocks_by_end(layers, pattern: re.Pattern) -> list[list[keras.layers.Layer]]:
    blocks: list[list[keras.layers.Layer]] = []
    pending: list[keras.layers.Layer] = []
    for layer in layers:
        pending.append(layer)
        if pattern.match(layer.name):
            blocks.append(pending)
            pending = []
    if not blocks:
        return blocks
    blocks[-1].extend(pending)  # final pooling etc. joins the top block
    # InceptionV3's stem ends with its last max-pool before mixed0's branches; its inner
    # layers have generic names ("conv2d_7"), so the layer type marks the cut.
    first = blocks[0]
    pools = [i for i, layer in enumerate(first) if isinstance(layer, keras.layers.MaxPooling2D)]
    if pools:
        blocks[0] = first[pools[-1] + 1 :]
    return blocks


KERAS_APPS = {
    "vgg16": KerasApp("VGG16", r"^(block\d+)_"),
    "vgg19": KerasApp("VGG19", r"^(block\d+)_"),
    "resnet50": KerasApp("ResNet50", r"^(conv\d_block\d+)_"),
    "resnet101": KerasApp("ResNet101", r"^(conv\d_block\d+)_"),
    "resnet152": KerasApp("ResNet152", r"^(conv\d_block\d+)_"),
    "inception_v3": KerasApp("InceptionV3", r"^mixed\d+$", block_end=True),
    "densenet121": KerasApp("DenseNet121", r"^(conv\d_block\d+)_"),
    "mobilenet_v2": KerasApp("MobileNetV2", r"^(expanded_conv|block_\d+)_"),
}
