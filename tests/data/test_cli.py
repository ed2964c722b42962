"""The command lines: ``python -m tlmed_keras.data`` and ``python -m tlmed_keras.bench``."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO
from tlmed_keras.data import catalog

MEDMNIST_TORCH_MESSAGE = "Please install the required packages"


def _run(module: str, *args: str, home) -> subprocess.CompletedProcess:
    # A fresh HOME keeps the user's ~/.medmnist out of the test (medmnist creates it there).
    env = {**os.environ, "HOME": str(home), "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )


def test_list_prints_catalog_without_medmnist_torch_message(tmp_path):
    result = _run("tlmed_keras.data", "--list", home=tmp_path)
    assert result.returncode == 0, result.stderr
    for name in catalog.dataset_names():
        assert name in result.stdout
    assert "546/78/156" in result.stdout  # breastmnist's official split sizes
    assert MEDMNIST_TORCH_MESSAGE not in result.stdout + result.stderr


def test_summary_of_an_official_file(medmnist_dir):
    from tlmed_keras.data.summary import summary_lines

    out = "\n".join(summary_lines("retinamnist", 28, str(medmnist_dir), download=False))
    assert str(medmnist_dir / "retinamnist.npz") in out
    assert "md5:         ok (bd4c0672f1bba3e3a89f0e4e876791e4" in out
    assert "ordinal-regression" in out and "train=1080, val=120, test=400" in out
    assert "(28, 28, 3) uint8" in out


@pytest.mark.slow
def test_missing_file_offline_exits_1_with_places_and_url(tmp_path):
    result = _run(
        "tlmed_keras.data",
        "--data=organsmnist",
        "--size=64",
        f"--data_dir={tmp_path / 'mine'}",
        "--nodownload",
        home=tmp_path,
    )
    assert result.returncode == 1
    assert "organsmnist_64.npz" in result.stderr and str(tmp_path / "mine") in result.stderr
    assert catalog.get_info("organsmnist", 64).url in result.stderr


def test_pipeline_benchmark_measures_a_dataset():
    # Neither bench nor define_flags() in-process: other areas' entry points define flags too.
    from tlmed_keras.bench import pipeline as pipeline_bench
    from tlmed_keras.data.pipeline import PipelineOptions, make_dataset
    from tlmed_keras.data.preprocess import Preprocess

    info = catalog.get_info("breastmnist")
    images = np.zeros((12, 28, 28), np.uint8)
    options = PipelineOptions(batch_size=4, preprocess=Preprocess(32), training=True)
    dataset = make_dataset(images, np.zeros((12, 1)), info=info, options=options)
    assert pipeline_bench.measure(dataset, steps=5, warmup_steps=1) > 0


@pytest.mark.slow
@pytest.mark.parametrize("channels", ["1", "3"])
def test_pipeline_benchmark_prints_rate_last(tmp_path, channels):
    result = _run(
        "tlmed_keras.bench",
        "--target=pipeline",
        "--image_size=32",
        f"--channels={channels}",
        "--batch_size=8",
        "--steps=3",
        "--warmup_steps=1",
        "--num_images=32",
        "--augment=basic",
        home=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    name, value = last.split("=")
    assert name == "pipeline_images_per_s" and float(value) > 0
    assert "images=24 " in result.stdout  # 3 timed batches of 8
