"""The training-throughput benchmark (``python -m tlmed_keras.bench --target=train``)."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests import tiny_registry
from tests.conftest import run_python
from tlmed_keras.bench import train as bench_train


def test_benchmark_times_the_trainers_step_with_and_without_the_pipeline():
    lines = []
    result = bench_train.benchmark(
        tiny_registry.NAME,
        32,
        8,
        steps=3,
        warmup_steps=1,
        data="bloodmnist",
        source_size=28,
        num_images=20,  # -> 16 images: whole batches only
        registry=tiny_registry,
        say=lines.append,
    )
    assert result["compile_s"] > 0
    for key in ("no_pipeline_images_per_s", "pipeline_images_per_s"):
        assert 0 < result[key] < 1e7
    # Every variable trainable: the backbone is unfrozen (phase 2, --unfreeze=all); only
    # batch-norm moving statistics are not.
    assert result["trainable_params"] > 0
    header = lines[0]
    assert "input=32px" in header and "non_trainable=24" in header  # 2 BN layers x (4+8) x 2


def test_bad_model_is_a_clear_error():
    with pytest.raises(ValueError, match="Bad --model='nope'"):
        bench_train.benchmark("nope", 32, 8, steps=1, warmup_steps=1, registry=tiny_registry)


def _bench(*args: str) -> subprocess.CompletedProcess:
    return run_python("-m", "tlmed_keras.bench", "--target=train", *args, KERAS_BACKEND="jax")


def test_cli_needs_a_model():
    res = _bench("--image_size=32")
    assert res.returncode != 0 and "--target=train needs --model=NAME" in res.stderr


@pytest.mark.slow
def test_cli_last_line_is_the_rate():
    res = _bench(
        "--model=squeezenet1_1",
        "--image_size=32",
        "--batch_size=4",
        "--steps=2",
        "--warmup_steps=1",
        "--num_images=16",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    last = res.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"train_images_per_s=\d+(\.\d+)?", last), last
