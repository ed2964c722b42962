"""uint8 -> normalised float32 on the CPU: which TensorFlow ops do it cheapest (issue #15).

    python -m experiments.memory.normalize_ops [--rounds=3]

One [128, 224, 224, 3] uint8 batch (the streamed 224 px pipeline's), converted by each
candidate inside a ``tf.function`` (a graph, as in tf.data), 10 calls per round, rounds
alternated; prints wall and CPU milliseconds per batch (medians) and each candidate's largest
difference from the current three-pass form. "scalar" candidates use one scale and offset for
all channels (the "tf" / "unit" / "half" normalisations); the others ImageNet's per-channel
mean and std ("torch").
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

B, H, W = 128, 224, 224
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
GAIN = ((1 / 255) / STD).astype(np.float32)
OFFSET = (MEAN / STD).astype(np.float32)


def three_pass_rows(x):  # Preprocess today: cast, multiply, subtract, [B, H, W*3] layout
    rows = tf.reshape(tf.cast(x, tf.float32), (-1, H, W * 3))
    rows = rows * tf.constant(np.tile(GAIN, W)) - tf.constant(np.tile(OFFSET, W))
    return tf.reshape(rows, (-1, H, W, 3))


def fused_batch_norm(x):
    y, *_ = tf.raw_ops.FusedBatchNormV3(
        x=tf.cast(x, tf.float32),
        scale=tf.constant(GAIN),
        offset=tf.constant(-OFFSET),
        mean=tf.zeros(3),
        variance=tf.ones(3),
        epsilon=0.0,
        is_training=False,
    )
    return y


def conv_1x1_bias(x):
    kernel = tf.constant(np.diag(GAIN).reshape(1, 1, 3, 3))
    return tf.nn.bias_add(tf.nn.conv2d(tf.cast(x, tf.float32), kernel, 1, "VALID"), -OFFSET)


def depthwise_bias(x):
    kernel = tf.constant(GAIN.reshape(1, 1, 3, 1))
    y = tf.nn.depthwise_conv2d(tf.cast(x, tf.float32), kernel, [1, 1, 1, 1], "VALID")
    return tf.nn.bias_add(y, -OFFSET)


def dequantize_per_channel(x):
    low = -OFFSET
    high = (low.astype(np.float64) + 255 * GAIN.astype(np.float64)).astype(np.float32)
    q = tf.bitcast(x, tf.quint8)
    return tf.quantization.dequantize(q, low, high, mode="MIN_COMBINED", axis=3)


def xla_fused(x):  # the pipeline's call (Preprocess.map_batch): one compiled pass
    return tf.cast(x, tf.float32) * tf.constant(GAIN) - tf.constant(OFFSET)


def numpy_two_pass(x):
    def run(a):
        out = np.empty(a.shape, np.float32)
        rows = out.reshape(len(a), H, W * 3)
        np.multiply(a.reshape(len(a), H, W * 3), np.tile(GAIN, W), out=rows, casting="unsafe")
        np.subtract(rows, np.tile(OFFSET, W), out=rows)
        return out

    y = tf.numpy_function(run, [x], tf.float32, stateful=False)
    y.set_shape(x.shape)
    return y


def scalar_three_pass(x):
    return tf.cast(x, tf.float32) * (1 / 127.5) - 1.0


def scalar_dequantize(x):  # Preprocess's one-pass form for one-scale normalisations
    return tf.quantization.dequantize(tf.bitcast(x, tf.quint8), -1.0, 1.0, mode="MIN_COMBINED")


CANDIDATES = {
    "per-channel: cast, mul, sub (current)": three_pass_rows,
    "per-channel: FusedBatchNormV3": fused_batch_norm,
    "per-channel: 1x1 conv + bias": conv_1x1_bias,
    "per-channel: depthwise 1x1 + bias": depthwise_bias,
    "per-channel: Dequantize(axis=3)": dequantize_per_channel,
    "per-channel: numpy, 2 passes": numpy_two_pass,
    "per-channel: XLA-fused (one pass)": xla_fused,
    "scalar: cast, mul, sub": scalar_three_pass,
    "scalar: Dequantize (one pass)": scalar_dequantize,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    images = np.random.default_rng(0).integers(0, 256, (B, H, W, 3), dtype=np.uint8)
    x = tf.constant(images)
    graphs = {
        name: tf.function(fn, jit_compile=name.endswith("XLA-fused (one pass)"))
        for name, fn in CANDIDATES.items()
    }
    per_channel = graphs["per-channel: cast, mul, sub (current)"](x).numpy()
    scalar = images.astype(np.float32) / 127.5 - 1
    wall = {name: [] for name in graphs}
    cpu = {name: [] for name in graphs}
    for name, graph in graphs.items():
        reference = scalar if name.startswith("scalar") else per_channel
        print(f"{name}: max |diff| {np.abs(graph(x).numpy() - reference).max():.2e}")
    for round_ in range(args.rounds):
        names = list(graphs) if round_ % 2 == 0 else list(graphs)[::-1]
        for name in names:
            start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(10):
                graphs[name](x)
            wall[name].append((time.perf_counter() - start) * 100)
            cpu[name].append((time.process_time() - cpu_start) * 100)
    for name in graphs:
        print(
            f"{name:42s} {statistics.median(wall[name]):6.1f} ms wall "
            f"{statistics.median(cpu[name]):6.1f} ms CPU per batch"
        )


if __name__ == "__main__":
    main()
