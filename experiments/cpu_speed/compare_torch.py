"""Side by side: one full fine-tuning step in our Keras stack vs plain PyTorch eager, on CPU.

Every measurement runs in its own subprocess (Keras fixes its backend at import, TF fixes its
thread pools at first use), and the competitors alternate round by round so that machine
contention hits all of them alike. Medians over rounds are reported, with the load average.

    uv run python experiments/cpu_speed/compare_torch.py --rounds 3 \\
        --models mobilenetv2,resnet50 --configs torch,keras-tf

A config is ``FRAMEWORK[:key=value[:key=value...]]``. FRAMEWORK is ``torch`` (the reference;
keys: impl=tv|local (tv, the default: torchvision's own ``mobilenet_v2`` / ``resnet50``, what a
PyTorch user runs; local: the hand-written modules of ``torch_models.py``), amp=bf16
(``torch.autocast("cpu", torch.bfloat16)``), threads, bn, layout=channels_last|nchw,
omp=passive|active (OMP_WAIT_POLICY: torch's spinning OpenMP threads collapse when the
machine is oversubscribed; passive makes a fair reference under contention)),
``bench`` (the headline of issue #14: ``tlmed_keras.bench --target=train``'s pipeline-fed rate,
the trainer's own model, step and data; keys fused_bn=0|1, fold=0|1 (``TLMED_KERAS_FOLD``),
bn=frozen|train (default: train, random weights), mp=1; models mobilenetv2 =
``mobilenet_v2_torchvision``, resnet50 = ``resnet50``), ``keras-tf``, ``keras-jax`` or
``keras-torch``
(keys: feed=fit|tob, jit=true|false|auto, spe=N, threads=N (intra-op), inter=N, onednn=0|1,
layout=channels_last|channels_first, precision=float32|mixed_bfloat16, bn=train|frozen,
defaults=0 (skip runtime.setup's CPU settings), grappler=0 (TF graph optimizer off)).
``batch=N`` and ``size=N`` work everywhere.

The PyTorch side can run in another interpreter (``--torch_python``): torchvision's PyPI wheel
is a CUDA build, and installed next to the project's CPU torch it breaks ``transformers`` (which
the parity tests need), so the peer lives in its own venv (``setup_torch_peer.sh``).

The step: full backbone trainable, AdamW, softmax cross-entropy, 8 classes, random weights
(speed does not depend on them). ``feed=fit`` (default) is ``model.fit`` on a tf.data pipeline
of raw uint8 64 px images through the project's ``Preprocess`` layer, as the trainer does;
``feed=tob`` is ``train_on_batch`` on one pre-made batch, as the PyTorch loop is fed.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time
import types

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
NUM_CLASSES = 8
RAW_SIZE = 64  # MedMNIST+ 64 px images feed both models (resized by Preprocess)
DEFAULTS = {
    "mobilenetv2": {"size": 96, "batch": 64},
    "resnet50": {"size": 64, "batch": 32},
    "resnet50_tv": {"size": 64, "batch": 32},
}
KERAS_BACKENDS = {"keras-tf": "tensorflow", "keras-jax": "jax", "keras-torch": "torch"}
# The ``bench`` framework: the trainer's own model and step (``tlmed_keras.bench``).
BENCH_MODELS = {"mobilenetv2": "mobilenet_v2_torchvision", "resnet50": "resnet50"}


def load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


# ---------------------------------------------------------------- workers (one per process)


def import_torchvision():
    """``import torchvision``, also where its C++ operators cannot load.

    PyPI's torchvision wheels are CUDA builds: beside the CPU build of torch their extension
    (``nms``, ``roi_align``, ...) does not load, and ``torchvision/_meta_registrations.py`` then
    fails at import (``operator torchvision::nms does not exist``) while registering fake
    kernels for those operators. The classification models use none of them, so that one
    module is replaced by an empty one and the import retried.
    """
    try:
        import torchvision
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules["torchvision._meta_registrations"] = types.ModuleType(
            "torchvision._meta_registrations"
        )
        import torchvision
    return torchvision


def build_torch_model(model_name: str, impl: str):
    """torchvision's model (``impl="tv"``) or the hand-written one (``"local"``)."""
    if impl == "local":
        sys.path.insert(0, str(HERE))
        import torch_models

        return torch_models.build(model_name, NUM_CLASSES)
    if impl != "tv":
        raise ValueError(f"Bad impl={impl!r}: accepted tv (torchvision), local.")
    builders = {"mobilenetv2": "mobilenet_v2", "resnet50": "resnet50"}
    if model_name not in builders:
        raise ValueError(
            f"torchvision peer has no {model_name!r}; accepted: {', '.join(builders)} "
            "(or impl=local)."
        )
    tv = import_torchvision()
    return getattr(tv.models, builders[model_name])(num_classes=NUM_CLASSES)


def torch_worker(model_name: str, opts: dict, steps: int, warmup: int) -> dict:
    import torch

    torch.set_num_threads(int(opts.get("threads", os.cpu_count())))
    torch.manual_seed(0)
    size, batch = int(opts["size"]), int(opts["batch"])
    model = build_torch_model(model_name, opts.get("impl", "tv"))
    model.train()
    if opts.get("bn") == "frozen":  # BatchNorm in inference mode, as the project fine-tunes
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
    x = torch.randn(batch, 3, size, size)
    if opts.get("layout") == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, NUM_CLASSES, (batch,))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()

    amp = opts.get("amp", "none")
    if amp not in ("none", "bf16"):
        raise ValueError(f"Bad amp={amp!r}: accepted none, bf16.")
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16")

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    for _ in range(warmup - 1):
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    params = sum(p.numel() for p in model.parameters())
    versions = {"torch": torch.__version__}
    if opts.get("impl", "tv") == "tv":
        versions["torchvision"] = import_torchvision().__version__
    return {"first_step_s": first, "step_times": times, "params_trainable": params, **versions}


def keras_worker(framework: str, model_name: str, opts: dict, steps: int, warmup: int) -> dict:
    sys.path.insert(0, str(REPO))
    if "onednn" in opts:
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = str(opts["onednn"])
    from tlmed_keras import runtime

    backend = KERAS_BACKENDS[framework]
    if opts.get("defaults", "1") == "0":
        os.environ["KERAS_BACKEND"] = backend
    else:
        runtime.setup(backend)
    if backend == "tensorflow" and ("threads" in opts or "inter" in opts):
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(int(opts.get("threads", 0)))
        tf.config.threading.set_inter_op_parallelism_threads(int(opts.get("inter", 0)))
    if backend == "tensorflow" and opts.get("grappler") == "0":
        import tensorflow as tf

        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    if backend == "torch" and "threads" in opts:
        import torch

        torch.set_num_threads(int(opts["threads"]))
    import keras
    import numpy as np
    import tensorflow as tf

    from tlmed_keras.data.preprocess import Preprocess

    keras.utils.set_random_seed(0)
    if opts.get("precision"):
        keras.mixed_precision.set_global_policy(opts["precision"])
    size, batch = int(opts["size"]), int(opts["batch"])
    layout = opts.get("layout", "channels_last")
    model = build_keras_model(keras, model_name, size, layout, opts.get("bn", "train"))
    jit = {"true": True, "false": False, "auto": "auto"}[opts.get("jit", "auto")]
    spe = int(opts.get("spe", 1))
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3, weight_decay=0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit,
        steps_per_execution=spe,
    )
    # As the trainer does: optimizer variables made eagerly, so the first step traces the
    # train function once instead of twice (first step ~3x faster on TF).
    model.optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (max(8 * batch, 512), RAW_SIZE, RAW_SIZE, 3), dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, (len(images),)).astype(np.int32)
    preprocess = Preprocess(size, normalization="torch")
    if opts.get("feed", "fit") == "tob":
        x = preprocess(images[:batch])
        x = np.asarray(x)
        y = labels[:batch]
        t0 = time.perf_counter()
        model.train_on_batch(x, y)
        first = time.perf_counter() - t0
        for _ in range(warmup - 1):
            model.train_on_batch(x, y)
        times = []
        for _ in range(steps):
            t = time.perf_counter()
            model.train_on_batch(x, y)
            times.append(time.perf_counter() - t)
    else:
        ds = (
            tf.data.Dataset.from_tensor_slices((images, labels))
            .repeat()
            .shuffle(len(images), seed=0)
            .batch(batch, drop_remainder=True)
            .map(lambda a, b: (preprocess(a), b), num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE)
        )
        warm_execs = max(1, -(-warmup // spe))
        execs = max(1, -(-steps // spe))
        clock = make_step_clock(keras)
        model.fit(
            ds, epochs=1, steps_per_epoch=(warm_execs + execs) * spe, verbose=0, callbacks=[clock]
        )
        first = clock.ends[0] - clock.start
        times = [
            (b - a) / spe
            for a, b in zip(clock.ends[warm_execs - 1 : -1], clock.ends[warm_execs:], strict=True)
        ]
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    return {
        "first_step_s": first,
        "step_times": times,
        "params_trainable": trainable,
        "params_total": model.count_params(),
        "keras_backend": keras.backend.backend(),
    }


def bench_worker(model_name: str, opts: dict, steps: int, warmup: int) -> dict:
    """``python -m tlmed_keras.bench --target=train``'s measurement, in this process: the
    trainer's model, compiled step and pipeline. Keys: fused_bn=0|1 (the
    ``TLMED_KERAS_FUSED_BN`` switch), fold=0|1 (``TLMED_KERAS_FOLD``), bn=frozen|train
    (``--train_batchnorm``; frozen is how the trainer fine-tunes pretrained weights),
    mp=1 (``--train_mixed_precision``)."""
    sys.path.insert(0, str(REPO))
    if "fused_bn" in opts:  # read when the model is built
        os.environ["TLMED_KERAS_FUSED_BN"] = str(opts["fused_bn"])
    if "fold" in opts:
        os.environ["TLMED_KERAS_FOLD"] = str(opts["fold"])
    from tlmed_keras import runtime

    runtime.setup("tensorflow")
    from tlmed_keras.bench import train as bench_train

    batch = int(opts["batch"])
    result = bench_train.benchmark(
        BENCH_MODELS[model_name],
        int(opts["size"]),
        batch,
        steps=steps,
        warmup_steps=warmup,
        mixed_precision=opts.get("mp", "0") == "1",
        batchnorm=opts.get("bn", "train"),
        say=lambda *a: None,
    )
    rate = result["pipeline_images_per_s"]
    return {
        "first_step_s": result["compile_s"],
        "step_times": [batch / rate],  # the bench reports one rate over its timed steps
        "no_pipeline_img_s": result["no_pipeline_images_per_s"],
        "params_trainable": result["trainable_params"],
    }


def make_step_clock(keras):
    class StepClock(keras.callbacks.Callback):
        """Wall time at the start of training and at the end of every executed batch."""

        def __init__(self):
            super().__init__()
            self.start, self.ends = None, []

        def on_train_begin(self, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append(time.perf_counter())

    return StepClock()


def build_keras_model(keras, name, size, layout, bn):
    apps = {"mobilenetv2": keras.applications.MobileNetV2, "resnet50": keras.applications.ResNet50}
    if name not in apps:
        raise ValueError(f"Keras has no {name!r}; accepted: {', '.join(apps)}.")
    if layout == "channels_first":
        keras.config.set_image_data_format("channels_first")
    shape = (size, size, 3) if layout == "channels_last" else (3, size, size)
    backbone = apps[name](include_top=False, weights=None, input_shape=shape, pooling="avg")
    if bn == "frozen":  # the project's fine-tuning: BN layers stay in inference mode
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    inputs = keras.Input((size, size, 3))
    x = inputs if layout == "channels_last" else keras.layers.Permute((3, 1, 2))(inputs)
    outputs = keras.layers.Dense(NUM_CLASSES, dtype="float32")(backbone(x))
    return keras.Model(inputs, outputs)


# ---------------------------------------------------------------- orchestration


def parse_config(text: str) -> tuple[str, dict]:
    framework, *pairs = text.split(":")
    if framework not in ("torch", "bench") and framework not in KERAS_BACKENDS:
        raise ValueError(
            f"Unknown framework {framework!r} in config {text!r}. Accepted: torch, bench, "
            f"{', '.join(KERAS_BACKENDS)}."
        )
    opts = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"Config option {pair!r} in {text!r} must be key=value.")
        opts[key] = value
    return framework, opts


def run_one(
    config: str, model: str, steps: int, warmup: int, timeout: int, torch_python: str = ""
) -> dict:
    python = torch_python if torch_python and config.startswith("torch") else sys.executable
    cmd = [python, __file__, "--worker", config, "--models", model,
           "--steps", str(steps), "--warmup", str(warmup)]  # fmt: skip
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            out = json.loads(line[7:])
            out["process_s"] = time.perf_counter() - t0
            return out
    return {"error": (proc.stderr or proc.stdout)[-1500:]}


def summarize(result: dict, batch: int) -> dict:
    times = sorted(result["step_times"])
    med = statistics.median(times)
    return {"img_s": batch / med, "step_ms": 1000 * med}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", default="mobilenetv2,resnet50")
    p.add_argument("--configs", default="torch,keras-tf", help="comma-separated configs")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=12, help="timed steps per process")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps (incl. compile)")
    p.add_argument("--timeout", type=int, default=900)
    p.add_argument("--jsonl", help="append every raw result to this file")
    p.add_argument(
        "--torch_python",
        default="",
        help="interpreter for the torch configs (default: this one); e.g. "
        ".venv-torch-peer/bin/python made by experiments/cpu_speed/setup_torch_peer.sh",
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        framework, opts = parse_config(args.worker)
        if "omp" in opts:  # read by libgomp when torch loads: set before any import
            os.environ["OMP_WAIT_POLICY"] = opts["omp"].upper()
        model = args.models
        opts = {**DEFAULTS[model], **opts}
        if framework == "torch":
            out = torch_worker(model, opts, args.steps, args.warmup)
        elif framework == "bench":
            out = bench_worker(model, opts, args.steps, args.warmup)
        else:
            out = keras_worker(framework, model, opts, args.steps, args.warmup)
        print("RESULT " + json.dumps(out), flush=True)
        return 0

    models = args.models.split(",")
    configs = args.configs.split(",")
    for c in configs:
        parse_config(c)  # fail fast on a typo
    print(f"# {time.strftime('%F %T')} cpus={os.cpu_count()} {load()}", flush=True)
    rows: dict = {}
    for r in range(args.rounds):
        for model in models:
            for config in configs:
                res = run_one(
                    config, model, args.steps, args.warmup, args.timeout, args.torch_python
                )
                batch = int({**DEFAULTS[model], **parse_config(config)[1]}["batch"])
                if "error" in res:
                    print(f"round {r} {model:12s} {config:40s} ERROR {res['error']}", flush=True)
                    continue
                s = summarize(res, batch)
                rows.setdefault((model, config), []).append(s["img_s"])
                print(
                    f"round {r} {model:12s} {config:40s} {s['img_s']:7.1f} img/s "
                    f"step {s['step_ms']:6.0f} ms  first {res['first_step_s']:5.1f} s  "
                    f"params {res['params_trainable']:,}  [{load()}]",
                    flush=True,
                )
                if args.jsonl:
                    with open(args.jsonl, "a") as f:
                        rec = {"round": r, "model": model, "config": config, **res, **s}
                        f.write(json.dumps(rec) + "\n")
    print(f"\n# medians over {args.rounds} rounds  [{load()}]")
    print("| model | config | img/s (median) | range over rounds | vs torch |")
    print("|---|---|---|---|---|")
    for model in models:
        ref = rows.get((model, "torch"))
        ref_med = statistics.median(ref) if ref else None
        for config in configs:
            vals = rows.get((model, config))
            if not vals:
                continue
            med = statistics.median(vals)
            ratio = f"{med / ref_med:.2f}x" if ref_med else "-"
            spread = f"{min(vals):.1f}-{max(vals):.1f}"
            print(f"| {model} | {config} | {med:.1f} | {spread} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
