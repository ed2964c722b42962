"""Ensembles of members with their own preprocessing (backbone, model input size,
normalisation): evaluate and export take them; each member sees its input as when alone."""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest

from tests import tiny_registry
from tests.conftest import tiny_run_config
from tlmed_keras.data import catalog
from tlmed_keras.data.preprocess import Preprocess
from tlmed_keras.evaluate.evaluation import predict_scores
from tlmed_keras.evaluate.report import EvalOptions, evaluate_ensemble, evaluate_run
from tlmed_keras.export import savedmodel
from tlmed_keras.runs import ensemble
from tlmed_keras.runs.rundir import load_run
from tlmed_keras.runs.split import load_split
from tlmed_keras.serving import verify
from tlmed_keras.train.trainer import train_and_evaluate


def _probs(model, run, images, preprocess=None) -> np.ndarray:
    """Probabilities of ``model`` on raw ``images``, fed through ``preprocess`` (default:
    the run's own) in the tf.data pipeline evaluation uses."""
    fed = (
        run
        if preprocess is None
        else types.SimpleNamespace(**{**vars(run), "preprocess": preprocess})
    )
    labels = np.zeros((len(images), 1), np.int64)
    return predict_scores(fed, images, labels, model=model)[1]


def _member_mean(runs, images, tta: str) -> np.ndarray:
    """The ensemble by hand: each member alone, its own preprocessing, then the mean."""
    return np.mean(
        [_probs(ensemble.with_tta(r.model, r.info.task, tta), r, images) for r in runs], axis=0
    )


@pytest.fixture(scope="module")
def mixed_sizes(tiny_run, medmnist_dir, tmp_path_factory):
    """The shared tiny BreastMNIST run (32 px model input) and one at 40 px (seed 1)."""
    root = tmp_path_factory.mktemp("mixed") / "size40"
    config = dataclasses.replace(
        tiny_run_config("breastmnist", medmnist_dir, True), image_size=40, seed=1
    )
    train_and_evaluate(config, root, registry=tiny_registry, say=lambda *a, **k: None)
    return [tiny_run("breastmnist"), root]


def test_one_member_ensemble_equals_its_member(tiny_run):
    workdir = tiny_run("breastmnist")
    alone = evaluate_run(workdir, "test", EvalOptions(out_dir=None)).evaluation
    report = evaluate_ensemble([workdir], "test", EvalOptions(out_dir=None))
    np.testing.assert_allclose(report.evaluation.scores, alone.scores, atol=1e-12)
    run = load_run(workdir)
    model, preprocess = ensemble.serving_parts([run])
    assert model is run.model and preprocess is run.preprocess
    # The per-member form on raw pixels gives the member's probabilities too.
    images, _ = load_split(run, "test")
    raw = ensemble.PerMemberPreprocessing([(run.preprocess, [run.model])], run.info.task)
    got = _probs(raw, run, images, preprocess=ensemble.RawPixels())
    np.testing.assert_allclose(got, alone.scores, atol=1e-5)


def test_members_of_two_input_sizes_evaluate_as_the_mean_of_members(mixed_sizes):
    runs = [load_run(w) for w in mixed_sizes]
    assert runs[0].preprocess.image_size == 32 and runs[1].preprocess.image_size == 40
    report = evaluate_ensemble(mixed_sizes, "test", EvalOptions(out_dir=None))
    members = [evaluate_run(w, "test", EvalOptions(out_dir=None)).evaluation for w in mixed_sizes]
    assert not np.allclose(members[0].scores, members[1].scores)
    mean = (members[0].scores + members[1].scores) / 2
    np.testing.assert_allclose(report.evaluation.scores, mean, atol=1e-12)
    assert "tiny_cnn" in report.text


def test_members_of_two_input_sizes_export_as_one_savedmodel(mixed_sizes, tmp_path):
    runs = ensemble.load_members(mixed_sizes)
    images, _ = load_split(runs[0], "test")
    with pytest.raises(ValueError, match="preprocess their input differently"):
        ensemble.ensemble_model(runs, "flip")
    model, preprocess = ensemble.serving_parts(runs, "flip")
    assert isinstance(preprocess, ensemble.RawPixels)
    result = savedmodel.export_savedmodel(model, preprocess, runs[0].info, tmp_path, images[:24])
    assert result.max_abs_diff <= 1e-4
    served = verify.predict(result.path, images)  # grey [N, 28, 28] raw uint8 in
    np.testing.assert_allclose(
        served["probabilities"], _member_mean(runs, images, "flip"), atol=1e-4
    )


def _fake_run(model, preprocess, info):
    """What ensembles read of a run, for models built here rather than trained."""
    config = types.SimpleNamespace(data=info.name, size=info.size, model=model.name)
    return types.SimpleNamespace(
        model=model, preprocess=preprocess, info=info, config=config, workdir=model.name
    )


def _export_and_compare(runs, images, tmp_path, tta: str) -> None:
    ensemble.check_members(runs)
    model, preprocess = ensemble.serving_parts(runs, tta)
    result = savedmodel.export_savedmodel(model, preprocess, runs[0].info, tmp_path, images[:16])
    assert result.max_abs_diff <= 1e-4
    members = [_probs(ensemble.with_tta(r.model, r.info.task, tta), r, images) for r in runs]
    assert np.abs(members[0] - members[1]).max() > 1e-3  # really two different models
    served = verify.predict(result.path, images)["probabilities"]
    np.testing.assert_allclose(served, np.mean(members, axis=0), atol=1e-4)


def test_members_with_other_normalisations_and_sizes_export(medmnist_dir, tmp_path):
    """RGB RetinaMNIST; member A: ImageNet mean / std at 32 px, B: [0, 1] at 40 px, nearest."""
    info = catalog.get_info("retinamnist")
    images = np.load(medmnist_dir / "retinamnist.npz")["test_images"][:32]
    a, _ = tiny_registry.build_classifier("tiny_cnn", info.num_classes, image_size=32)
    b, _ = tiny_registry.build_classifier("tiny_cnn", info.num_classes, image_size=40)
    runs = [
        _fake_run(a, Preprocess(32, "torch"), info),
        _fake_run(b, Preprocess(40, "unit", interpolation="nearest"), info),
    ]
    _export_and_compare(runs, images, tmp_path, "shift")


@pytest.mark.slow  # two MobileNetV2s through the SavedModel writer: about a minute on 2 cores
def test_mobilenet_v2_torchvision_with_another_backbone_exports(medmnist_dir, tmp_path):
    """MobileNetV2 (torchvision layout, ImageNet mean / std, 32 px) beside keras.applications'
    MobileNetV2 ([-1, 1], 48 px), random init: the served ensemble is the members' mean."""
    from tlmed_keras import models

    info = catalog.get_info("breastmnist")
    images = np.load(medmnist_dir / "breastmnist.npz")["test_images"][:16]
    runs = []
    for name, size in (("mobilenet_v2_torchvision", 32), ("mobilenet_v2", 48)):
        model, _ = models.build_classifier(name, info.num_classes, weights="none", image_size=size)
        preprocess = Preprocess(size, normalization=models.get_spec(name).normalization)
        runs.append(_fake_run(model, preprocess, info))
    assert runs[0].preprocess.normalization != runs[1].preprocess.normalization
    _export_and_compare(runs, images, tmp_path, "flip")
