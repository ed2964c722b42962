"""Child process of test_batch_norm.py (the suite runs on JAX; the fused kernel is TF's).

Prints one JSON line: the largest differences between Keras' BatchNormalization and
a layer fused by fuse_layer (outputs, gradients, moving statistics) per case, the op types of
the traced training step, and what fuse_batch_norm did to a small nested model.
"""

import json
import os
import tempfile

os.environ["KERAS_BACKEND"] = "tensorflow"

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tlmed_keras.models import batch_norm  # noqa: E402
from tlmed_keras.models.registry import register_layers  # noqa: E402


def compare(training: bool, dtype: str, **kwargs) -> dict:
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(2.0, 3.0, (4, 5, 6, 7)), keras.DTypePolicy(dtype).compute_dtype)
    layers = [keras.layers.BatchNormalization(dtype=dtype, **kwargs) for _ in range(2)]
    for layer in layers:
        layer.build(x.shape)
    batch_norm.fuse_layer(layers[1])
    weights = [rng.normal(1.0, 0.5, w.shape).astype("float32") for w in layers[0].weights]
    weights = [
        abs(w) if "variance" in v.path else w
        for w, v in zip(weights, layers[0].weights, strict=True)
    ]
    for layer in layers:
        layer.set_weights(weights)

    @tf.function
    def step(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
            loss = tf.reduce_sum(tf.cast(y, "float32") * tf.sin(tf.cast(x, "float32")))
        return y, tape.gradient(loss, [x, *layer.trainable_weights])

    (ya, ga), (yb, gb) = step(layers[0]), step(layers[1])
    ops = {op.type for op in step.get_concrete_function(layers[1]).graph.get_operations()}

    def diff(a, b):
        return float(np.max(np.abs(np.asarray(a, "float32") - np.asarray(b, "float32"))))

    return {
        "output": diff(ya, yb),
        "gradients": max(diff(a, b) for a, b in zip(ga, gb, strict=True)),
        "statistics": max(
            diff(a.numpy(), b.numpy())
            for a, b in zip(
                layers[0].non_trainable_weights, layers[1].non_trainable_weights, strict=True
            )
        ),
        "fused_op": "FusedBatchNormV3" in ops,
        "output_dtype": str(yb.dtype.name),
    }


def nested_model():
    inner_in = keras.Input((8, 8, 3))
    inner = keras.layers.Conv2D(4, 3)(inner_in)
    inner = keras.layers.BatchNormalization()(inner)
    backbone = keras.Model(inner_in, keras.layers.GlobalAveragePooling2D()(inner))
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Reshape((1, 1, 4))(backbone(inputs))
    x = keras.layers.BatchNormalization()(x)
    return keras.Model(inputs, keras.layers.Flatten()(x))


def model_report() -> dict:
    keras.utils.set_random_seed(0)
    model = nested_model()
    x = np.random.default_rng(1).normal(size=(2, 8, 8, 3)).astype("float32")
    before = model(x, training=True)
    count = batch_norm.fuse_batch_norm(model)
    after = model(x, training=True)
    traced = tf.function(lambda images: model(images, training=True))
    ops = {op.type for op in traced.get_concrete_function(x).graph.get_operations()}
    all_bn = [
        layer
        for layer in [*model.layers, *model.layers[1].layers]
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "m.keras")
        model.save(path)
        register_layers()
        loaded = keras.saving.load_model(path, safe_mode=True)
        reloaded = loaded(x, training=False)
        # A weights file of the fused model loads into an unfused one (same variable paths).
        weights_path = os.path.join(folder, "m.weights.h5")
        model.save_weights(weights_path)
        plain = nested_model()
        plain.load_weights(weights_path)
    return {
        "count": count,
        "fused_op": "FusedBatchNormV3" in ops,
        "classes": sorted({type(layer).__name__ for layer in all_bn}),
        "fused": sorted({batch_norm.is_fused(layer) for layer in all_bn}),
        "loaded_classes": sorted({type(layer).__name__ for layer in loaded.layers}),
        "train_diff": float(np.max(np.abs(np.asarray(before) - np.asarray(after)))),
        "reload_diff": float(np.max(np.abs(np.asarray(model(x)) - np.asarray(reloaded)))),
        "weights_file_diff": float(np.max(np.abs(np.asarray(model(x)) - np.asarray(plain(x))))),
    }


def switched_off_report() -> dict:
    os.environ[batch_norm.ENV_SWITCH] = "0"
    try:
        return model_report()
    finally:
        del os.environ[batch_norm.ENV_SWITCH]


if __name__ == "__main__":
    report = {
        "train": compare(True, "float32"),
        "train_eps_momentum": compare(True, "float32", epsilon=1e-5, momentum=0.9),
        "train_no_affine": compare(True, "float32", center=False, scale=False),
        "inference": compare(False, "float32"),
        "train_mixed_bf16": compare(True, "mixed_bfloat16"),
        "model": model_report(),
        "model_switched_off": switched_off_report(),
    }
    print(json.dumps(report))
