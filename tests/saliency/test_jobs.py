"""predict --explain and evaluate --explain=K write their PNGs (tiny runs of the real trainer)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests import tiny_registry
from tests.conftest import run_python
from tlmed_keras.evaluate.evaluation import evaluate_scores
from tlmed_keras.evaluate.explain import confident_picks
from tlmed_keras.predict.explain import output_names


def test_picks_are_the_most_confident_errors_and_correct_images():
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.99, 0.01]])
    y_true = np.array([1, 1, 0, 0, 0])  # image 0 and 3 are wrong
    ev = evaluate_scores(y_true, scores, task="binary-class", label_names=("a", "b"))
    errors, correct = confident_picks(ev, 2)
    assert errors.tolist() == [0, 3] and correct.tolist() == [4, 1]
    errors, correct = confident_picks(ev, 5)
    assert errors.tolist() == [0, 3] and correct.tolist() == [4, 1, 2]


def test_two_images_of_one_name_get_two_files():
    assert output_names(["a/scan.png", "b/scan.png", "c/x.jpg"]) == [
        "scan_saliency.png",
        "scan_2_saliency.png",
        "x_saliency.png",
    ]


@pytest.mark.parametrize("name", ["breastmnist", "retinamnist"])
def test_predict_writes_one_explanation_per_image(tiny_run, tmp_path, name):
    from tlmed_keras.predict.classify import predict_images
    from tlmed_keras.predict.explain import write_explanations
    from tlmed_keras.predict.images import read_image
    from tlmed_keras.predict.sources import RunPredictor

    predictor = RunPredictor(tiny_run(name))
    paths = []
    for i, (size, mode) in enumerate([((64, 48), "L"), ((30, 30), "RGB")]):
        pixels = np.random.default_rng(i).integers(0, 256, (size[1], size[0], 3), np.uint8)
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(pixels).convert(mode).save(paths[-1])
    images = [read_image(p) for p in paths]
    results = predict_images([predictor], paths, 1, images=images)
    written = write_explanations(
        [predictor], images, results, tmp_path / "out", registry=tiny_registry
    )
    assert [p.name for p in written] == ["img0_saliency.png", "img1_saliency.png"]
    for path in written:
        with Image.open(path) as png:
            assert png.width > 3 * png.height / 2  # three panels side by side


def test_evaluate_writes_the_montage(tiny_run, tmp_path, monkeypatch):
    from tlmed_keras.evaluate import explain
    from tlmed_keras.evaluate.report import EvalOptions, evaluate_run

    # The tiny run's model is the test registry's: route the montage to it.
    real = explain.write_montage
    monkeypatch.setattr(
        explain,
        "write_montage",
        lambda *args, **kwargs: real(*args, **kwargs, registry=tiny_registry),
    )
    report = evaluate_run(tiny_run("breastmnist"), "test", EvalOptions(out_dir=tmp_path, explain=3))
    montage = report.files["saliency_montage"]
    assert montage == tmp_path / "saliency_montage.png"
    with Image.open(montage) as png:
        assert png.width > 300 and png.height > 300
    with pytest.raises(ValueError, match="--explain=-1"):
        EvalOptions(explain=-1)


def test_predict_refuses_explain_for_a_saved_model(tmp_path):
    image = tmp_path / "a.png"
    Image.new("L", (8, 8), 3).save(image)
    done = run_python(
        "-m", "tlmed_keras.predict", f"--saved_model={tmp_path}", "--explain", str(image),
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--explain needs --workdir=RUN" in done.stderr
    assert "Traceback" not in done.stderr
