"""Backend selection (tlmed_keras.runtime) and a short training run on every backend."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tlmed_keras import runtime


def _python(code: str, env: dict | None = None, timeout: int = 600):
    """Runs ``code`` in a fresh interpreter (Keras fixes its backend at import)."""
    full_env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=full_env,
        timeout=timeout,
    )


def test_auto_is_the_cpu_backend_without_accelerator():
    # conftest hides any GPU (CUDA_VISIBLE_DEVICES=""), and this machine has none.
    assert runtime.resolve_backend("auto") == runtime.CPU_BACKEND == "tensorflow"


def test_auto_is_jax_with_an_accelerator(monkeypatch):
    monkeypatch.setattr(runtime, "_jax_has_accelerator", lambda: True)
    assert runtime.resolve_backend("auto") == "jax"


@pytest.mark.parametrize("name", ["jax", "tensorflow", "torch"])
def test_explicit_names_pass_through(name):
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"{name} is not installed")
    assert runtime.resolve_backend(name) == name


def test_unknown_name_lists_the_accepted_ones():
    with pytest.raises(ValueError, match="'tf'.*Accepted: auto, jax, tensorflow, torch"):
        runtime.resolve_backend("tf")


@pytest.mark.parametrize(("name", "fix"), [("torch", "pip install torch"), ("jax", "jax")])
def test_missing_backend_names_the_fix(monkeypatch, name, fix):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == name else real(n, *a)
    )
    with pytest.raises(RuntimeError, match=f"{name!r} is not installed. Fix: .*{fix}"):
        runtime.resolve_backend(name)


def test_auto_without_tensorflow_names_the_fix(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "tensorflow" else real(n, *a)
    )
    with pytest.raises(RuntimeError, match="'tensorflow' is not installed. Fix: uv sync"):
        runtime.resolve_backend("auto")


def test_setup_refuses_to_switch_an_imported_keras():
    code = (
        "import os; os.environ['KERAS_BACKEND'] = 'jax'\n"
        "import keras\n"
        "from tlmed_keras import runtime\n"
        "assert runtime.setup('jax') == 'jax'  # the same backend is fine\n"
        "runtime.setup('tensorflow')\n"
    )
    proc = _python(code)
    assert proc.returncode != 0
    assert "RuntimeError: Keras is already running on 'jax'; cannot switch to 'tensorflow'" in (
        proc.stderr
    )
    assert "KERAS_BACKEND" in proc.stderr  # says what to do instead


def test_setup_jax_hides_gpus_from_tensorflow(monkeypatch):
    import tensorflow as tf

    calls = []
    real = tf.config.set_visible_devices

    def recording(devices, device_type=None):
        calls.append((list(devices), device_type))
        return real(devices, device_type)

    monkeypatch.setattr(tf.config, "set_visible_devices", recording)
    assert runtime.setup("jax") == "jax"  # conftest imported keras on jax: no switch
    assert calls == [([], "GPU")]
    assert tf.config.get_visible_devices("GPU") == []
    assert os.environ["KERAS_BACKEND"] == "jax"


def test_setup_tensorflow_applies_cpu_settings_in_a_fresh_process():
    code = (
        "import json, os\n"
        "from tlmed_keras import runtime\n"
        "backend = runtime.setup('auto')\n"
        "import keras, tensorflow as tf\n"
        "print(json.dumps({'backend': backend, 'keras': keras.backend.backend(),\n"
        "    'env': os.environ['KERAS_BACKEND'],\n"
        "    'settings': runtime.cpu_settings('tensorflow'),\n"
        "    'intra': tf.config.threading.get_intra_op_parallelism_threads(),\n"
        "    'inter': tf.config.threading.get_inter_op_parallelism_threads()}))\n"
    )
    proc = _python(code, env={"CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["backend"] == out["keras"] == out["env"] == "tensorflow"
    for key, value in out["settings"].get("threading", {}).items():
        assert out[key] == value
    # The native start-up noise of TF and JAX (printed before their log settings apply) is gone.
    for noise in ("absl::InitializeLog", "oneDNN custom operations", "cuInit", "libtpu"):
        assert noise not in proc.stderr, proc.stderr[-2000:]


def test_quiet_native_startup_drops_known_noise_and_passes_on_the_rest(capfd):
    with runtime.quiet_native_startup():
        os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on. You may see...\n")
        os.write(2, b"E0000 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)\n")
        os.write(2, b"E0000 something.cc:1] a real problem the user must see\n")
    err = capfd.readouterr().err
    assert "a real problem the user must see" in err
    assert "oneDNN" not in err and "cuInit" not in err


def test_cpu_settings_keep_onednn_on_for_tensorflow():
    assert runtime.cpu_settings("tensorflow")["env"]["TF_ENABLE_ONEDNN_OPTS"] == "1"
    assert runtime.cpu_settings("jax") == {}


def test_user_environment_wins_over_cpu_settings(monkeypatch):
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    runtime._apply_cpu_settings("tensorflow")
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "0"


def test_cpu_supports_bfloat16_reads_the_cpu_flags():
    cpuinfo = pathlib.Path("/proc/cpuinfo")
    flags = cpuinfo.read_text() if cpuinfo.exists() else ""
    expected = "avx512_bf16" in flags or "amx_bf16" in flags
    assert runtime.cpu_supports_bfloat16() is expected


# ------------------------------------------------------------------ end-to-end, every backend


def _train_cmd(backend: str, data_dir, workdir) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tlmed_keras.train",
        "--model=squeezenet1_1",
        "--weights=none",
        "--image_size=32",
        "--data=bloodmnist",
        f"--data_dir={data_dir}",
        "--verify_data=false",
        "--batch_size=8",
        "--eval_batch_size=16",
        "--head_epochs=1",
        "--finetune_epochs=1",
        "--warmup_epochs=0",
        "--max_steps_per_epoch=2",
        f"--backend={backend}",
        f"--workdir={workdir}",
    ]


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_train_end_to_end_on_every_backend(backend, make_npz, tmp_path):
    """``python -m tlmed_keras.train`` runs both phases and writes its metrics on each backend
    (a fresh process each: Keras fixes its backend at import). ~25 s each on 2 idle cores."""
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (scripts/test.sh installs torch for this)")
    data = make_npz("bloodmnist", 28, {"train": 32, "val": 16, "test": 16}).parent
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    proc = subprocess.run(
        _train_cmd(backend, data, tmp_path / "run"),
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["backend"] == backend
    assert 0.0 <= metrics["test"]["acc"] <= 1.0
    assert (tmp_path / "run" / "DONE").exists()
