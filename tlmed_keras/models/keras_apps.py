"""The keras.applications family: builders, fine-tuning blocks and their registered specs.

Each backbone wraps the application with ``include_top=False, pooling="avg"`` so it returns
pooled features ``[B, F]``; with ``include_top=True`` it is the full ImageNet classifier
(softmax probabilities, as keras.applications ships it). ``register_app`` declares one; a
backbone in its own file (``efficientnet.py``) calls it the same way as the table below.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import keras

from tlmed_keras.models.features import at_output
from tlmed_keras.models.spec import ModelSpec, is_download_failure, register, unavailable


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
        """Builds the application; ``weights`` is "imagenet", None or a Keras weights file."""
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


def _builder(name: str, app: KerasApp):
    def build(input_shape, weights, include_top):
        try:
            return app.build(input_shape, weights, include_top)
        except Exception as err:
            if weights == "imagenet" and is_download_failure(err):
                raise unavailable(name, "keras.applications", err) from err
            raise

    return build


def register_app(
    *,
    name: str,
    constructor: str,
    block_pattern: str,
    feature_layer: str,
    block_end: bool = False,
    **fields,
) -> None:
    """Registers ``keras.applications.<constructor>`` as backbone ``name``.

    Args:
        name: registry name.
        constructor: function name in ``keras.applications``.
        feature_layer: the layer ending its last convolutional block (``ModelSpec.features``).
        block_pattern, block_end: how it splits into fine-tuning blocks (see ``KerasApp``).
        **fields: the remaining ``ModelSpec`` fields (input_size, min_input_size,
            normalization, num_blocks, ...).
    """
    app = KerasApp(constructor, block_pattern, block_end)
    register(
        ModelSpec(
            name=name,
            family="keras.applications",
            weights_source=f"keras.applications.{constructor}",
            build=_builder(name, app),
            blocks=app.blocks,
            features=at_output(feature_layer),
            top_outputs="probabilities",
            **fields,
        )
    )


_CONV_BLOCKS = r"^(conv\d_block\d+)_"
_ANY_SIZE = dict(input_size=224, min_input_size=32)  # ImageNet's 224, any side >= 32

register_app(
    name="vgg16",
    constructor="VGG16",
    feature_layer="block5_conv3",
    block_pattern=r"^(block\d+)_",
    normalization="caffe",
    num_blocks=5,
    **_ANY_SIZE,
)
register_app(
    name="vgg19",
    constructor="VGG19",
    feature_layer="block5_conv4",
    block_pattern=r"^(block\d+)_",
    normalization="caffe",
    num_blocks=5,
    **_ANY_SIZE,
)
register_app(
    name="resnet50",
    constructor="ResNet50",
    feature_layer="conv5_block3_out",
    block_pattern=_CONV_BLOCKS,
    normalization="caffe",
    num_blocks=16,
    **_ANY_SIZE,
)
register_app(
    name="resnet101",
    constructor="ResNet101",
    feature_layer="conv5_block3_out",
    block_pattern=_CONV_BLOCKS,
    normalization="caffe",
    num_blocks=33,
    **_ANY_SIZE,
)
register_app(
    name="resnet152",
    constructor="ResNet152",
    feature_layer="conv5_block3_out",
    block_pattern=_CONV_BLOCKS,
    normalization="caffe",
    num_blocks=50,
    **_ANY_SIZE,
)
register_app(
    name="inception_v3",
    constructor="InceptionV3",
    feature_layer="mixed10",
    block_pattern=r"^mixed\d+$",
    block_end=True,
    normalization="tf",
    num_blocks=11,
    input_size=299,
    min_input_size=75,
)
register_app(
    name="densenet121",
    constructor="DenseNet121",
    feature_layer="relu",
    block_pattern=_CONV_BLOCKS,
    normalization="torch",
    num_blocks=58,
    **_ANY_SIZE,
)
register_app(
    name="mobilenet_v2",
    constructor="MobileNetV2",
    feature_layer="out_relu",
    block_pattern=r"^(expanded_conv|block_\d+)_",
    normalization="tf",
    num_blocks=17,
    checkpoint_hint=" Use 'mobilenet_v2_torchvision', which converts it exactly.",
    **_ANY_SIZE,
)
