"""A saved model.keras with the zoo's own layers loads in a fresh process via load_run's
registration (the family modules are imported lazily, so nothing else registers them);
keras-hub is imported only for a model of its family (its import costs 0.5-1.7 s)."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import keras
from tlmed_keras.models.alexnet import AdaptiveAveragePooling2D
inputs = keras.Input((16, 16, 3))
keras.Model(inputs, AdaptiveAveragePooling2D(2)(inputs)).save({path!r})
from tlmed_keras import models
models.build_classifier("resnet18", 2, weights="none", image_size=32)[0].save({hub_path!r})
"""

LOAD = """
import keras
from tlmed_keras.models import register_layers
try:
    keras.saving.load_model({path!r}, safe_mode=True, compile=False)
    print("BEFORE loaded")
except Exception:
    print("BEFORE refused")
import sys
register_layers("alexnet")
keras.saving.load_model({path!r}, safe_mode=True, compile=False)
print("AFTER loaded", "keras_hub" in sys.modules)
register_layers("resnet18")
keras.saving.load_model({hub_path!r}, safe_mode=True, compile=False)
print("HUB loaded", "keras_hub" in sys.modules)
"""


def _python(code: str) -> subprocess.CompletedProcess:
    env = {"KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": ""}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )


def test_register_layers_lets_a_fresh_process_load_own_layers(tmp_path):
    paths = dict(path=str(tmp_path / "alexnet_pool.keras"), hub_path=str(tmp_path / "r18.keras"))
    saved = _python(CODE.format(**paths))
    assert saved.returncode == 0, saved.stderr[-2000:]
    loaded = _python(LOAD.format(**paths))
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert loaded.stdout.split() == [
        *("BEFORE", "refused", "AFTER", "loaded", "False"),
        *("HUB", "loaded", "True"),
    ]
