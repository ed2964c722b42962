"""Calibration and intervals through evaluate, export and compare on a real tiny run: the
stored temperature, the report's intervals and calibration, the SavedModel's calibrated
output against evaluate's, fitting on val when a run has no temperature, and ensembles."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.conftest import run_python
from tlmed_keras import calibration as cal
from tlmed_keras.evaluate import compare
from tlmed_keras.evaluate.report import (
    EvalOptions,
    evaluate_ensemble,
    evaluate_run,
    evaluate_workdirs,
)

SET_TEMPERATURE = 1.7  # a 3-step tiny run fits an arbitrary one: set a clearly non-unit T


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    """Factory: a fresh copy of the tiny BreastMNIST run (its files may be changed)."""

    def _make(name: str = "run"):
        return shutil.copytree(tiny_run("breastmnist"), tmp_path / name)

    return _make


def test_training_stores_its_temperature_and_test_intervals(tiny_run):
    workdir = tiny_run("breastmnist")
    entries = cal.read_entries(workdir / cal.FILE)
    assert list(entries) == ["none"]  # the run's --tta
    assert entries["none"]["fitted_on"] == "val" and entries["none"]["num_images"] == 78
    assert entries["none"]["val_nll_after"] <= entries["none"]["val_nll_before"] + 1e-12
    metrics = json.loads((workdir / "metrics.json").read_text())
    for name in ("acc", "auc"):
        low, high = metrics["test_ci95"][name]
        assert low <= metrics["test"][name] <= high


def test_savedmodel_calibrated_output_equals_evaluates(run_copy, tmp_path):
    from tlmed_keras.export import savedmodel
    from tlmed_keras.runs.rundir import load_run
    from tlmed_keras.runs.split import load_split
    from tlmed_keras.serving import verify

    workdir = run_copy()
    cal.store_entry(workdir / cal.FILE, "none", {"temperature": SET_TEMPERATURE})
    report = evaluate_run(workdir, "test")
    ev = report.evaluation
    assert ev.calibration.temperature == SET_TEMPERATURE
    np.testing.assert_array_equal(ev.calibration.calibrated.argmax(1), ev.scores.argmax(1))
    assert not np.allclose(ev.calibration.calibrated, ev.scores, atol=1e-3)
    saved = json.loads(report.files["report"].read_text())
    for name in ("acc", "auc"):
        low, high = saved[f"{name}_ci95"]
        assert low <= saved[name] <= high
    assert saved["calibration"]["temperature"] == SET_TEMPERATURE
    assert saved["calibration"]["after"]["ece"] == pytest.approx(
        cal.ece(ev.y_true, ev.calibration.calibrated, ev.task)
    )
    assert report.files["reliability"].read_bytes()[:4] == b"\x89PNG"
    assert "Calibration (ECE 15 bins / Brier)" in report.text and "95 % bootstrap" in report.text

    run = load_run(workdir)
    images, _ = load_split(run, "test")
    result = savedmodel.export_savedmodel(
        run.model, run.preprocess, run.info, tmp_path / "serving", images[:16],
        temperature=ev.calibration.temperature,
    )  # fmt: skip
    got = verify.predict(result.path, images)
    np.testing.assert_allclose(
        got["probabilities_calibrated"], ev.calibration.calibrated, atol=1e-5
    )
    np.testing.assert_allclose(got["probabilities"], ev.scores, atol=1e-5)
    np.testing.assert_array_equal(got["class_id"], ev.scores.argmax(1))


def test_run_without_temperature_gets_one_fitted_on_val(run_copy, tmp_path):
    workdir = run_copy()
    (workdir / cal.FILE).unlink()
    ev = evaluate_run(workdir, "val", EvalOptions(out_dir=tmp_path)).evaluation
    entry = cal.read_entries(workdir / cal.FILE)["none"]
    logits = cal.logits_from_probabilities(ev.scores, ev.task)
    assert entry["temperature"] == pytest.approx(
        cal.fit_temperature(logits, ev.y_true, ev.task), rel=1e-6
    )
    assert ev.calibration.temperature == entry["temperature"]


def test_compare_of_identical_runs_is_0_0_and_refuses_other_images(run_copy, tiny_run):
    a, b = run_copy("a"), run_copy("b")
    ev_a = evaluate_run(a, "test", EvalOptions(out_dir=a / "out")).evaluation
    comparison = compare.compare(ev_a, evaluate_workdirs([b], "test", EvalOptions()), [a], [b])
    for name in ("acc", "auc"):
        found = comparison.difference[name]
        assert (found.estimate, found.low, found.high) == (0.0, 0.0, 0.0)
    assert "A - B +0.0000 [+0.0000, +0.0000]" in comparison.text()
    other = evaluate_workdirs([tiny_run("retinamnist")], "test", EvalOptions())
    with pytest.raises(ValueError, match="same dataset and split"):
        compare.compare(ev_a, other, [a], ["retina"])


def test_ensemble_temperature_is_stored_beside_its_report(run_copy):
    a, b = run_copy("a"), run_copy("b")
    report = evaluate_ensemble([a, b], "test")
    stored = cal.read_entries(a.parent / "eval_ensemble" / cal.FILE)["none"]
    assert stored["members"] == [str(a), str(b)]
    assert report.evaluation.calibration.temperature == stored["temperature"]
    assert "ACC " in report.text and " [" in report.text.split("Members:")[1].splitlines()[1]


@pytest.mark.slow  # a fresh process: TensorFlow start-up and two model loads
def test_cli_compare_prints_the_paired_difference(run_copy):
    a = run_copy("a")
    done = run_python(
        "-m", "tlmed_keras.evaluate", f"--workdir={a}", f"--compare={a}",
        f"--out_dir={a / 'out'}", timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("A - B +0.0000 [+0.0000, +0.0000]") == 2
    assert json.loads((a / "out" / compare.FILE).read_text())["acc"]["difference_ci95"] == [0, 0]


def test_predict_gives_calibrated_probabilities_and_raw_ones_on_request(run_copy):
    from tlmed_keras.predict.output import ImageResult, format_results, top_k
    from tlmed_keras.predict.sources import RAW, RunPredictor
    from tlmed_keras.runs.split import load_split

    workdir = run_copy()
    cal.store_entry(workdir / cal.FILE, "none", {"temperature": SET_TEMPERATURE})
    calibrated, raw = RunPredictor(workdir), RunPredictor(workdir, raw=True)
    images = load_split(calibrated.run, "test")[0][:8, ..., None]
    p_raw = raw.probabilities(images).astype(np.float64)
    want = cal.scaled(np.log(p_raw), calibrated.spec.task, SET_TEMPERATURE)
    np.testing.assert_allclose(calibrated.probabilities(images), want, atol=1e-5)
    assert raw.calibration == RAW and calibrated.calibration == "calibrated, temperature 1.700"
    result = ImageResult("x.png", "28x28 L", top_k(want[0], calibrated.spec, 2))
    text = format_results([result], calibrated.spec, "text", calibrated.calibration)
    assert "class probabilities (calibrated, temperature 1.700)" in text
