"""EDA figures and index (issue #5), on the official BreastMNIST / RetinaMNIST files.

Needs ``../shared/data/medmnist/{breastmnist,retinamnist}.npz`` (fixture ``medmnist_dir``).
t-SNE runs on a small sample with few iterations: these tests check files and numbers, not
how good the embedding looks.
"""

from __future__ import annotations

import json
import pathlib
import re

import numpy as np
import pytest
from PIL import Image
from threadpoolctl import threadpool_limits

from tests.conftest import run_python
from tlmed_keras.data import catalog
from tlmed_keras.eda import style
from tlmed_keras.eda.classes import class_view, short_name
from tlmed_keras.eda.sampling import stratified_sample
from tlmed_keras.eda.write import EdaOptions, write_eda

FAST = EdaOptions(tsne_samples=90, tsne_perplexity=15, tsne_iterations=250, progress=False)
COMMON_FIGURES = {
    "class_counts.png",
    "pca_2d.png",
    "pca_3d.png",
    "tsne_2d.png",
    "tsne_3d.png",
    "mean_images.png",
    "intensity_histograms.png",
}


def _official(medmnist_dir: pathlib.Path, name: str, split: str = "train"):
    with np.load(medmnist_dir / f"{name}.npz", allow_pickle=False) as data:
        return data[f"{split}_images"], data[f"{split}_labels"]


@pytest.fixture(scope="module", params=["breastmnist", "retinamnist"])
def eda_run(request, tmp_path_factory):
    """The EDA of an official train split: (name, images, labels, output folder)."""
    from tests.conftest import SHARED

    name = request.param
    images, labels = _official(SHARED / "data" / "medmnist", name)
    out = tmp_path_factory.mktemp(f"eda_{name}")
    write_eda(images, labels, catalog.get_info(name), out, FAST)
    return name, images, labels, out


def _index_line(out: pathlib.Path, figure: str) -> str:
    lines = [ln for ln in (out / "index.md").read_text().splitlines() if f"]({figure})" in ln]
    assert len(lines) == 1, f"index.md should list {figure} once"
    return lines[0]


def test_every_figure_is_written_non_empty_at_the_fixed_pixel_size(eda_run):
    name, _, labels, out = eda_run
    info = catalog.get_info(name)
    pngs = {p.name for p in out.glob("*.png")}
    montages = {p for p in pngs if p.startswith("montage_")}
    assert pngs >= COMMON_FIGURES
    assert len(montages) == info.num_classes == len(np.unique(labels))
    assert pngs == COMMON_FIGURES | montages
    for png in pngs:
        path = out / png
        assert path.stat().st_size > 10_000, f"{png} looks empty"
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.size == style.PIXEL_SIZE, png
    linked = set(re.findall(r"\]\(([^)]+\.png)\)", (out / "index.md").read_text()))
    assert linked == pngs


def test_index_class_counts_and_imbalance_equal_numpy(eda_run):
    name, _, labels, out = eda_run
    counts = np.bincount(labels[:, 0], minlength=catalog.get_info(name).num_classes)
    line = _index_line(out, "class_counts.png")
    names = class_view(labels, catalog.get_info(name)).names
    reported = [int(re.search(rf"{re.escape(n)} (\d+)", line).group(1)) for n in names]
    assert reported == counts.tolist()
    ratio = float(re.search(r"imbalance ratio \(largest/smallest\) ([\d.]+)", line).group(1))
    assert ratio == pytest.approx(counts.max() / counts.min(), abs=0.005)
    numbers = json.loads((out / "eda.json").read_text())
    assert list(numbers["class_counts"].values()) == counts.tolist()


def test_index_explained_variance_equals_numpy_svd(eda_run):
    _, images, _, out = eda_run
    # The default PCA sample (10,000) covers these splits, so PCA sees every image.
    x = images.reshape(len(images), -1).astype(np.float64) / 255.0
    centred = x - x.mean(axis=0)
    # Squared singular values of the centred data = eigenvalues of its (smaller) Gram matrix.
    with threadpool_limits(1):  # 2 busy-waiting BLAS threads are 10x slower on a busy CPU
        eigenvalues = np.sort(np.linalg.eigvalsh(centred @ centred.T))[::-1]
    expected = eigenvalues / eigenvalues.sum()
    line = _index_line(out, "pca_2d.png")
    first10 = line.split("first 10:")[1]
    reported = [float(v) for v in re.findall(r"PC\d+ ([\d.]+)", first10)]
    assert len(reported) == 10
    np.testing.assert_allclose(reported, expected[:10], atol=6e-5)  # index rounds to 4 places
    numbers = json.loads((out / "eda.json").read_text())
    assert numbers["pca"]["sample_indices"] == list(range(len(images)))
    np.testing.assert_allclose(numbers["pca"]["explained_variance_ratio"], expected[:10], rtol=1e-3)
    line3d = _index_line(out, "pca_3d.png")
    together = float(re.search(r"together ([\d.]+)", line3d).group(1))
    assert together == pytest.approx(expected[:3].sum(), abs=2e-4)


def test_index_mean_intensity_equals_numpy(eda_run):
    name, images, labels, out = eda_run
    numbers = json.loads((out / "eda.json").read_text())
    names = class_view(labels, catalog.get_info(name)).names
    for k, class_name in enumerate(names):
        expected = images[labels[:, 0] == k].astype(np.float64).mean()
        assert numbers["mean_intensity"][class_name] == pytest.approx(expected, abs=0.006)


def test_tsne_sample_is_the_seeded_stratified_sample(eda_run):
    _, _, labels, out = eda_run
    numbers = json.loads((out / "eda.json").read_text())
    expected = stratified_sample(labels[:, 0], FAST.tsne_samples, FAST.seed).tolist()
    assert numbers["tsne_2d"]["sample_indices"] == expected
    assert numbers["tsne_3d"]["sample_indices"] == expected


def test_stratified_sample_is_seeded_and_proportional(medmnist_dir):
    _, labels = _official(medmnist_dir, "retinamnist")
    groups = labels[:, 0]
    first = stratified_sample(groups, 200, seed=3)
    assert np.array_equal(first, stratified_sample(groups, 200, seed=3))
    assert not np.array_equal(first, stratified_sample(groups, 200, seed=4))
    assert len(first) == len(np.unique(first)) == 200
    assert np.all(np.diff(first) > 0)
    taken = np.bincount(groups[first], minlength=5)
    share = np.bincount(groups, minlength=5) / len(groups) * 200
    assert np.all(np.abs(taken - share) < 1)
    assert np.array_equal(stratified_sample(groups, 10**6, seed=0), np.arange(len(groups)))


def test_stratified_sample_keeps_rare_classes():
    groups = np.array([0] * 990 + [1] * 9 + [2])
    sample = stratified_sample(groups, 20, seed=0)
    assert len(sample) == 20
    assert set(groups[sample]) == {0, 1, 2}
    with pytest.raises(ValueError, match="at least 1"):
        stratified_sample(groups, 0, seed=0)


def test_short_names_are_readable():
    blood = catalog.get_info("bloodmnist").label_names
    long_name = "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)"
    assert long_name in blood
    assert short_name(long_name) == "immature granulocytes"
    assert short_name("3", "ordinal-regression") == "grade 3"
    assert short_name("3", "multi-class") == "class 3"
    cut = short_name("a very long label name that goes on and on", max_chars=20)
    assert len(cut) <= 20 and cut.endswith("…") and cut.startswith("a very long")
    for name in catalog.dataset_names():
        info = catalog.get_info(name)
        names = [short_name(n, info.task) for n in info.label_names]
        assert len(set(names)) == len(names), (name, names)
        assert all(len(n) <= 24 for n in names), (name, names)


def test_multilabel_classes_are_labels_plus_no_finding():
    info = catalog.get_info("chestmnist")
    labels = np.zeros((4, info.num_classes), np.uint8)
    labels[0, [2, 5]] = 1
    labels[1, 5] = 1
    labels[3, 0] = 1
    view = class_view(labels, info)
    assert view.names[-1] == "no finding"
    assert view.counts.tolist() == [*labels.sum(axis=0).tolist(), 1]
    assert view.colour_names == view.names
    # Colour: the first positive label, or "no finding" (index 14).
    assert view.colour.tolist() == [2, 5, 14, 0]


def test_multilabel_eda_writes_every_figure(make_npz, tmp_path):
    info = catalog.get_info("chestmnist")
    with np.load(make_npz("chestmnist", n={"train": 60, "val": 4, "test": 4})) as data:
        images, labels = data["train_images"], data["train_labels"]
    options = EdaOptions(tsne_samples=40, tsne_perplexity=5, tsne_iterations=250, progress=False)
    index = write_eda(images, labels, info, tmp_path, options)
    assert len(list(tmp_path.glob("montage_*.png"))) == info.num_classes + 1
    assert "no finding" in index.read_text()
    counts = json.loads((tmp_path / "eda.json").read_text())["class_counts"]
    assert list(counts.values())[:-1] == labels.sum(axis=0).tolist()
    assert counts["no finding"] == int((labels.sum(axis=1) == 0).sum())


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda im, lb: (im, lb + 2), "label value 2 is out of range"),
        (lambda im, lb: (im[:, :27], lb), r"shape \(28, 28\)"),
        (lambda im, lb: (im.astype(np.float32), lb), "must be uint8"),
        (lambda im, lb: (im[:5], lb), "5 images but 10 labels"),
        (lambda im, lb: (im, np.zeros((10, 2), np.uint8)), r"shape \[N, 1\]"),
    ],
)
def test_bad_input_gives_a_specific_error(change, message, tmp_path):
    images = np.zeros((10, 28, 28), np.uint8)
    labels = np.zeros((10, 1), np.uint8)
    images, labels = change(images, labels)
    with pytest.raises(ValueError, match=message):
        write_eda(images, labels, catalog.get_info("breastmnist"), tmp_path, FAST)


def test_tsne_sample_smaller_than_perplexity_is_refused(medmnist_dir, tmp_path):
    images, labels = _official(medmnist_dir, "breastmnist", "val")
    options = EdaOptions(tsne_samples=10, tsne_perplexity=30, progress=False)
    with pytest.raises(ValueError, match="--tsne_samples"):
        write_eda(images, labels, catalog.get_info("breastmnist"), tmp_path, options)


def test_cli_writes_the_figures_without_importing_keras(medmnist_dir, tmp_path):
    out = tmp_path / "eda"
    args = [
        "--data=breastmnist",
        f"--data_dir={medmnist_dir}",
        "--download=false",
        "--split=val",
        f"--out={out}",
        "--tsne_samples=60",
        "--tsne_perplexity=10",
        "--tsne_iterations=250",
    ]
    result = run_python("-X", "importtime", "-m", "tlmed_keras.eda", *args, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    assert not {"keras", "tensorflow", "jax"} & imported
    assert "val, 28px, 78 images" in (out / "index.md").read_text()
    assert {p.name for p in out.glob("*.png")} >= COMMON_FIGURES


def test_cli_unknown_dataset_is_a_clear_error(tmp_path):
    result = run_python("-m", "tlmed_keras.eda", "--data=nosuchmnist", f"--out={tmp_path}")
    assert result.returncode != 0
    assert "Unknown MedMNIST dataset 'nosuchmnist'" in result.stderr


def test_ordinal_grades_get_an_ordered_colour_ramp():
    retina = catalog.get_info("retinamnist")
    view = class_view(np.arange(5)[:, None], retina)
    assert (
        view.ordered
        and not class_view(np.zeros((3, 1), int), catalog.get_info("bloodmnist")).ordered
    )
    ramp = np.array(style.colours(5, view.ordered))[:, :3]
    luminance = ramp @ np.array([0.299, 0.587, 0.114])
    assert np.all(np.diff(luminance) < 0)  # grade 0 lightest, grade 4 darkest


def test_eda_out_defaults_to_a_named_folder():
    from tlmed_keras.eda.__main__ import default_out

    assert default_out("BloodMNIST", 64, "train") == "eda/bloodmnist_64"
    assert default_out("bloodmnist", 28, "test") == "eda/bloodmnist_28_test"
