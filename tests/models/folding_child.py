"""Child process of test_folding.py (the suite runs on JAX; folding is for TensorFlow).

    python tests/models/folding_child.py OUT.json [WEIGHTS.pth] [MODEL ...]

Builds each model twice, with ``TLMED_KERAS_FOLD=0`` and ``=1`` (same weights; batch-norm
statistics and affine parameters drawn at random so that folding them is not the identity),
and writes one JSON object: per case, what was routed, the largest differences (outputs,
gradients of a compiled training step, batch-norm statistics after it) and the op types of
the traced step. ``tiny`` is a small model with every pattern; a model name is a registry
backbone at its smallest input size (``mobilenet_v2_torchvision`` with the genuine weights
when WEIGHTS is given).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

os.environ["KERAS_BACKEND"] = "tensorflow"

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tlmed_keras import models  # noqa: E402
from tlmed_keras.models import batch_norm, folding  # noqa: E402

BATCH = 8


def tiny_model() -> keras.Model:
    """Every pattern: padding a plain and a depthwise conv ("same"-equal and not), conv with
    bias, 1x1 conv with and without a batch norm, a shared conv and a conv whose output is
    also read elsewhere (both must stay unfolded), depth multiplier 2."""
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.ZeroPadding2D(1)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, use_bias=True)(x)  # pad (1,1): not "same" at 12
    x = keras.layers.ReLU(6.0)(keras.layers.BatchNormalization()(x))
    y = keras.layers.ZeroPadding2D(1)(x)
    y = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False)(y)  # "same"
    y = keras.layers.BatchNormalization(epsilon=1e-5)(y)
    z = keras.layers.ZeroPadding2D(((1, 1), (1, 1)))(y)
    z = keras.layers.DepthwiseConv2D(3, strides=2, use_bias=False)(z)  # pad (1,1) stride 2
    z = keras.layers.BatchNormalization(center=False)(z)
    z = keras.layers.Conv2D(6, 1, use_bias=False)(z)  # 1x1 + BN
    z = keras.layers.BatchNormalization(scale=False)(z)
    z = keras.layers.Conv2D(5, 1, activation="relu")(z)  # 1x1 alone, with an activation
    seen = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(z)
    w = keras.layers.BatchNormalization()(seen)
    w = keras.layers.Add()([w, seen])  # the conv's output is read twice: no folding
    shared = keras.layers.Conv2D(4, 3, padding="same")
    w = shared(shared(w))
    pooled = keras.layers.GlobalAveragePooling2D()(w)
    return keras.Model(inputs, keras.layers.Dense(3)(pooled))


def _batch_norms(model):
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def randomise_batch_norms(model, rng) -> None:
    for bn in _batch_norms(model):
        for v in bn.weights:
            low = "variance" in v.path or "gamma" in v.path
            value = rng.uniform(0.5, 1.5, v.shape) if low else rng.normal(0, 0.3, v.shape)
            v.assign(value.astype("float32"))


def copy_weights(source, target) -> None:
    for a, b in zip(source.weights, target.weights, strict=True):
        b.assign(a)


def build(kind: str, folded: bool, weights: str):
    os.environ[folding.ENV_SWITCH] = "1" if folded else "0"
    try:
        if kind == "tiny":
            model = tiny_model()
            batch_norm.fuse_batch_norm(model)
            counts = folding.fold_convolutions(model)
            return model, model, counts
        size = models.get_spec(kind).min_input_size
        model, backbone = models.build_classifier(kind, 3, weights=weights, image_size=size)
        return model, backbone, routed_counts(model)
    finally:
        os.environ.pop(folding.ENV_SWITCH)


def routed_counts(model) -> dict:
    layers = model._flatten_layers(include_self=False, recursive=True)
    calls = [getattr(getattr(layer, "call", None), "func", None) for layer in layers]
    return {
        "batch_norm": calls.count(folding.folded_bn_call),
        "padding": calls.count(folding.skipped_pad_call),
        "convolutions": calls.count(folding.folded_conv_call),
    }


def set_mode(model, backbone, kind: str, freeze: bool) -> None:
    if kind == "tiny":
        model.trainable = True
        for bn in _batch_norms(model):
            bn.trainable = not freeze
    else:
        models.set_trainable(backbone, kind, "all", freeze_batch_norm=freeze)


def train_step(model, x, y):
    """Logits, gradients (a compiled graph, as fit runs it) and the op types traced."""

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
        return logits, tape.gradient(loss, [v.value for v in model.trainable_variables])

    graph = step.get_concrete_function(x).graph
    ops = sorted({op.type for op in graph.get_operations()})
    logits, grads = step(x)
    return logits.numpy(), [g.numpy() for g in grads], ops


def relative(a, b) -> float:
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))


def global_relative(first, second) -> float:
    num = sum(float(np.sum((a - b) ** 2)) for a, b in zip(first, second, strict=True))
    return float(np.sqrt(num / max(sum(float(np.sum(a**2)) for a in first), 1e-30)))


def statistics(model) -> list[np.ndarray]:
    return [np.asarray(v) for bn in _batch_norms(model) for v in bn.non_trainable_weights]


def compare(kind: str, weights: str) -> dict:
    rng = np.random.default_rng(0)
    plain, plain_backbone, plain_counts = build(kind, False, weights)
    fold, fold_backbone, counts = build(kind, True, "none")
    randomise_batch_norms(plain, rng)
    copy_weights(plain, fold)
    for model in (plain, fold):  # training-mode dropout would differ between the two
        for layer in model._flatten_layers(include_self=False, recursive=True):
            if isinstance(layer, keras.layers.Dropout):
                layer.rate = 0.0
    size = plain.inputs[0].shape[1]
    x = tf.constant(rng.normal(0, 1, (BATCH, size, size, 3)).astype("float32"))
    y = tf.constant(rng.integers(0, 3, BATCH))
    report = {"counts": counts, "switched_off": plain_counts}
    for mode, freeze in (("frozen", True), ("learning", False)):
        set_mode(plain, plain_backbone, kind, freeze)
        set_mode(fold, fold_backbone, kind, freeze)
        before = statistics(fold)
        a_logits, a_grads, a_ops = train_step(plain, x, y)
        b_logits, b_grads, b_ops = train_step(fold, x, y)
        after = statistics(fold)
        report[mode] = {
            "logits": relative(a_logits, b_logits),
            "gradients": global_relative(a_grads, b_grads),
            # Relative to the statistic's size above 1 (float32 rounds a variance of 10 to
            # ~1e-6), absolute below.
            "statistics": max(
                (
                    float(np.abs(p - f).max() / max(float(np.abs(p).max()), 1.0))
                    for p, f in zip(statistics(plain), after, strict=True)
                ),
                default=0.0,
            ),
            "statistics_moved": any(
                not np.array_equal(p, q) for p, q in zip(before, after, strict=True)
            ),
            "plain_ops": a_ops,
            "folded_ops": b_ops,
        }
        report[mode]["inference"] = relative(
            np.asarray(plain(x, training=False)), np.asarray(fold(x, training=False))
        )
    if kind == "tiny":
        report["reload"] = reload_check(fold, x)
    return report


def reload_check(model, x) -> dict:
    """A routed model saves what Keras saves: model.keras loads (safe mode) as Keras'
    own layers, unrouted, with the same outputs."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.keras")
        model.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    classes = sorted({type(layer).__name__ for layer in loaded.layers})
    return {
        "classes": classes,
        "routed": routed_counts(loaded),
        "diff": relative(np.asarray(model(x)), np.asarray(loaded(x))),
    }


def main(out: str, weights: str, kinds: list[str]) -> None:
    results = {}
    for kind in kinds:
        try:
            results[kind] = compare(kind, weights if kind == "mobilenet_v2_torchvision" else "none")
        except Exception as e:  # the parent names the failing case
            results[kind] = {"error": f"{type(e).__name__}: {e}"}
    with open(out, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "none", sys.argv[3:] or ["tiny"])
