"""``python -m tlmed_keras.models``: --list and --classify."""

from __future__ import annotations

import pytest

from tlmed_keras import models


def test_cli_classify_prints_top5(monkeypatch, imagenet_mobilenet, shared_dir):
    from tlmed_keras.models import __main__ as cli

    def prebuilt(name, weights):  # the session's converted model: no second build
        return imagenet_mobilenet

    monkeypatch.setattr(models, "build_imagenet_classifier", prebuilt)
    lines = cli.classify(
        "mobilenet_v2_torchvision", "unused", str(shared_dir / "data/photos/coffee_224.png")
    )
    assert len(lines) == 5
    index, name, prob = lines[0].split()
    assert (index, name) == ("967", "espresso") and float(prob) == pytest.approx(0.9887, abs=0.01)
    probs = [float(line.split()[-1]) for line in lines]
    assert probs == sorted(probs, reverse=True)


def test_cli_list_names_every_model():
    from tlmed_keras.models import __main__ as cli

    lines = cli.list_models()
    assert len(lines) == len(models.model_names()) + 1
    row = next(line for line in lines if line.startswith("inception_v3 "))
    assert row.split()[1:3] == ["299", "75"] and "keras.applications.InceptionV3" in row


@pytest.mark.slow
def test_cli_end_to_end(mobilenet_pth, shared_dir):
    import subprocess
    import sys

    from tests.models.conftest import REPO

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tlmed_keras.models",
            "--model=mobilenet_v2_torchvision",
            f"--weights={mobilenet_pth}",
            f"--classify={shared_dir / 'data/photos/chelsea_224.png'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    first = done.stdout.splitlines()[0].split()
    assert first[:2] == ["285", "Egyptian_cat"]
    assert float(first[2]) == pytest.approx(0.7954, abs=0.01)
