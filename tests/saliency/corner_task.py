"""A synthetic task whose class is decided only by a bright square in one corner, and the
tiny classifiers (a CNN, a class-token ViT) the saliency tests train on it in seconds."""

from __future__ import annotations

from types import SimpleNamespace

import keras
import numpy as np

SIDE = 32
SQUARE = 8
MARGIN = 2
CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")


def corner_image(rng: np.random.Generator, corner: str | None) -> np.ndarray:
    """Dim noise, plus a bright square in ``corner`` (None: no square): float32 [S, S, 3]."""
    image = rng.uniform(0.0, 0.35, size=(SIDE, SIDE, 3)).astype(np.float32)
    if corner is not None:
        top = MARGIN if corner.startswith("top") else SIDE - MARGIN - SQUARE
        left = MARGIN if corner.endswith("left") else SIDE - MARGIN - SQUARE
        image[top : top + SQUARE, left : left + SQUARE] = 1.0
    return image


def corner_task(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images: label 1 with a square in a random corner, label 0 without one."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    corners = [CORNERS[rng.integers(4)] if label else None for label in labels]
    images = np.stack([corner_image(rng, corner) for corner in corners])
    return images, labels.astype(np.int32)


def quadrant_mass(heatmap: np.ndarray, corner: str) -> float:
    """The share of the map's total in the quadrant of ``corner``."""
    half = SIDE // 2
    rows = slice(0, half) if corner.startswith("top") else slice(half, SIDE)
    cols = slice(0, half) if corner.endswith("left") else slice(half, SIDE)
    return float(heatmap[rows, cols].sum() / max(heatmap.sum(), 1e-12))


def tiny_cnn() -> tuple[keras.Model, SimpleNamespace]:
    """Three conv blocks (to an 8x8 map), global average pooling, a dense head; and the
    registry that names its feature layer."""
    from tlmed_keras.models.features import at_output

    inputs = keras.Input((SIDE, SIDE, 3), name="image")
    x = inputs
    for i, (filters, stride) in enumerate(((8, 1), (16, 2), (16, 2)), start=1):
        x = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", name=f"conv{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    backbone = keras.Model(inputs, x, name="cnn")
    registry = SimpleNamespace(feature_split=lambda b, name: at_output("relu3")(b))
    return _classifier(backbone), registry


def tiny_vit() -> tuple[keras.Model, SimpleNamespace]:
    """A two-layer keras-hub ViT (4x4 patches of 8 px, class-token pooling) built by the
    zoo's own keras-hub wrapper; and the registry whose split is the zoo's ViT split."""
    from tlmed_keras.models.kerashub import HubModel

    hub = HubModel(
        backbone_class="ViTBackbone",
        config=dict(patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64),
        preset="",
        kind="vit",
    )
    backbone = hub.build("tiny_vit", (SIDE, SIDE, 3), None, False)
    registry = SimpleNamespace(feature_split=lambda b, name: hub.features(b))
    return _classifier(backbone), registry


def _classifier(backbone: keras.Model) -> keras.Model:
    inputs = keras.Input((SIDE, SIDE, 3), name="image")
    logits = keras.layers.Dense(2, name="logits")(backbone(inputs))
    return keras.Model(inputs, logits)


def train(model: keras.Model, images, labels, epochs: int, lr: float) -> float:
    """Fits ``model`` (seeded) and returns its training accuracy."""
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(images, labels, batch_size=32, epochs=epochs, verbose=0)
    return float(history.history["accuracy"][-1])
