"""Training-step throughput of the model zoo on an accelerator, JAX backend, no TensorFlow.

    KERAS_BACKEND=jax python -m experiments.gpu.step_rate \
        --models=mobilenet_v2_torchvision@112,resnet50@224 --batch_size=128 --out=FILE.jsonl

Why not ``tlmed_keras.bench --target=train``: that one times the trainer's own step fed by
its tf.data pipeline, and the GPU machine lent to sessions has JAX but no TensorFlow (its
wheel is far over what can be carried there). This script times what does not need
TensorFlow: the registry's classifiers (``build_classifier``, the same graphs the trainer
builds), fine-tuned as the recipe fine-tunes (backbone trainable, batch-norm frozen, dropout
0.2, AdamW, softmax cross-entropy, a compiled step), on one random batch already on the
device. So the number is the step's ceiling, before any input pipeline. Weights are random:
speed does not depend on their values.

Per model and precision (float32; mixed_bfloat16 with ``--bf16``) it prints one JSON line:
the first step's seconds (tracing + XLA compilation) and images/s over ``--steps`` timed
steps after ``--warmup`` untimed ones, each step synchronised by reading its loss.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from tlmed_keras.models import registry  # noqa: E402


def define_flags() -> None:
    """This script's flags, defined only when it runs as a program: imported (its test), its
    common names (--out, --batch_size, --steps) would clash with other modules' flags."""
    flags.DEFINE_list(
        "models",
        ["mobilenet_v2_torchvision@112"],
        "NAME@SIZE entries (SIZE: input side in px; NAME alone: the backbone's native size).",
    )
    flags.DEFINE_integer("batch_size", 128, "Images per step.")
    flags.DEFINE_integer("steps", 30, "Timed steps.")
    flags.DEFINE_integer("warmup", 5, "Untimed steps after the first (compiling) one.")
    flags.DEFINE_integer("num_classes", 8, "Classifier outputs (BloodMNIST has 8).")
    flags.DEFINE_bool("bf16", False, "Also time each model under the mixed_bfloat16 policy.")
    flags.DEFINE_string("out", None, "Append the JSON lines to this file too.")


FLAGS = flags.FLAGS


def parse_entry(entry: str) -> tuple[str, int | None]:
    """``"resnet50@224"`` -> ``("resnet50", 224)``; ``"resnet50"`` -> ``("resnet50", None)``."""
    name, _, size = entry.partition("@")
    if size and not size.isdigit():
        raise ValueError(f"Bad --models entry {entry!r}: expected NAME or NAME@SIZE (SIZE in px).")
    return name, int(size) if size else None


def fine_tuning_classifier(name: str, size: int | None, num_classes: int) -> keras.Model:
    """The registry's classifier, trainable as the recipe's fine-tune phase leaves it."""
    model, backbone = registry.build_classifier(
        name, num_classes, weights="none", image_size=size, dropout=0.2
    )
    registry.set_trainable(backbone, name, "all", freeze_batch_norm=True)
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=1e-4, weight_decay=1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    return model


def time_steps(model: keras.Model, batch: int, steps: int, warmup: int) -> dict[str, float]:
    """First-step seconds and images/s of ``steps`` synchronised steps after ``warmup``."""
    import jax

    side = model.input_shape[1]
    rng = np.random.default_rng(0)
    x = jax.device_put(rng.normal(size=(batch, side, side, 3)).astype("float32"))
    y = jax.device_put(rng.integers(0, model.output_shape[-1], size=(batch,)))
    start = time.perf_counter()
    float(model.train_on_batch(x, y))  # traces and compiles
    first = time.perf_counter() - start
    for _ in range(warmup):
        float(model.train_on_batch(x, y))
    start = time.perf_counter()
    for _ in range(steps):
        loss = float(model.train_on_batch(x, y))  # a host read: waits for the step
    seconds = time.perf_counter() - start
    return {
        "input_px": side,
        "first_step_s": round(first, 2),
        "step_ms": round(1000 * seconds / steps, 2),
        "images_per_s": round(steps * batch / seconds, 1),
        "final_loss_finite": bool(np.isfinite(loss)),
    }


def main(argv: list[str]) -> None:
    del argv
    import jax

    device = str(jax.devices()[0])
    policies = ["float32", "mixed_bfloat16"] if FLAGS.bf16 else ["float32"]
    entries = [parse_entry(e) for e in FLAGS.models]  # all checked before any build
    for name, size in entries:
        for policy in policies:
            keras.config.set_dtype_policy(policy)
            keras.utils.set_random_seed(0)
            try:
                model = fine_tuning_classifier(name, size, FLAGS.num_classes)
                row = time_steps(model, FLAGS.batch_size, FLAGS.steps, FLAGS.warmup)
            except Exception as e:  # one model failing must not hide the others' numbers
                row = {"error": f"{type(e).__name__}: {e}"[:300]}
            row = {"model": name, "policy": policy, "batch": FLAGS.batch_size, **row}
            row.update(device=device, keras=keras.__version__, jax=jax.__version__)
            line = json.dumps(row)
            print(line, flush=True)
            if FLAGS.out:
                with open(FLAGS.out, "a") as f:
                    f.write(line + "\n")
            keras.backend.clear_session()


if __name__ == "__main__":
    define_flags()
    try:
        app.run(main)
    except ValueError as e:
        sys.exit(f"experiments.gpu.step_rate: error: {e}")
