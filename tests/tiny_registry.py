"""A test-only model registry with the contract of ``tlmed_keras.models``: a tiny two-block
conv backbone with batch-norm, built from stock Keras layers (so model.keras loads in safe
mode). ``train_and_evaluate(..., registry=tiny_registry)`` uses it."""

from __future__ import annotations

from types import SimpleNamespace

import keras

NAME = "tiny_cnn"
BLOCKS = 2


def model_names() -> tuple[str, ...]:
    return (NAME,)


def get_spec(name: str) -> SimpleNamespace:
    if name != NAME:
        raise ValueError(f"Unknown model {name!r}.")
    return SimpleNamespace(
        name=NAME,
        input_size=28,
        min_input_size=16,
        normalization="unit",
        weights_source=None,
        num_blocks=BLOCKS,
    )


def _backbone(image_size: int) -> keras.Model:
    inputs = keras.Input((image_size, image_size, 3))
    x = inputs
    for i, filters in enumerate((4, 8), start=1):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", name=f"block{i}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"block{i}_bn")(x)
        x = keras.layers.ReLU(name=f"block{i}_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, x, name="backbone")


def build_classifier(
    name, num_classes, *, weights="imagenet", image_size=None, multilabel=False, dropout=0.0
):
    get_spec(name)
    if weights not in ("none", "imagenet"):
        raise ValueError(f"tiny_cnn has no weights file {weights!r}.")
    size = image_size or 28
    backbone = _backbone(size)
    inputs = keras.Input((size, size, 3), name="image")
    x = backbone(inputs)
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    logits = keras.layers.Dense(num_classes, name="head", dtype="float32")(x)
    return keras.Model(inputs, logits, name=NAME), backbone


def blocks(backbone, name) -> list[list[keras.layers.Layer]]:
    get_spec(name)
    return [
        [layer for layer in backbone.layers if layer.name.startswith(f"block{i}_")]
        for i in range(1, BLOCKS + 1)
    ]


def set_trainable(backbone, name, mode, *, freeze_batch_norm=True) -> None:
    if mode == "frozen":
        backbone.trainable = False
        return
    backbone.trainable = True
    for layer in backbone.layers:
        block = int(layer.name[5]) if layer.name.startswith("block") else BLOCKS + 1
        layer.trainable = mode == "all" or block > BLOCKS - int(mode)
        # Keras 3 runs a BN layer with trainable=False in inference mode. (Calling the
        # backbone with training=False inside the functional model is NOT enough in Keras
        # 3.15: fit's training=True overrides it; test_finetune caught exactly that.)
        if freeze_batch_norm and isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def feature_split(backbone, name):
    """The last block's ReLU, as the zoo's specs name their feature layers."""
    from tlmed_keras.models.features import at_output

    get_spec(name)
    return at_output(f"block{BLOCKS}_relu")(backbone)
