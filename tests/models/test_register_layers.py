"""A saved model.keras with the zoo's own layers loads in a fresh process via load_run's
registration (the family modules are imported lazily, so nothing else registers them)."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import keras
from tlmed_keras.models.alexnet import AdaptiveAveragePooling2D
inputs = keras.Input((16, 16, 3))
keras.Model(inputs, AdaptiveAveragePooling2D(2)(inputs)).save({path!r})
"""

LOAD = """
import keras
from tlmed_keras.models import register_layers
try:
    keras.saving.load_model({path!r}, safe_mode=True, compile=False)
    print("BEFORE loaded")
except Exception:
    print("BEFORE refused")
register_layers()
keras.saving.load_model({path!r}, safe_mode=True, compile=False)
print("AFTER loaded")
"""


def _python(code: str) -> subprocess.CompletedProcess:
    env = {"KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": ""}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )


def test_register_layers_lets_a_fresh_process_load_own_layers(tmp_path):
    path = str(tmp_path / "alexnet_pool.keras")
    saved = _python(CODE.format(path=path))
    assert saved.returncode == 0, saved.stderr[-2000:]
    loaded = _python(LOAD.format(path=path))
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert loaded.stdout.split() == ["BEFORE", "refused", "AFTER", "loaded"]
