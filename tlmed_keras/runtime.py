"""Start-up: choose the Keras backend and keep TensorFlow off accelerators.

Must run before the first ``import keras``: Keras fixes its backend at import time. Entry
points call ``setup()`` right after parsing flags and import Keras-using modules after it.
This is the only module that knows backends by name; everything else uses ``keras.ops``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import sys
import tempfile

BACKENDS = ("auto", "jax", "tensorflow", "torch")
# Measured on a 2-core CPU (issue 8): JAX/XLA CPU convolutions are 5-8x slower than
# TensorFlow's, so "auto" picks TensorFlow when no accelerator is present.
CPU_BACKEND = "tensorflow"
# What setup() applies per backend (experiments/cpu_speed/results.md has every option tried):
# - oneDNN kernels in TF: ResNet-50 training 4.8x slower without them (on by default on Linux
#   x86 only; set explicitly so other builds that support them get them too).
# Tried without gain, so left at TF's defaults: intra/inter-op thread counts, grappler off,
# steps_per_execution; jit_compile=True (XLA CPU) is 10x slower, and the trainer's "auto"
# already means False for TF on a CPU.
_CPU_SETTINGS: dict[str, dict] = {
    "tensorflow": {"env": {"TF_ENABLE_ONEDNN_OPTS": "1"}},
}


# Lines TF's and JAX's native code print at every start on a machine without a GPU, before
# their own log settings apply (TF_CPP_MIN_LOG_LEVEL does not reach them): not problems, but
# they bury the first screen. ``quiet_native_startup`` drops these and passes on the rest.
_STARTUP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog"
    r"|oneDNN custom operations are on"
    r"|Could not find cuda drivers on your machine"
    r"|failed call to cuInit"
    r"|Unable to register cu\w+ factory"
    r"|computation placer already registered"
    r"|TF-TRT Warning"
    r"|This TensorFlow binary is optimized to use available CPU instructions"
    r"|rebuild TensorFlow with the appropriate compiler flags"
)


@contextlib.contextmanager
def quiet_native_startup():
    """Captures what native code writes to file descriptor 2 inside the block and writes it
    back without the known start-up noise (``_STARTUP_NOISE``): real warnings and errors
    still reach stderr, once the block ends."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode(errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not _STARTUP_NOISE.search(line))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


def _jax_has_accelerator() -> bool:
    if importlib.util.find_spec("jax") is None:
        return False
    # "Unable to initialize backend 'tpu'" is logged at INFO on every machine without one.
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    with quiet_native_startup():
        import jax

        return jax.default_backend() != "cpu"


def resolve_backend(requested: str = "auto") -> str:
    """Maps ``requested`` ("auto" or a backend name) to a concrete Keras backend.

    "auto" is JAX when JAX sees a GPU/TPU, else ``CPU_BACKEND``.

    Raises:
        ValueError: an unknown backend name.
        RuntimeError: a backend whose package is not installed, with the command that fixes it.
    """
    if requested not in BACKENDS:
        raise ValueError(f"Unknown backend {requested!r}. Accepted: {', '.join(BACKENDS)}.")
    backend = requested
    if requested == "auto":
        backend = "jax" if _jax_has_accelerator() else CPU_BACKEND
    if importlib.util.find_spec(backend) is None:
        fix = {
            "torch": "pip install torch (CPU build: pip install torch --index-url "
            "https://download.pytorch.org/whl/cpu)",
            "jax": "uv sync (or pip install jax; jax[cuda12] on NVIDIA GPUs)",
            "tensorflow": "uv sync (or pip install tensorflow)",
        }[backend]
        raise RuntimeError(f"Keras backend {backend!r} is not installed. Fix: {fix}.")
    return backend


def hide_accelerators_from_tensorflow() -> None:
    """TensorFlow serves tf.data, TensorBoard and SavedModel only: it must not grab a GPU."""
    import tensorflow as tf

    # RuntimeError: devices already initialised, TF was set up earlier in this process.
    with contextlib.suppress(RuntimeError):
        tf.config.set_visible_devices([], "GPU")


def cpu_settings(backend: str) -> dict:
    """The CPU speed settings ``setup`` applies for ``backend`` (measured in
    experiments/cpu_speed/README.md): ``{"env": {...}, "threading": {"intra": n, "inter": m}}``.

    Environment variables already set by the user win over these defaults.
    """
    return _CPU_SETTINGS.get(backend, {})


def cpu_supports_bfloat16() -> bool:
    """Whether this CPU has native bfloat16 arithmetic (AVX512_BF16 or AMX), which makes
    ``mixed_bfloat16`` pay off on TF for ResNet-style models (measured: not for MobileNetV2,
    whose depthwise convolutions get slower). False where /proc/cpuinfo is unavailable."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def _apply_cpu_settings(backend: str) -> None:
    settings = cpu_settings(backend)
    for key, value in settings.get("env", {}).items():
        os.environ.setdefault(key, value)
    threads = settings.get("threading")
    if threads:
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads["intra"])
            tf.config.threading.set_inter_op_parallelism_threads(threads["inter"])
        except RuntimeError:
            pass  # TF's runtime already started in this process: its pools are fixed


def setup(backend: str = "auto") -> str:
    """Selects the Keras backend (before Keras is imported), applies its CPU speed settings
    and returns its name.

    Raises:
        RuntimeError: Keras was already imported with another backend.
    """
    chosen = resolve_backend(backend)
    if "keras" in sys.modules:
        import keras

        active = keras.backend.backend()
        if active != chosen:
            raise RuntimeError(
                f"Keras is already running on {active!r}; cannot switch to {chosen!r} in this "
                "process. Set KERAS_BACKEND before starting Python."
            )
    os.environ["KERAS_BACKEND"] = chosen
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _apply_cpu_settings(chosen)
    with quiet_native_startup():
        import tensorflow as tf  # every entry point needs it (tf.data), so start it here

        tf.config.list_physical_devices()  # CUDA is probed (and complains) here
    if chosen != "tensorflow":
        hide_accelerators_from_tensorflow()
    return chosen
