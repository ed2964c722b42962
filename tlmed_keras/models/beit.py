"""BEiT image classifier as Hugging Face transformers defines it, in Keras 3.

Follows ``transformers.BeitModel`` / ``BeitForImageClassification`` with the configuration of
``microsoft/beit-base-patch16-224``: 16x16 patches, a CLS token, no absolute position
embeddings, a relative position bias table per layer, layer scale (``lambda_1/2``), pre-norm
blocks with exact GELU, LayerNorm epsilon 1e-12, queries and values with bias but keys
without, and mean pooling of the patch tokens followed by ``pooler.layernorm``.

Other input sizes: each layer's bias table is sized for the model's own window
(``input size / patch size``). When a checkpoint was trained at another window, the loader
resizes the table with the same bilinear interpolation transformers applies at run time
(``BeitRelativePositionBias.forward``), so the Keras model at e.g. 64 px computes what
``BeitForImageClassification`` computes on 64 px input. The resize happens once, at load;
fine-tuning then trains the resized table.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping

import keras
import numpy as np
from keras import ops

from tlmed_keras.models._arch import has_layer
from tlmed_keras.models.converters.huggingface import bilinear_resize, canonical_beit_keys
from tlmed_keras.models.converters.state_dict import (
    READABLE_SUFFIXES,
    StateDictConsumer,
    StateDictMismatchError,
    conv_kernel,
    dense_kernel,
    read_state_dict,
)
from tlmed_keras.models.features import FeatureSplit, at_output
from tlmed_keras.models.spec import ModelSpec, checkpoint_builder, register

INPUT_SIZE = 224
NORMALIZATION = "half"  # microsoft/beit-base-patch16-224 preprocessor: mean 0.5, std 0.5
WEIGHTS_URL = (
    "https://huggingface.co/microsoft/beit-base-patch16-224/resolve/main/model.safetensors"
)


@dataclasses.dataclass(frozen=True)
class BeitConfig:
    """Architecture hyper-parameters; the defaults are microsoft/beit-base-patch16-224's.

    ``drop_path_rate`` is the stochastic depth of the last layer (linearly less for earlier
    ones, as in transformers); it only acts in training.
    """

    patch_size: int = 16
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    layer_norm_eps: float = 1e-12
    layer_scale_init_value: float = 0.1
    drop_path_rate: float = 0.1
    hidden_dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    initializer_range: float = 0.02


CONFIG = BeitConfig()
MIN_INPUT_SIZE = CONFIG.patch_size  # one patch; sides must be multiples of it


def relative_position_index(window_size: tuple[int, int]) -> np.ndarray:
    """Index into the bias table for each (query, key) token pair, CLS first.

    Port of transformers' ``BeitRelativePositionBias.generate_relative_position_index``: the
    last three table rows are CLS->token, token->CLS and CLS->CLS.

    Args:
        window_size: patches per column and per row, ``(Wh, Ww)``.

    Returns:
        int32 array ``[Wh*Ww + 1, Wh*Ww + 1]``.
    """
    height, width = window_size
    num_relative_distance = (2 * height - 1) * (2 * width - 1) + 3
    coords = np.stack(np.meshgrid(np.arange(height), np.arange(width), indexing="ij"))
    coords = coords.reshape(2, -1)
    relative = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0)
    relative[:, :, 0] += height - 1
    relative[:, :, 1] += width - 1
    relative[:, :, 0] *= 2 * width - 1
    index = np.zeros((height * width + 1,) * 2, dtype=np.int32)
    index[1:, 1:] = relative.sum(-1)
    index[0, 0:] = num_relative_distance - 3
    index[0:, 0] = num_relative_distance - 2
    index[0, 0] = num_relative_distance - 1
    return index


def table_rows(window_size: tuple[int, int]) -> int:
    """Rows of the relative position bias table for a window: all offsets plus 3 CLS rows."""
    return (2 * window_size[0] - 1) * (2 * window_size[1] - 1) + 3


def resize_bias_table(table: np.ndarray, window_size: tuple[int, int]) -> np.ndarray:
    """Resizes a checkpoint's square bias table ``[rows, heads]`` to ``window_size``.

    The offset grid is resized bilinearly exactly as transformers does at run time; the three
    CLS rows are kept.

    Raises:
        StateDictMismatchError: the table is not the 2-D table of a square window.
    """
    if table.ndim != 2:
        raise StateDictMismatchError(f"A bias table is [rows, heads]; got shape {table.shape}.")
    side = math.isqrt(table.shape[0] - 3)
    if side * side != table.shape[0] - 3:
        raise StateDictMismatchError(
            f"Bias table with {table.shape[0]} rows is not (2W-1)^2 + 3 for a square window W."
        )
    new_grid = (2 * window_size[0] - 1, 2 * window_size[1] - 1)
    if new_grid == (side, side):
        return table
    grid = table[:-3].reshape(side, side, table.shape[1])
    resized = bilinear_resize(grid, new_grid).reshape(-1, table.shape[1])
    return np.concatenate([resized, table[-3:]], axis=0)


def _init(config_or_range) -> keras.initializers.Initializer:
    stddev = getattr(config_or_range, "initializer_range", config_or_range)
    return keras.initializers.TruncatedNormal(stddev=stddev)


@keras.saving.register_keras_serializable(package="tlmed_keras")
class BeitClsToken(keras.layers.Layer):
    """Prepends the learned CLS token to the patch tokens: ``[B, N, D] -> [B, N + 1, D]``."""

    def build(self, input_shape):
        self.cls_token = self.add_weight(
            shape=(1, 1, input_shape[-1]), initializer="zeros", name="cls_token"
        )

    def call(self, tokens):
        batch = ops.shape(tokens)[0]
        cls = ops.broadcast_to(ops.cast(self.cls_token, tokens.dtype), (batch, 1, tokens.shape[-1]))
        return ops.concatenate([cls, tokens], axis=1)

    def compute_output_shape(self, input_shape):
        tokens = None if input_shape[1] is None else input_shape[1] + 1
        return (input_shape[0], tokens, input_shape[2])


@keras.saving.register_keras_serializable(package="tlmed_keras")
class BeitPatchMeanPool(keras.layers.Layer):
    """Mean of the patch tokens, CLS excluded: ``[B, N + 1, D] -> [B, D]`` (BeitPooler)."""

    def call(self, tokens):
        return ops.mean(tokens[:, 1:, :], axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


@keras.saving.register_keras_serializable(package="tlmed_keras")
class BeitLayer(keras.layers.Layer):
    """One BEiT block (``transformers`` ``BeitLayer``) with its own relative position bias.

    ``x + drop_path(lambda_1 * attention(LN(x)))`` then
    ``x + drop_path(lambda_2 * fc2(gelu(fc1(LN(x)))))``; the attention adds
    ``table[relative_position_index]`` to its scores.

    Args:
        hidden_size, num_heads, intermediate_size, layer_norm_eps, layer_scale_init_value,
        hidden_dropout_rate, attention_dropout_rate, initializer_range: as in ``BeitConfig``.
        window_size: ``(Wh, Ww)`` patches; the layer takes ``Wh * Ww + 1`` tokens.
        drop_path_rate: stochastic depth of this layer (training only).
        seed: seed of the drop-path draws.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        intermediate_size: int,
        window_size: tuple[int, int],
        layer_norm_eps: float = 1e-12,
        layer_scale_init_value: float = 0.1,
        drop_path_rate: float = 0.0,
        hidden_dropout_rate: float = 0.0,
        attention_dropout_rate: float = 0.0,
        initializer_range: float = 0.02,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by {num_heads} heads.")
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.intermediate_size = intermediate_size
        self.window_size = tuple(int(side) for side in window_size)
        self.layer_norm_eps = layer_norm_eps
        self.layer_scale_init_value = layer_scale_init_value
        self.drop_path_rate = drop_path_rate
        self.hidden_dropout_rate = hidden_dropout_rate
        self.attention_dropout_rate = attention_dropout_rate
        self.initializer_range = initializer_range
        self.seed = seed
        self._index = relative_position_index(self.window_size).reshape(-1)
        self._make_sublayers()
        self.seed_generator = keras.random.SeedGenerator(seed) if drop_path_rate > 0 else None

    def _make_sublayers(self) -> None:
        def dense(units, name, use_bias=True):
            return keras.layers.Dense(
                units, use_bias=use_bias, kernel_initializer=_init(self.initializer_range),
                name=name,
            )  # fmt: skip

        self.layernorm_before = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_eps, name="layernorm_before"
        )
        self.q_proj = dense(self.hidden_size, "q_proj")
        self.k_proj = dense(self.hidden_size, "k_proj", use_bias=False)  # BEiT: no key bias
        self.v_proj = dense(self.hidden_size, "v_proj")
        self.o_proj = dense(self.hidden_size, "o_proj")
        self.layernorm_after = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_eps, name="layernorm_after"
        )
        self.fc1 = dense(self.intermediate_size, "fc1")
        self.fc2 = dense(self.hidden_size, "fc2")
        self.attention_dropout = keras.layers.Dropout(self.attention_dropout_rate)
        self.hidden_dropout = keras.layers.Dropout(self.hidden_dropout_rate)

    def build(self, input_shape):
        tokens = self.window_size[0] * self.window_size[1] + 1
        if input_shape[1] not in (None, tokens) or input_shape[2] != self.hidden_size:
            raise ValueError(
                f"{self.name}: built for {tokens} tokens of width {self.hidden_size} "
                f"(window {self.window_size} + CLS); got input shape {input_shape}."
            )
        hidden_shape = (None, tokens, self.hidden_size)
        for layer in (self.layernorm_before, self.layernorm_after, self.fc1):
            layer.build(hidden_shape)
        for layer in (self.q_proj, self.k_proj, self.v_proj, self.o_proj):
            layer.build(hidden_shape)
        self.fc2.build((None, tokens, self.intermediate_size))
        self.relative_position_bias_table = self.add_weight(
            shape=(table_rows(self.window_size), self.num_heads),
            initializer="zeros",
            name="relative_position_bias_table",
        )
        self.lambda_1 = self.lambda_2 = None
        if self.layer_scale_init_value > 0:
            scale = keras.initializers.Constant(self.layer_scale_init_value)
            self.lambda_1 = self.add_weight(
                shape=(self.hidden_size,), initializer=scale, name="lambda_1"
            )
            self.lambda_2 = self.add_weight(
                shape=(self.hidden_size,), initializer=scale, name="lambda_2"
            )

    def call(self, x, training=None):
        residual = self._attention(self.layernorm_before(x), training)
        residual = self.hidden_dropout(residual, training=training)
        x = x + self._drop_path(self._scale(residual, self.lambda_1), training)
        residual = self.fc2(ops.gelu(self.fc1(self.layernorm_after(x)), approximate=False))
        residual = self.hidden_dropout(residual, training=training)
        return x + self._drop_path(self._scale(residual, self.lambda_2), training)

    def _attention(self, x, training):
        query, key, value = (
            self._split_heads(proj(x)) for proj in (self.q_proj, self.k_proj, self.v_proj)
        )
        scores = ops.matmul(query, ops.swapaxes(key, -1, -2)) * (self.head_dim**-0.5)
        scores = scores + ops.cast(self._relative_position_bias(), scores.dtype)
        # Softmax in float32 as transformers does, so mixed precision keeps its accuracy.
        probs = ops.cast(ops.softmax(ops.cast(scores, "float32"), axis=-1), value.dtype)
        probs = self.attention_dropout(probs, training=training)
        context = ops.swapaxes(ops.matmul(probs, value), 1, 2)  # [B, T, heads, head_dim]
        return self.o_proj(ops.reshape(context, (-1, x.shape[1], self.hidden_size)))

    def _split_heads(self, x):
        x = ops.reshape(x, (-1, x.shape[1], self.num_heads, self.head_dim))
        return ops.swapaxes(x, 1, 2)  # [B, heads, T, head_dim]

    def _relative_position_bias(self):
        tokens = self.window_size[0] * self.window_size[1] + 1
        bias = ops.take(
            self.relative_position_bias_table, ops.convert_to_tensor(self._index), axis=0
        )
        return ops.transpose(ops.reshape(bias, (tokens, tokens, self.num_heads)), (2, 0, 1))

    @staticmethod
    def _scale(x, gamma):
        return x if gamma is None else x * ops.cast(gamma, x.dtype)

    def _drop_path(self, x, training):
        """Stochastic depth per sample, as transformers' ``BeitDropPath``."""
        if not training or self.seed_generator is None:
            return x
        keep = 1.0 - self.drop_path_rate
        draw = keras.random.uniform(
            (ops.shape(x)[0], 1, 1), seed=self.seed_generator, dtype=x.dtype
        )
        return x / keep * ops.floor(draw + keep)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_size": self.hidden_size,
            "num_heads": self.num_heads,
            "intermediate_size": self.intermediate_size,
            "window_size": list(self.window_size),
            "layer_norm_eps": self.layer_norm_eps,
            "layer_scale_init_value": self.layer_scale_init_value,
            "drop_path_rate": self.drop_path_rate,
            "hidden_dropout_rate": self.hidden_dropout_rate,
            "attention_dropout_rate": self.attention_dropout_rate,
            "initializer_range": self.initializer_range,
            "seed": self.seed,
        }


def window_size(input_shape: tuple[int, int, int], patch_size: int) -> tuple[int, int]:
    """Patches per column and row for ``input_shape``.

    Raises:
        ValueError: not a static RGB shape whose sides are multiples of ``patch_size``.
    """
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"BEiT takes RGB input (H, W, 3); got input_shape={input_shape}.")
    height, width = input_shape[:2]
    if any(side is None or side < patch_size or side % patch_size for side in (height, width)):
        raise ValueError(
            f"BEiT needs static sides that are positive multiples of the patch size "
            f"{patch_size}; got {input_shape[:2]}. Resize to e.g. {INPUT_SIZE} or "
            f"{4 * patch_size} (transformers would silently crop the remainder)."
        )
    return height // patch_size, width // patch_size


def build_backbone(
    input_shape: tuple[int, int, int] = (INPUT_SIZE, INPUT_SIZE, 3),
    weights: str | os.PathLike | None = None,
    include_top: bool = False,
    num_classes: int = 1000,
    config: BeitConfig = CONFIG,
) -> keras.Model:
    """Builds BEiT (``BeitForImageClassification`` without/with its classifier).

    Args:
        input_shape: ``(H, W, 3)`` with H and W multiples of ``config.patch_size``.
        weights: None (random init) or a local Hugging Face ``model.safetensors`` (or ``.bin``
            / ``.pth`` state dict) of a BEiT with the same ``config``; a checkpoint trained at
            another image size is adapted by resizing its relative position bias tables.
        include_top: True: logits ``[B, num_classes]``; False: the pooled, layer-normalised
            ``[B, hidden_size]`` features.
        num_classes: classes of the top layer (1000 for the ImageNet checkpoint).
        config: architecture; ``CONFIG`` is beit-base-patch16-224.

    Returns:
        A functional ``keras.Model`` named "beit".

    Raises:
        ValueError: bad input shape or configuration.
        StateDictMismatchError: the weights do not fit.
    """
    window = window_size(input_shape, config.patch_size)
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Conv2D(
        config.hidden_size,
        config.patch_size,
        strides=config.patch_size,
        kernel_initializer=_init(config),
        name="patch_embeddings",
    )(inputs)
    # Row-major patch order, the same as torch's flatten(2) of [B, D, Wh, Ww].
    x = keras.layers.Reshape((window[0] * window[1], config.hidden_size), name="patch_tokens")(x)
    x = BeitClsToken(name="cls_token")(x)
    x = keras.layers.Dropout(config.hidden_dropout_rate, name="embeddings_dropout")(x)
    for i in range(config.num_layers):
        x = _encoder_layer(config, window, i)(x)
    x = BeitPatchMeanPool(name="mean_pool")(x)
    x = keras.layers.LayerNormalization(epsilon=config.layer_norm_eps, name="pooler_layernorm")(x)
    if include_top:
        x = keras.layers.Dense(num_classes, kernel_initializer=_init(config), name="classifier")(x)
    model = keras.Model(inputs, x, name="beit")
    if weights is not None:
        load_hf_state_dict(model, read_state_dict(weights))
    return model


def _encoder_layer(config: BeitConfig, window: tuple[int, int], index: int) -> BeitLayer:
    drop_path = config.drop_path_rate * index / max(config.num_layers - 1, 1)
    return BeitLayer(
        hidden_size=config.hidden_size,
        num_heads=config.num_heads,
        intermediate_size=config.intermediate_size,
        window_size=window,
        layer_norm_eps=config.layer_norm_eps,
        layer_scale_init_value=config.layer_scale_init_value,
        drop_path_rate=drop_path,
        hidden_dropout_rate=config.hidden_dropout_rate,
        attention_dropout_rate=config.attention_dropout_rate,
        initializer_range=config.initializer_range,
        seed=index,
        name=f"layer_{index}",
    )


def _encoder_layers(model: keras.Model) -> list[BeitLayer]:
    return [layer for layer in model.layers if isinstance(layer, BeitLayer)]


def blocks(backbone: keras.Model) -> list[list[keras.layers.Layer]]:
    """Trainable layers grouped input -> output.

    ``[[patch_embeddings, cls_token], [layer_0], ..., [layer_{L-1}, pooler_layernorm],
    [classifier]?]``: the final LayerNorm only normalises the last layer's output, so it is
    unfrozen together with that layer.

    Args:
        backbone: a model from ``build_backbone``.
    """
    layers = _encoder_layers(backbone)
    groups = [[backbone.get_layer("patch_embeddings"), backbone.get_layer("cls_token")]]
    groups += [[layer] for layer in layers]
    groups[-1] = [*groups[-1], backbone.get_layer("pooler_layernorm")]
    if has_layer(backbone, "classifier"):
        groups.append([backbone.get_layer("classifier")])
    return groups


def feature_split(backbone: keras.Model) -> FeatureSplit:
    """Cuts ``backbone`` after its last encoder layer: its tokens (CLS first) are what the
    mean pooling reads, so each patch token's part in the class score is direct."""
    return at_output(_encoder_layers(backbone)[-1].name, prefix_tokens=1)(backbone)


def load_hf_state_dict(model: keras.Model, state_dict: Mapping[str, np.ndarray]) -> None:
    """Copies a Hugging Face BEiT state dict into ``model``.

    Accepts ``BeitForImageClassification`` or bare ``BeitModel`` keys, in the Hub files'
    (transformers 4) or transformers 5 spelling. ``relative_position_index`` buffers are
    derived, not learned, and skipped; without a top layer ``classifier.*`` is skipped.

    Args:
        model: a model from ``build_backbone``.
        state_dict: key -> array, e.g. ``safetensors.numpy.load_file(...)``.

    Raises:
        StateDictMismatchError: naming the first missing/unexpected key or mis-shaped array.
    """
    consumer = StateDictConsumer(canonical_beit_keys(state_dict), "Hugging Face BEiT")
    consumer.ignore([r"relative_position_index$"])
    patch = model.get_layer("patch_embeddings")
    consumer.assign("beit.embeddings.cls_token", model.get_layer("cls_token").cls_token)
    consumer.assign("beit.embeddings.patch_embeddings.projection.weight", patch.kernel, conv_kernel)
    consumer.assign("beit.embeddings.patch_embeddings.projection.bias", patch.bias)
    for index, layer in enumerate(_encoder_layers(model)):
        _load_encoder_layer(consumer, layer, f"beit.layers.{index}.")
    _load_norm(consumer, model.get_layer("pooler_layernorm"), "beit.pooler.layernorm")
    if has_layer(model, "classifier"):
        _load_dense(consumer, model.get_layer("classifier"), "classifier")
    else:
        consumer.ignore([r"^classifier\."])
    consumer.finish()


def _load_encoder_layer(consumer: StateDictConsumer, layer: BeitLayer, prefix: str) -> None:
    _load_norm(consumer, layer.layernorm_before, f"{prefix}layernorm_before")
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        _load_dense(consumer, getattr(layer, name), f"{prefix}attention.{name}")
    _load_norm(consumer, layer.layernorm_after, f"{prefix}layernorm_after")
    _load_dense(consumer, layer.fc1, f"{prefix}mlp.fc1")
    _load_dense(consumer, layer.fc2, f"{prefix}mlp.fc2")
    consumer.assign(
        f"{prefix}relative_position_bias.relative_position_bias_table",
        layer.relative_position_bias_table,
        lambda table: resize_bias_table(table, layer.window_size),
    )
    if layer.lambda_1 is not None:
        consumer.assign(f"{prefix}lambda_1", layer.lambda_1)
        consumer.assign(f"{prefix}lambda_2", layer.lambda_2)


def _load_dense(consumer: StateDictConsumer, dense: keras.layers.Dense, prefix: str) -> None:
    consumer.assign(f"{prefix}.weight", dense.kernel, dense_kernel)
    if dense.use_bias:
        consumer.assign(f"{prefix}.bias", dense.bias)


def _load_norm(consumer: StateDictConsumer, norm, prefix: str) -> None:
    consumer.assign(f"{prefix}.weight", norm.gamma)
    consumer.assign(f"{prefix}.bias", norm.beta)


SPEC = ModelSpec(
    name="beit_base_patch16_224",
    family="tlmed_keras",
    input_size=INPUT_SIZE,
    min_input_size=MIN_INPUT_SIZE,
    normalization=NORMALIZATION,
    weights_source=WEIGHTS_URL,
    num_blocks=CONFIG.num_layers + 1,  # len(blocks(backbone)): patch embedding + each layer
    build=checkpoint_builder("beit_base_patch16_224", WEIGHTS_URL, build_backbone),
    blocks=blocks,
    features=feature_split,
    checkpoint_formats=READABLE_SUFFIXES,
)
register(SPEC)
