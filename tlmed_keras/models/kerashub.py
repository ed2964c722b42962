"""The keras-hub family: ResNet-18/34, ViT-B/16, DINOv2-S, registered where they are declared.

keras-hub reads even a preset's *architecture* from its download (Kaggle / Hugging Face), so
``weights=none`` cannot go through ``from_preset`` offline. Each entry therefore embeds the
constructor arguments of its preset (taken from keras-hub 0.32's sources: the timm ResNet
converter's table and the published ViT / DINOv2 sizes) and builds that architecture
directly; only ``weights="imagenet"`` calls ``from_preset``, which downloads config + weights.

Each backbone is wrapped into a functional model ending in pooled features: global average
pooling for ResNets, the class token for the transformers.

Feature maps (``HubModel.features``): a ResNet's is the map its average pooling reads. The
transformers pool the class token only, so the patch tokens the last block *puts out* never
reach the class score; their feature tokens are the ones the last block *takes in*, whose
attention mixes them into the class token (``pytorch-grad-cam``'s choice for ViTs).
"""

from __future__ import annotations

import dataclasses
import importlib
import re

import keras

from tlmed_keras.models import keras_apps
from tlmed_keras.models.features import FeatureSplit, at_input
from tlmed_keras.models.spec import ModelSpec, register, unavailable

FAMILY = "keras-hub"


def _hub():
    """keras_hub, imported on first use: its import takes 0.5-1.7 s (2-core CPU), which every
    start-up paid for the models of the other families when this module imported it."""
    return importlib.import_module("keras_hub")


def import_layers(spec: ModelSpec | None) -> None:
    """keras-hub's serializable classes, for loading a saved model.keras of this family
    (``registry.register_layers``; ``spec`` None: whatever the file holds)."""
    if spec is None or spec.family == FAMILY:
        _hub()


_RESNET_COMMON = dict(
    input_conv_filters=[64],
    input_conv_kernel_sizes=[7],
    stackwise_num_filters=[64, 128, 256, 512],
    stackwise_num_strides=[1, 2, 2, 2],
    block_type="basic_block",
    use_pre_activation=False,
)


@keras.saving.register_keras_serializable(package="tlmed_keras")
class ClassToken(keras.layers.Layer):
    """``[B, T, D]`` token sequence -> ``[B, D]``: the first (class) token."""

    def call(self, tokens):
        return tokens[:, 0, :]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])


@dataclasses.dataclass(frozen=True)
class HubModel:
    """One keras-hub backbone: its class, embedded config, preset and pooling.

    Attributes:
        backbone_class: name in ``keras_hub.models``.
        config: constructor arguments (the preset's architecture).
        preset: what ``from_preset`` loads for ``weights="imagenet"``.
        kind: "cnn" (average pooling, ResNet blocks) or "vit"/"dinov2" (class token); the
            transformers' configs also take ``image_shape``.
    """

    backbone_class: str
    config: dict
    preset: str
    kind: str

    def _inner(self, size: int, pretrained: bool) -> keras.Model:
        cls = getattr(_hub().models, self.backbone_class)
        shape_arg = {} if self.kind == "cnn" else {"image_shape": (size, size, 3)}
        if pretrained:
            return cls.from_preset(self.preset, **shape_arg)
        return cls(**self.config, **shape_arg)

    def build(self, name: str, input_shape, weights, include_top: bool) -> keras.Model:
        """Backbone ``[B, S, S, 3]`` -> pooled features, randomly initialised or pretrained."""
        if include_top:
            raise ValueError(
                f"{name!r} (keras-hub) is offered headless only; the ImageNet classifier "
                "(--classify) is available for keras.applications and torchvision models."
            )
        try:
            inner = self._inner(input_shape[0], pretrained=weights == "imagenet")
        except Exception as err:
            if weights == "imagenet":  # from_preset only fails on fetching the preset
                raise unavailable(name, f"keras-hub preset {self.preset!r}", err) from err
            raise
        inputs = keras.Input(tuple(input_shape), name="image")
        if self.kind == "cnn":
            pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(inner(inputs))
        else:
            feed = {"images": inputs} if self.kind == "dinov2" else inputs
            pooled = ClassToken(name="class_token")(inner(feed))
        return keras.Model(inputs, pooled, name=name)

    def blocks(self, backbone: keras.Model) -> list[list[keras.layers.Layer]]:
        """Residual blocks (CNN) or transformer layers (the final norm joins the top one)."""
        inner = _inner_backbone(backbone)
        if self.kind == "cnn":
            return keras_apps._blocks_by_group(inner.layers, re.compile(r"^(stack\d+_block\d+)_"))
        _, layers, final_norm = self._transformer_parts(inner)
        blocks = [[layer] for layer in layers]
        blocks[-1].append(final_norm)
        return blocks

    def _transformer_parts(self, inner: keras.Model):
        """(patch embedding, encoder blocks, final norm) of a ViT or DINOv2 backbone."""
        if self.kind == "vit":
            encoder = inner.get_layer("vit_encoder")
            embedding = inner.get_layer("vit_patching_and_embedding")
            return embedding, encoder.encoder_layers, encoder.layer_norm
        return inner.embeddings, inner.encoder.layers, inner.layernorm

    def features(self, backbone: keras.Model) -> FeatureSplit:
        """The map average pooling reads (CNN), or the tokens entering the last block."""
        if self.kind == "cnn":
            return at_input("avg_pool")(backbone)
        inner = _inner_backbone(backbone)
        embedding, layers, final_norm = self._transformer_parts(inner)

        def features(images):
            tokens = embedding(images)
            for layer in layers[:-1]:
                tokens = layer(tokens)
            return tokens

        def pool(tokens):
            return final_norm(layers[-1](tokens))[:, 0, :]  # the class token, as ClassToken

        registers = getattr(inner, "num_register_tokens", 0) if self.kind == "dinov2" else 0
        return FeatureSplit(features, pool, prefix_tokens=1 + registers)


def _inner_backbone(backbone: keras.Model) -> keras.Model:
    return next(lyr for lyr in backbone.layers if isinstance(lyr, _hub().models.Backbone))


def register_hub(*, name: str, hub: HubModel, **fields) -> None:
    """Registers the keras-hub backbone ``hub`` as ``name``; ``fields``: the other spec fields."""
    register(
        ModelSpec(
            name=name,
            family=FAMILY,
            weights_source=f"keras-hub {hub.preset}",
            build=lambda shape, weights, top: hub.build(name, shape, weights, top),
            blocks=hub.blocks,
            features=hub.features,
            **fields,
        )
    )


register_hub(
    name="resnet18",
    hub=HubModel(
        backbone_class="ResNetBackbone",
        config=dict(_RESNET_COMMON, stackwise_num_blocks=[2, 2, 2, 2]),
        preset="resnet_18_imagenet",  # keras-hub's own ImageNet-1k port
        kind="cnn",
    ),
    input_size=224,
    min_input_size=32,
    normalization="torch",
    num_blocks=8,  # basic blocks: 2 per stage
)
register_hub(
    name="resnet34",
    hub=HubModel(
        backbone_class="ResNetBackbone",
        config=dict(_RESNET_COMMON, stackwise_num_blocks=[3, 4, 6, 3]),
        # torchvision's ResNet-34 weights, through keras-hub's timm converter.
        preset="hf://timm/resnet34.tv_in1k",
        kind="cnn",
    ),
    input_size=224,
    min_input_size=32,
    normalization="torch",
    num_blocks=16,  # basic blocks: 3 + 4 + 6 + 3
)
register_hub(
    name="vit_b16",
    hub=HubModel(
        backbone_class="ViTBackbone",
        config=dict(patch_size=16, num_layers=12, num_heads=12, hidden_dim=768, mlp_dim=3072),
        preset="vit_base_patch16_224_imagenet",
        kind="vit",
    ),
    input_size=224,
    min_input_size=32,
    normalization="half",  # Google's ViT checkpoints are normalised to [-1, 1]
    num_blocks=12,
    pretrained_sizes=(224,),  # the position embeddings fix 224 px
)
# Self-supervised (no ImageNet labels); position embeddings interpolate to any size.
register_hub(
    name="dinov2_small",
    hub=HubModel(
        backbone_class="DINOV2Backbone",
        config=dict(
            patch_size=14,
            num_layers=12,
            hidden_dim=384,
            num_heads=6,
            intermediate_dim=1536,
            layer_scale_init_value=1.0,
            position_embedding_shape=(518, 518, 3),
        ),
        preset="dinov2_small",
        kind="dinov2",
    ),
    input_size=224,
    min_input_size=28,  # two 14-px patches
    normalization="torch",
    num_blocks=12,
)
