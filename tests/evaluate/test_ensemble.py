"""Seed ensembles and test-time augmentation: evaluate, export, the trainer's final evaluation."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import pathlib
import re
import shutil
import types

import keras
import numpy as np
import pytest

from tests import tiny_registry
from tests.conftest import run_python, tiny_run_config
from tlmed_keras import tta
from tlmed_keras.data import catalog
from tlmed_keras.evaluate.evaluation import predict_scores
from tlmed_keras.evaluate.report import EvalOptions, evaluate_ensemble, evaluate_run
from tlmed_keras.export import savedmodel
from tlmed_keras.runs import ensemble, rundir
from tlmed_keras.runs.rundir import load_run
from tlmed_keras.runs.split import load_split
from tlmed_keras.serving import verify
from tlmed_keras.train import selection
from tlmed_keras.train.trainer import train_and_evaluate


def _train(root: pathlib.Path, data_dir, **overrides) -> pathlib.Path:
    config = dataclasses.replace(tiny_run_config("breastmnist", data_dir, True), **overrides)
    train_and_evaluate(config, root, registry=tiny_registry, say=lambda *a, **k: None)
    return root


@pytest.fixture(scope="module")
def seeds(tiny_run, medmnist_dir, tmp_path_factory):
    """Two tiny BreastMNIST runs that differ only in the seed (0: the shared fixture, 1)."""
    root = tmp_path_factory.mktemp("seeds") / "seed1"
    return [tiny_run("breastmnist"), _train(root, medmnist_dir, seed=1)]


def _probs(model, run, images):
    return predict_scores(run, images, np.zeros((len(images), 1), np.int64), model=model)[1]


# --- test-time augmentation -------------------------------------------------------------


def _pooled_model(flip_invariant: bool) -> keras.Model:
    """A 2-class model on 8x8x3 input: global average pooling is invariant to a horizontal
    flip; flattening the pixels is not."""
    inputs = keras.Input((8, 8, 3))
    pool = keras.layers.GlobalAveragePooling2D() if flip_invariant else keras.layers.Flatten()
    x = pool(inputs)
    return keras.Model(inputs, keras.layers.Dense(2)(x))


def _softmax(logits) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_flip_tta_of_a_flip_invariant_model_changes_nothing():
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(5, 8, 8, 3)).astype("float32")
    invariant = _pooled_model(flip_invariant=True)
    plain = _softmax(invariant.predict(x, verbose=0))
    tta = _softmax(ensemble.with_tta(invariant, "binary-class", "flip").predict(x, verbose=0))
    np.testing.assert_allclose(tta, plain, atol=1e-6)
    # ... and it does change a model that is not invariant: the flip really is applied.
    sensitive = _pooled_model(flip_invariant=False)
    mirrored = _softmax(sensitive.predict(x[:, :, ::-1], verbose=0))
    expected = (_softmax(sensitive.predict(x, verbose=0)) + mirrored) / 2
    got = _softmax(ensemble.with_tta(sensitive, "binary-class", "flip").predict(x, verbose=0))
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert np.abs(got - _softmax(sensitive.predict(x, verbose=0))).max() > 1e-3


def test_tta_none_is_the_model_itself_and_bad_mode_refused():
    model = _pooled_model(True)
    assert ensemble.with_tta(model, "binary-class", "none") is model
    with pytest.raises(ValueError, match=r"--tta='rot90'.*none, flip, shift, flip_shift"):
        ensemble.with_tta(model, "binary-class", "rot90")


def _shifted_by_hand(x: np.ndarray, axis: int, pixels: int) -> np.ndarray:
    """Numpy reference of a shift view: move along ``axis``, repeat the edge into the gap."""
    side = x.shape[axis]
    index = np.clip(np.arange(side) - pixels, 0, side - 1)
    return np.take(x, index, axis=axis)


def test_shift_views_move_by_one_32nd_of_the_side_with_edges_repeated():
    x = np.random.default_rng(2).normal(size=(2, 64, 64, 3)).astype("float32")
    views = [np.asarray(v) for v in ensemble._views(x, "shift")]
    assert tta.shift_pixels(64) == 2 and tta.shift_pixels(112) == 4 and tta.shift_pixels(8) == 1
    expected = [x] + [_shifted_by_hand(x, a, s) for a in (1, 2) for s in (2, -2)]
    assert len(views) == 5
    for got, want in zip(views, expected, strict=True):
        np.testing.assert_array_equal(got, want)
    # flip_shift: the same five and their mirrors.
    both = [np.asarray(v) for v in ensemble._views(x, "flip_shift")]
    assert len(both) == 10
    for got, want in zip(both, expected + [e[:, :, ::-1] for e in expected], strict=True):
        np.testing.assert_array_equal(got, want)


def test_shift_tta_averages_the_model_over_its_five_views():
    keras.utils.set_random_seed(3)
    x = np.random.default_rng(3).normal(size=(4, 8, 8, 3)).astype("float32")
    model = _pooled_model(flip_invariant=False)
    views = [x] + [_shifted_by_hand(x, a, s) for a in (1, 2) for s in (1, -1)]
    expected = np.mean([_softmax(model.predict(v, verbose=0)) for v in views], axis=0)
    got = _softmax(ensemble.with_tta(model, "binary-class", "shift").predict(x, verbose=0))
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert np.abs(got - _softmax(model.predict(x, verbose=0))).max() > 1e-3
    # A constant image is its own shift: the averaged model gives the plain model's answer.
    flat = np.full((2, 8, 8, 3), 0.7, np.float32)
    shifted = ensemble.with_tta(model, "binary-class", "shift").predict(flat, verbose=0)
    np.testing.assert_allclose(
        _softmax(shifted), _softmax(model.predict(flat, verbose=0)), atol=1e-6
    )


def test_multilabel_average_goes_through_sigmoid():
    keras.utils.set_random_seed(1)
    x = np.random.default_rng(1).normal(size=(4, 8, 8, 3)).astype("float32")
    a, b = _pooled_model(False), _pooled_model(False)
    sig = lambda z: 1 / (1 + np.exp(-np.asarray(z, np.float64)))  # noqa: E731
    expected = (sig(a.predict(x, verbose=0)) + sig(b.predict(x, verbose=0))) / 2
    averaged = ensemble.Averaged([a, b], "multi-label, binary-class")
    np.testing.assert_allclose(sig(averaged.predict(x, verbose=0)), expected, atol=1e-6)


def test_evaluate_with_flip_tta_writes_its_own_folder(seeds):
    report = evaluate_run(seeds[0], "val", EvalOptions(tta="flip"))
    assert report.out_dir == seeds[0] / "eval" / "val_tta-flip"
    saved = json.loads(report.files["report"].read_text())
    assert saved["tta"] == "flip" and saved["num_images"] == 78
    assert "test-time augmentation: flip" in report.text


# --- ensembles: members ------------------------------------------------------------------


def test_workdirs_from_comma_list_and_glob(tmp_path):
    for name in ("seed0", "seed1", "seed2"):
        (tmp_path / name).mkdir()
    (tmp_path / "seed9.txt").write_text("not a run")
    got = ensemble.resolve_workdirs(f"{tmp_path}/seed1,{tmp_path}/seed*")
    assert got == [tmp_path / "seed1", tmp_path / "seed0", tmp_path / "seed2"]
    with pytest.raises(ValueError, match="matches no folder"):
        ensemble.resolve_workdirs(f"{tmp_path}/nothing*")
    with pytest.raises(ValueError, match="Bad --workdir"):
        ensemble.resolve_workdirs(" , ")


def _fake_run(workdir, data="breastmnist", size=28, labels=("a", "b"), image_size=32):
    preprocess = types.SimpleNamespace(
        get_config=lambda: {"name": f"p{workdir}", "image_size": image_size, "interpolation": "x"}
    )
    return types.SimpleNamespace(
        workdir=workdir,
        config=types.SimpleNamespace(data=data, size=size),
        info=types.SimpleNamespace(task="binary-class", label_names=labels),
        preprocess=preprocess,
    )


@pytest.mark.parametrize(
    "other, named",
    [
        (
            dict(data="pneumoniamnist"),
            "the dataset is 'breastmnist' in A but 'pneumoniamnist' in B",
        ),
        (dict(size=64), "the stored image size is 28 in A but 64 in B"),
        (dict(labels=("a", "c")), r"the label set is \('a', 'b'\) in A but \('a', 'c'\) in B"),
    ],
)
def test_member_mismatch_refused_naming_it_in_one_line(other, named):
    ensemble.check_members([_fake_run("A"), _fake_run("A2")])  # layer names may differ
    with pytest.raises(ValueError, match=named) as refused:
        ensemble.check_members([_fake_run("A"), _fake_run("B", **other)])
    assert "\n" not in str(refused.value)


def test_members_may_differ_in_model_input_size_and_normalisation():
    ensemble.check_members([_fake_run("A"), _fake_run("B", image_size=64)])


def test_real_runs_of_two_datasets_refused(seeds, tiny_run):
    with pytest.raises(ValueError, match="dataset is 'breastmnist'.*'retinamnist'"):
        evaluate_ensemble([seeds[0], tiny_run("retinamnist")], "val")


# --- cross-fitted runs (--cv_folds) --------------------------------------------------------


@pytest.fixture(scope="module")
def fold_runs(medmnist_dir, tmp_path_factory):
    """Tiny BreastMNIST runs validated on folds 0 and 1 of 3 of its train + val."""
    root = tmp_path_factory.mktemp("folds")
    return [_train(root / f"fold{k}", medmnist_dir, cv_folds=3, cv_fold=k) for k in (0, 1)]


def test_cross_fitted_run_is_evaluated_on_its_own_fold(fold_runs):
    """evaluate's "val" of a cross-fitted run is the fold it selected on: the trainer's val
    numbers come back, from a third of BreastMNIST's 546 + 78 images."""
    run = load_run(fold_runs[0])
    _, labels = load_split(run, "val")
    assert len(labels) == 208
    saved = json.loads((fold_runs[0] / "metrics.json").read_text())["val"]
    again = evaluate_run(fold_runs[0], "val", EvalOptions(out_dir=None)).evaluation
    assert again.acc == pytest.approx(saved["acc"], abs=1e-6)
    assert again.auc == pytest.approx(saved["auc"], abs=1e-4)
    _, test_labels = load_split(run, "test")
    assert len(test_labels) == catalog.get_info("breastmnist").split_sizes["test"]


def test_cross_fitting_training_leaves_the_test_split_unread(fold_runs):
    """Folds choose settings; the rules read test once per final run, so the trainer does not
    score it (evaluate still can, when asked: below)."""
    saved = json.loads((fold_runs[0] / "metrics.json").read_text())
    assert saved["test"] is None
    assert saved["per_class_split"] == "val"
    assert sum(row["support"] for row in saved["per_class"].values()) == 208  # the val fold


def test_members_of_different_folds_share_test_but_not_val(fold_runs):
    with pytest.raises(ValueError, match="fold 0 of 3.*fold 1 of 3.*'val' splits are other"):
        evaluate_ensemble(fold_runs, "val")
    report = evaluate_ensemble(fold_runs, "test", EvalOptions(out_dir=None))
    assert len(report.evaluation.y_true) == catalog.get_info("breastmnist").split_sizes["test"]


# --- ensembles: evaluate -----------------------------------------------------------------


def test_ensemble_of_identical_members_equals_the_member(seeds):
    alone = evaluate_run(seeds[0], "test").evaluation
    report = evaluate_ensemble([seeds[0], seeds[0]], "test", EvalOptions(out_dir=None))
    np.testing.assert_allclose(report.evaluation.scores, alone.scores, atol=1e-12)
    assert report.evaluation.acc == alone.acc and report.evaluation.auc == alone.auc
    run = load_run(seeds[0])
    images, _ = load_split(run, "test")
    averaged = ensemble.Averaged([run.model, run.model], run.info.task)
    np.testing.assert_allclose(_probs(averaged, run, images), alone.scores, atol=1e-5)


def test_ensemble_averages_member_probabilities_and_reports_members(seeds):
    report = evaluate_ensemble(seeds, "val", EvalOptions(tta="flip"))
    members = [evaluate_run(w, "val", EvalOptions(tta="flip")).evaluation for w in seeds]
    assert not np.allclose(members[0].scores, members[1].scores)  # really two models
    mean = (members[0].scores + members[1].scores) / 2
    np.testing.assert_allclose(report.evaluation.scores, mean, atol=1e-12)
    saved = json.loads(report.files["report"].read_text())
    assert [m["acc"] for m in saved["members"]] == pytest.approx([m.acc for m in members])
    assert saved["tta"] == "flip" and len(saved["workdirs"]) == 2
    common = pathlib.Path(os.path.commonpath(seeds))
    assert report.out_dir == common / "eval_ensemble" / "val_tta-flip"
    assert "mean ACC" in report.text and "Ensemble of 2 runs" in report.text


def test_ensemble_defaults_to_its_members_common_tta(seeds):
    report = evaluate_ensemble(seeds, "val")
    saved = json.loads(report.files["report"].read_text())
    assert (saved["tta"], saved["tta_source"]) == ("none", "the runs' own")
    assert "Ensemble of 2 runs (test-time augmentation: none, the runs' own)" in report.text


def test_ensemble_of_runs_trained_with_other_tta_is_refused_unless_tta_is_given(seeds, tmp_path):
    flipped = tmp_path / "flipped"
    shutil.copytree(seeds[1], flipped)
    config = json.loads((flipped / rundir.CONFIG_FILE).read_text())
    config["tta"] = config[rundir.FLAGS_KEY]["tta"] = "flip"  # as if trained with --tta=flip
    (flipped / rundir.CONFIG_FILE).write_text(json.dumps(config))
    disagreement = re.escape(f"different --tta ({seeds[0]}: none, {flipped}: flip)")
    with pytest.raises(ValueError, match=disagreement):
        evaluate_ensemble([seeds[0], flipped], "val")
    report = evaluate_ensemble([seeds[0], flipped], "val", EvalOptions(tta="none"))
    assert "(test-time augmentation: none, --tta)" in report.text


# --- ensembles: export -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["flip", "flip_shift"])
def test_exported_ensemble_equals_keras_ensemble(seeds, tmp_path, mode):
    runs = ensemble.load_members(seeds)
    images, _ = load_split(runs[0], "test")
    model = ensemble.ensemble_model(runs, mode)
    result = savedmodel.export_savedmodel(
        model, runs[0].preprocess, runs[0].info, tmp_path, images[:24]
    )
    assert result.max_abs_diff <= 1e-4 and result.num_verified == 24
    # Independently of the export's own check: the served probabilities are the mean of the
    # members' TTA probabilities computed one model at a time.
    members = [_probs(ensemble.with_tta(r.model, r.info.task, mode), r, images) for r in runs]
    served = verify.predict(result.path, images)
    np.testing.assert_allclose(served["probabilities"], np.mean(members, axis=0), atol=1e-4)
    np.testing.assert_array_equal(served["class_id"], np.argmax(served["probabilities"], axis=-1))


@pytest.mark.slow  # a fresh interpreter loading Keras and two runs: minutes on a busy CPU
def test_export_cli_refuses_mismatched_members(seeds, tiny_run, tmp_path):
    proc = run_python(
        "-m",
        "tlmed_keras.export",
        f"--workdir={seeds[0]},{tiny_run('retinamnist')}",
        f"--export_dir={tmp_path}",
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    assert proc.returncode != 0
    assert "dataset is 'breastmnist'" in proc.stderr
    assert not (tmp_path / "breastmnist").exists()


# --- trainer: --tta and --select_on ------------------------------------------------------


def test_selection_directions():
    assert selection.improves(0.5, None, "auc") and not selection.improves(None, 0.1, "acc")
    assert selection.improves(0.6, 0.5, "acc") and not selection.improves(0.5, 0.5, "auc")
    assert selection.improves(0.4, 0.5, "loss") and not selection.improves(0.6, 0.5, "loss")
    assert selection.selection_value({"val_auc": float("nan")}, "auc") is None
    assert selection.selection_value({"val_loss": 0.3}, "loss") == 0.3


def test_trainer_selects_on_loss_and_evaluates_with_tta(medmnist_dir, tmp_path):
    workdir = _train(tmp_path / "run", medmnist_dir, head_epochs=3, select_on="loss", tta="flip")
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["select_on"] == "loss" and metrics["tta"] == "flip"
    losses = [float(row["val_loss"]) for row in _history(workdir)]
    assert metrics["best_epoch"] == int(np.argmin(losses)) + 1
    # evaluate's default is the run's own TTA: it repeats the trainer's test numbers.
    again = evaluate_run(workdir, "test")
    assert again.evaluation.acc == pytest.approx(metrics["test"]["acc"], abs=1e-6)
    assert again.evaluation.auc == pytest.approx(metrics["test"]["auc"], abs=1e-6)
    assert "test-time augmentation: flip, the run's own" in again.text
    assert again.out_dir == workdir / "eval" / "test_tta-flip"
    # An explicit --tta overrides it, and the summary says so.
    plain = evaluate_run(workdir, "test", EvalOptions(tta="none"))
    assert "test-time augmentation: none, --tta" in plain.text
    assert plain.out_dir == workdir / "eval" / "test"
    saved = json.loads(plain.files["report"].read_text())
    assert (saved["tta"], saved["tta_source"]) == ("none", "--tta")
    assert not np.allclose(plain.evaluation.scores, again.evaluation.scores)


def _history(workdir: pathlib.Path) -> list[dict]:
    with open(workdir / "history.csv") as f:
        return list(csv.DictReader(f))


def test_flip_tta_is_refused_where_labels_name_body_sides():
    organ, blood = catalog.get_info("organcmnist"), catalog.get_info("bloodmnist")
    with pytest.raises(ValueError, match="--tta=flip for organcmnist.*lung-left"):
        ensemble.check_tta_for("flip", organ)
    with pytest.raises(ValueError, match="--tta=flip_shift for organcmnist.*--tta=shift"):
        ensemble.check_tta_for("flip_shift", organ)
    assert ensemble.check_tta_for("none", organ) == "none"
    assert ensemble.check_tta_for("shift", organ) == "shift"  # shifts keep sides apart
    assert ensemble.check_tta_for("flip", blood) == "flip"
