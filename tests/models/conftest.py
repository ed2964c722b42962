"""Fixtures of the model-zoo tests."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[2]
TORCHVISION_MOBILENET = "weights/torchvision/mobilenet_v2-b0353104.pth"


@pytest.fixture(scope="session")
def mobilenet_pth(shared_dir) -> pathlib.Path:
    """Genuine torchvision MobileNetV2 ImageNet weights (legacy .pth) from ../shared."""
    return shared_dir / TORCHVISION_MOBILENET


@pytest.fixture(scope="session")
def photo(shared_dir):
    """``photo("chelsea")`` -> uint8 ``[1, 224, 224, 3]`` from ../shared/data/photos."""

    def _load(name: str) -> np.ndarray:
        path = shared_dir / "data" / "photos" / f"{name}_224.png"
        return np.asarray(Image.open(path).convert("RGB"))[None]

    return _load


def run_python(code: str, env: dict | None = None, timeout: int = 600) -> str:
    """Runs ``code`` in a fresh interpreter (own Keras backend / KERAS_HOME); returns stdout.

    Fails the test with stderr's tail when the child fails.
    """
    child_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        pytest.fail(f"child python failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout
