"""predict on ordinary image files: any size and mode in, top classes out (issue #16 item 3)."""

from __future__ import annotations

import csv
import io
import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_python
from tlmed_keras.data import catalog
from tlmed_keras.predict.classify import predict_images
from tlmed_keras.predict.images import ImageFileError, crops_centre, read_image, to_medmnist
from tlmed_keras.predict.output import format_results


def _photo(path: pathlib.Path, size: tuple[int, int], mode: str, fmt: str) -> pathlib.Path:
    rng = np.random.default_rng(sum(size))
    rgb = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(rgb).convert(mode).save(path, fmt)
    return path


def test_any_mode_and_size_becomes_the_datasets_pixels():
    rgb = Image.new("RGB", (224, 160), (200, 100, 50))
    grey = to_medmnist(rgb, 28, 1, centre_crop=False)
    assert grey.shape == (28, 28, 1) and grey.dtype == np.uint8
    # ITU-R 601-2 luma of (200, 100, 50): 0.299*200 + 0.587*100 + 0.114*50 = 124.2
    assert np.all(np.abs(grey.astype(int) - 124) <= 1)
    colour = to_medmnist(Image.new("L", (31, 77), 90), 64, 3, centre_crop=True)
    assert colour.shape == (64, 64, 3) and np.all(colour == 90)
    rgba = Image.new("RGBA", (50, 50), (255, 255, 255, 0))  # fully transparent -> black
    assert np.all(to_medmnist(rgba, 28, 3, centre_crop=False) == 0)


def test_centre_crop_keeps_the_middle_square_only():
    image = Image.new("L", (300, 100), 0)
    image.paste(255, (100, 0, 200, 100))  # white middle square, black sides
    cropped = to_medmnist(image, 28, 1, centre_crop=True)
    squashed = to_medmnist(image, 28, 1, centre_crop=False)
    assert cropped.min() == 255
    assert squashed[:, 0].max() < 10 and squashed[:, 14].min() > 245


def test_crop_rule_follows_the_medmnist_descriptions():
    assert crops_centre(catalog.get_info("bloodmnist").description)
    assert crops_centre(catalog.get_info("retinamnist").description)
    assert not crops_centre(catalog.get_info("breastmnist").description)


def test_non_image_and_missing_files_are_refused_by_name(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not pixels")
    with pytest.raises(ImageFileError, match=r"notes\.png.*not an image.*PNG, JPEG, TIFF.*DICOM"):
        read_image(text)
    with pytest.raises(ImageFileError, match=r"No image file at .*nothere\.jpg"):
        read_image(tmp_path / "nothere.jpg")


@pytest.mark.parametrize("name", ["breastmnist", "retinamnist"])
def test_predict_photos_of_other_sizes_and_modes(tiny_run, tmp_path, name):
    from tlmed_keras.predict.sources import RunPredictor
    from tlmed_keras.serving.verify import keras_reference

    predictor = RunPredictor(tiny_run(name))
    paths = [
        _photo(tmp_path / "photo.png", (224, 224), "RGB", "PNG"),
        _photo(tmp_path / "scan.jpg", (97, 61), "L", "JPEG"),
        _photo(tmp_path / "pal.png", (40, 300), "P", "PNG"),
    ]
    results = predict_images([predictor], paths, k=2)
    spec = predictor.spec
    assert [r.original for r in results] == ["224x224 RGB", "97x61 L", "40x300 P"]
    size, _, channels = spec.image_shape
    crop = crops_centre(catalog.get_info(name).description)
    pixels = np.stack([to_medmnist(read_image(p), size, channels, crop) for p in paths])
    # predict prints calibrated probabilities: the reference divides by the same temperature
    temperature = predictor.temperature or 1.0
    expected = keras_reference(
        predictor.run.model, predictor.run.preprocess, pixels, spec, temperature=temperature
    )
    output = "probabilities" if predictor.temperature is None else "probabilities_calibrated"
    for result, probs in zip(results, expected[output], strict=True):
        assert len(result.top) == 2
        assert result.top[0].class_id == int(np.argmax(probs))
        assert result.top[0].label == spec.label_names[result.top[0].class_id]
        assert result.top[0].probability == pytest.approx(float(probs.max()), abs=1e-5)
        assert result.top[0].probability >= result.top[1].probability

    rows = list(csv.DictReader(io.StringIO(format_results(results, spec, "csv"))))
    assert len(rows) == 6 and rows[0]["image"].endswith("photo.png")
    assert rows[0]["label"] == results[0].top[0].label
    payload = json.loads(format_results(results, spec, "json"))
    assert payload["dataset"] == name and len(payload["images"]) == 3
    assert payload["images"][1]["top"][0]["class_id"] == results[1].top[0].class_id
    text = format_results(results, spec, "text")
    assert f"{name} ({spec.task})" in text and results[2].top[1].label in text


@pytest.mark.slow  # a fresh process: TensorFlow start-up and a model load (~20 s on 2 cores)
def test_cli_prints_top_classes(tiny_run, tmp_path):
    photo = _photo(tmp_path / "photo.jpg", (120, 90), "RGB", "JPEG")
    done = run_python(
        "-m", "tlmed_keras.predict", f"--workdir={tiny_run('breastmnist')}",
        "--output=json", "--top_k=2", str(photo), timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    labels = set(catalog.get_info("breastmnist").label_names)
    top = payload["images"][0]["top"]
    assert len(top) == 2 and {g["label"] for g in top} == labels


def _predict_cli(workdir, paths):
    """``python -m tlmed_keras.predict --workdir=WORKDIR PATHS`` in a fresh interpreter; its
    stdout ends with the exit status and whether TensorFlow / Keras were imported."""
    args = ", ".join(repr(str(p)) for p in paths)
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['predict', '--workdir={workdir}', {args}]\n"
        "try:\n"
        "    runpy.run_module('tlmed_keras.predict', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    print('EXIT', e)\n"
        "print('TF', 'tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    return run_python("-c", code, timeout=120)


def test_cli_refuses_a_non_image_before_tensorflow_loads(tmp_path):
    bad = tmp_path / "report.pdf"
    bad.write_bytes(b"%PDF-1.4 not an image")
    done = _predict_cli(tmp_path, [bad])
    # The one error layer (cli.run): the message on stderr, exit 2 (a bad value).
    assert "EXIT 2" in done.stdout, done.stderr
    assert done.stderr.startswith("tlmed_keras.predict: error:"), done.stderr
    assert "report.pdf" in done.stderr and "not an image" in done.stderr
    assert "TF False False" in done.stdout


@pytest.mark.slow  # exports a SavedModel first
def test_saved_model_predicts_like_the_run(tiny_run, tmp_path):
    from tlmed_keras.export import savedmodel
    from tlmed_keras.predict.sources import RunPredictor, SavedModelPredictor
    from tlmed_keras.runs.split import load_split

    run_predictor = RunPredictor(tiny_run("retinamnist"))
    run = run_predictor.run
    images, _ = load_split(run, "test")
    result = savedmodel.export_savedmodel(
        run.model, run.preprocess, run.info, tmp_path / "serving", images[:8],
        temperature=run_predictor.temperature,
    )  # fmt: skip
    exported = SavedModelPredictor(result.path)
    assert exported.calibration == run_predictor.calibration  # both calibrated, same T
    paths = [_photo(tmp_path / "fundus.jpg", (300, 200), "RGB", "JPEG")]
    from_run = predict_images([run_predictor], paths, k=5)[0]
    from_export = predict_images([exported], paths, k=5)[0]
    assert [g.class_id for g in from_export.top] == [g.class_id for g in from_run.top]
    for a, b in zip(from_export.top, from_run.top, strict=True):
        assert a.probability == pytest.approx(b.probability, abs=1e-4)


class _Fixed:
    """A stand-in predictor returning fixed probabilities (what an ensemble member gives)."""

    def __init__(self, spec, probs, source):
        self.spec, self.probs, self.source = spec, np.asarray(probs, np.float32), source

    def probabilities(self, images):
        return np.repeat(self.probs[None], len(images), axis=0)


def test_several_predictors_average_and_must_share_the_dataset():
    from tlmed_keras.predict.sources import mean_probabilities
    from tlmed_keras.serving.signature import serving_spec

    breast = serving_spec(catalog.get_info("breastmnist"))
    a, b = _Fixed(breast, [0.2, 0.8], "a"), _Fixed(breast, [0.6, 0.4], "b")
    np.testing.assert_allclose(
        mean_probabilities([a, b], np.zeros((3, 28, 28, 1))), [[0.4, 0.6]] * 3
    )
    retina = _Fixed(serving_spec(catalog.get_info("retinamnist")), [0.2] * 5, "r")
    with pytest.raises(
        ValueError, match=r"r predicts retinamnist at 28 px but a predicts breastmnist"
    ):
        mean_probabilities([a, retina], np.zeros((1, 28, 28, 1)))


def test_an_image_flat_only_after_resizing_is_refused_and_the_rest_kept(tmp_path):
    from tlmed_keras.predict.classify import prepare
    from tlmed_keras.predict.images import read_images
    from tlmed_keras.serving.signature import serving_spec

    faint = np.full((900, 900), 100, np.uint8)
    faint[450, 450] = 101  # one grey level in one pixel: gone at 28 px
    Image.fromarray(faint).save(tmp_path / "faint.png")
    photo = _photo(tmp_path / "photo.png", (64, 48), "RGB", "PNG")
    pairs, refusals = read_images([tmp_path / "faint.png", photo])
    assert len(pairs) == 2 and not refusals  # not flat as decoded
    prepared = prepare(serving_spec(catalog.get_info("breastmnist")), pairs)
    assert prepared.paths == [str(photo)] and prepared.pixels.shape == (1, 28, 28, 1)
    assert len(prepared.refusals) == 1 and "faint.png" in prepared.refusals[0]
    assert "flat value (100)" in prepared.refusals[0]


def test_cli_names_every_refused_file_before_tensorflow_loads(tmp_path):
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    (tmp_path / "scan.dcm").write_bytes(b"\0" * 200)
    done = _predict_cli(tmp_path, [tmp_path / "clear.png", tmp_path / "scan.dcm"])
    assert "EXIT 2" in done.stdout and "TF False False" in done.stdout, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 3, done.stderr
    assert lines[0].startswith("tlmed_keras.predict: refused:") and "clear.png" in lines[0]
    assert "flat value" in lines[0]
    assert "scan.dcm" in lines[1] and "not a DICOM file" in lines[1]
    assert lines[2].startswith("tlmed_keras.predict: error: none of the 2 images")


@pytest.mark.slow  # a fresh process: TensorFlow start-up and a model load (~20 s on 2 cores)
def test_cli_predicts_the_good_images_refuses_the_flat_and_warns_on_noise(
    tiny_run, tmp_path, medmnist_dir
):
    with np.load(medmnist_dir / "breastmnist.npz") as data:
        scan = Image.fromarray(data["test_images"][0]).resize((280, 280), Image.BICUBIC)
    photo = tmp_path / "scan.png"  # a real BreastMNIST test image, as a larger export
    scan.save(photo)
    Image.new("L", (1, 1), 128).save(tmp_path / "grey.png")
    noise = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png")
    paths = [str(photo), str(tmp_path / "grey.png"), str(tmp_path / "noise.png")]
    run = tiny_run("breastmnist")
    done = run_python(
        "-m", "tlmed_keras.predict", f"--workdir={run}", "--output=json", *paths, timeout=300
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    payload = json.loads(done.stdout)
    assert [i["image"] for i in payload["images"]] == [paths[0], paths[2]]
    said = [line for line in done.stderr.splitlines() if line.startswith("tlmed_keras.")]
    assert any("refused:" in line and "grey.png" in line for line in said), done.stderr
    warned = [line for line in said if "warning:" in line]
    assert len(warned) == 1 and "noise.png" in warned[0] and "texture" in warned[0]
    assert (run / "pixel_range.json").is_file()
