"""SavedModel export: reload parity, TF Serving layout, saved_model_cli, atomicity, refusals."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import run_python
from tlmed_keras.export import savedmodel
from tlmed_keras.runs.rundir import load_run
from tlmed_keras.runs.split import load_split
from tlmed_keras.serving import layout, signature, verify

# TensorFlow's console script beside the interpreter that runs the tests (its venv).
SAVED_MODEL_CLI = pathlib.Path(sys.executable).parent / "saved_model_cli"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def _export(workdir, export_dir, **kwargs):
    run = load_run(workdir)
    images, _ = load_split(run, "test")
    return (
        run,
        images,
        savedmodel.export_savedmodel(
            run.model, run.preprocess, run.info, export_dir, images[:24], **kwargs
        ),
    )


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    """Factory: ``exported(name) -> (run, test images, ExportResult)``, cached."""
    cache = {}

    def _make(name):
        if name not in cache:
            cache[name] = _export(tiny_run(name), tmp_path_factory.mktemp(f"export_{name}"))
        return cache[name]

    return _make


@pytest.mark.parametrize("name", ["breastmnist", "retinamnist"])
def test_reloaded_savedmodel_matches_keras_on_batches_1_and_7(exported, name):
    run, images, result = exported(name)
    spec = signature.serving_spec(run.info)
    assert result.max_abs_diff <= 1e-4
    for batch in (images[:1], images[3:10]):
        got = verify.predict(result.path, batch)
        want = verify.keras_reference(run.model, run.preprocess, batch, spec)
        assert got["probabilities"].shape == (len(batch), run.info.num_classes)
        np.testing.assert_allclose(got["probabilities"], want["probabilities"], atol=1e-4)
        np.testing.assert_array_equal(got["class_id"], want["class_id"])
        np.testing.assert_allclose(got["probabilities"].sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("name", ["breastmnist", "retinamnist"])
def test_tf_serving_layout_labels_and_request(exported, name):
    run, images, result = exported(name)
    info = run.info
    export_dir = result.path.parents[1]
    assert result.path == export_dir / info.name / "1"
    assert (result.path / "saved_model.pb").is_file()
    assert (result.path / "variables" / "variables.index").is_file()
    assert layout.read_labels(result.path) == list(info.label_names)
    meta = json.loads((result.path / "assets.extra" / "metadata.json").read_text())
    assert meta["input"]["shape"] == [None, 28, 28, info.channels]
    # Nothing but the version (and the sample request) in the model's base path.
    assert sorted(p.name for p in result.path.parent.iterdir()) == ["1", "request.json"]
    config = result.models_config.read_text()
    assert f'name: "{info.name}"' in config
    assert f'base_path: "{(export_dir / info.name).resolve()}"' in config
    assert 'model_platform: "tensorflow"' in config
    body = json.loads(result.request.read_text())
    assert body["signature_name"] == "serving_default"
    instances = np.array([row["images"] for row in body["instances"]])
    np.testing.assert_array_equal(instances, images[:2].reshape(2, 28, 28, info.channels))


def test_saved_model_cli_show_and_run(exported, tmp_path):
    run, images, result = exported("breastmnist")
    batch = images[:7, ..., None]
    np.save(tmp_path / "x.npy", batch)
    script = (
        f"{SAVED_MODEL_CLI} show --all --dir {result.path} && "
        f"{SAVED_MODEL_CLI} run --dir {result.path} --tag_set serve "
        f"--signature_def serving_default --inputs images={tmp_path / 'x.npy'} "
        f"--outdir {tmp_path / 'out'}"
    )
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    show = proc.stdout.split("signature_def['serving_default']:", 1)[1]
    uint8_input = r"inputs\['images'\] tensor_info:\s+dtype: DT_UINT8\s+shape: \(-1, 28, 28, 1\)"
    assert re.search(uint8_input, show), show
    assert "outputs['probabilities']" in show and "outputs['class_id']" in show
    assert "outputs['probabilities_calibrated']" in show
    got = np.load(tmp_path / "out" / "probabilities.npy")
    want = verify.predict(result.path, batch)["probabilities"]
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_signature_itself_rejects_wrong_dtype_and_shape(exported):
    _, images, result = exported("breastmnist")
    fn = verify.load_signature(result.path)
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError), match="uint8"):
        fn(images=tf.constant(images[:2, ..., None].astype(np.float32)))
    wrong_size = r"takes raw uint8 images \[batch, 28, 28, 1\]"
    with pytest.raises(tf.errors.InvalidArgumentError, match=wrong_size):
        fn(images=tf.constant(images[:2, :20, :20, None]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="batch >= 1"):
        fn(images=tf.zeros([0, 28, 28, 1], tf.uint8))


def test_predict_helper_refuses_bad_input_clearly(exported):
    _, images, result = exported("retinamnist")
    not_uint8 = r"raw uint8 pixels \[batch, 28, 28, 3\], got dtype float32"
    with pytest.raises(TypeError, match=not_uint8):
        verify.predict(result.path, images[:2].astype(np.float32) / 255)
    with pytest.raises(ValueError, match=r"got shape \[2, 64, 64, 3\]"):
        verify.predict(result.path, np.zeros((2, 64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match=r"got shape \[2, 28, 28\]"):  # RGB set: no gray
        verify.predict(result.path, images[:2, ..., 0])
    with pytest.raises(ValueError, match="empty batch"):
        verify.predict(result.path, images[:0])


def test_grayscale_predict_accepts_npz_layout(exported):
    _, images, result = exported("breastmnist")
    a = verify.predict(result.path, images[:3])  # [B, 28, 28] as stored
    b = verify.predict(result.path, images[:3, ..., None])
    np.testing.assert_array_equal(a["probabilities"], b["probabilities"])


def test_export_time_verification_refuses_wrong_images(tiny_run, tmp_path):
    run = load_run(tiny_run("breastmnist"))
    bad_size = np.zeros((4, 64, 64), np.uint8)
    with pytest.raises(ValueError, match=r"breastmnist export \(size 28\) takes images"):
        savedmodel.export_savedmodel(run.model, run.preprocess, run.info, tmp_path, bad_size)
    with pytest.raises(TypeError, match="got dtype float64"):
        savedmodel.export_savedmodel(run.model, run.preprocess, run.info, tmp_path, bad_size * 1.0)
    assert not (tmp_path / "breastmnist").exists()


def _no_version_left(base: pathlib.Path) -> None:
    leftovers = sorted(p.name for p in base.iterdir()) if base.exists() else []
    assert leftovers == [], leftovers


@pytest.mark.parametrize("failure", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_interrupted_export_leaves_no_version(tiny_run, tmp_path, monkeypatch, failure):
    def fail_before_move(*args, **kwargs):
        raise failure

    monkeypatch.setattr(savedmodel, "_publish", fail_before_move)
    with pytest.raises(type(failure)):
        _export(tiny_run("breastmnist"), tmp_path)
    _no_version_left(tmp_path / "breastmnist")
    assert not (tmp_path / "models.config").exists()


def test_verification_mismatch_is_refused_and_leaves_nothing(tiny_run, tmp_path, monkeypatch):
    real = savedmodel.keras_reference

    def drifted(*args, **kwargs):
        out = real(*args, **kwargs)
        out["probabilities"] = out["probabilities"] + 1e-3
        return out

    monkeypatch.setattr(savedmodel, "keras_reference", drifted)
    with pytest.raises(verify.ExportVerificationError, match="differ from the Keras model"):
        _export(tiny_run("breastmnist"), tmp_path)
    _no_version_left(tmp_path / "breastmnist")


def test_existing_version_kept_unless_overwrite(tiny_run, tmp_path):
    workdir = tiny_run("breastmnist")
    _, _, first = _export(workdir, tmp_path, version=3)
    pb = first.path / "saved_model.pb"
    before = pb.stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="--overwrite"):
        _export(workdir, tmp_path, version=3)
    assert pb.stat().st_mtime_ns == before
    _, _, nxt = _export(workdir, tmp_path)  # no version: the next one
    assert nxt.version == 4
    _, _, again = _export(workdir, tmp_path, version=3, overwrite=True)
    assert again.path == first.path and pb.stat().st_mtime_ns != before
    assert sorted(p.name for p in (tmp_path / "breastmnist").iterdir()) == [
        "3",
        "4",
        "request.json",
    ]


def test_multilabel_export_has_per_label_predictions(tiny_run, tmp_path):
    run, images, result = _export(tiny_run("chestmnist"), tmp_path, temperature=2.0)
    got = verify.predict(result.path, images[:5])
    assert set(got) == {"probabilities", "predictions", "probabilities_calibrated"}
    assert got["predictions"].shape == (5, 14) and got["predictions"].dtype == np.int32
    np.testing.assert_array_equal(got["predictions"], (got["probabilities"] > 0.5).astype(int))
    # one shared temperature: sigmoid(logit / 2), the same 0.5 decisions
    p = got["probabilities"].astype(np.float64)
    want = 1 / (1 + np.exp(-np.log(p / (1 - p)) / 2.0))
    np.testing.assert_allclose(got["probabilities_calibrated"], want, atol=1e-5)
    np.testing.assert_array_equal((got["probabilities_calibrated"] > 0.5), got["predictions"] == 1)


def test_bad_name_version_platforms_refused(tiny_run, tmp_path):
    workdir = tiny_run("breastmnist")
    with pytest.raises(ValueError, match="Invalid model name"):
        _export(workdir, tmp_path, name="a/b")
    with pytest.raises(ValueError, match="positive integer"):
        _export(workdir, tmp_path, version=0)
    with pytest.raises(ValueError, match="Invalid serialization platforms"):
        _export(workdir, tmp_path, platforms=["gpu"])


def test_cli_on_tensorflow_backend_matches_jax_export(exported, tiny_run, tmp_path):
    """CPU users may get the TensorFlow backend: the CLI must export natively there too."""
    _, images, jax_result = exported("retinamnist")
    proc = run_python(
        "-m",
        "tlmed_keras.export",
        f"--workdir={tiny_run('retinamnist')}",
        f"--export_dir={tmp_path}",
        "--backend=tensorflow",
        "--num_verify=16",
        "--version=5",
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "signature_def['serving_default']" in proc.stdout
    assert "images: uint8 [batch, 28, 28, 3]" in proc.stdout
    assert "Verified on 16 test images" in proc.stdout
    version = tmp_path / "retinamnist" / "5"
    meta = json.loads((version / "assets.extra" / "metadata.json").read_text())
    assert meta["backend"] == "tensorflow"
    # The run's own TTA by default (the tiny run was trained with none), said in the output.
    assert meta["tta"] == "none"
    assert "Test-time augmentation in the graph: none (the runs' own)." in proc.stdout
    tf_probs = verify.predict(version, images[:7])["probabilities"]
    jax_probs = verify.predict(jax_result.path, images[:7])["probabilities"]
    np.testing.assert_allclose(tf_probs, jax_probs, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("model_name", ["resnet18", "mobilenet_v2"])
def test_registry_backbone_exports_within_tolerance(model_name, medmnist_dir, tmp_path):
    """A real (randomly initialised) registry backbone, deeper than tiny_cnn, at 64 px."""
    from tlmed_keras import models
    from tlmed_keras.data import catalog
    from tlmed_keras.data.preprocess import Preprocess

    info = catalog.get_info("retinamnist")
    model, _ = models.build_classifier(model_name, info.num_classes, weights="none", image_size=64)
    preprocess = Preprocess(64, normalization=models.get_spec(model_name).normalization)
    images = np.load(medmnist_dir / "retinamnist.npz")["test_images"][:16]
    result = savedmodel.export_savedmodel(model, preprocess, info, tmp_path, images)
    assert result.max_abs_diff <= 1e-4
