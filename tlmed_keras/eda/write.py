"""Draws every EDA figure of one split and writes ``index.md`` and ``eda.json`` beside them.

``index.md`` lists each figure with one line of what it shows and the numbers behind it;
``eda.json`` holds the same numbers for programs (tests compare them with numpy/sklearn).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from tlmed_keras.data.catalog import DatasetInfo
from tlmed_keras.eda import embedding
from tlmed_keras.eda import images as image_figs
from tlmed_keras.eda.classes import NO_FINDING, ClassView, class_view
from tlmed_keras.eda.sampling import stratified_sample


@dataclasses.dataclass(frozen=True)
class EdaOptions:
    """Knobs of one EDA run (the CLI flags of the same names)."""

    split: str = "train"
    pca_samples: int = 10_000
    tsne_samples: int = 2_000
    tsne_perplexity: float = 30.0
    tsne_iterations: int = 1000
    # BLAS and OpenMP threads (None: every core). One by default: on a busy 2-core machine
    # their busy-waiting made 3D t-SNE of 300 points 10x slower (87 s vs 8.8 s with one
    # thread) and the eigenvalues of a 1080 x 1080 matrix 10x slower (6 s vs 0.6 s).
    threads: int | None = 1
    seed: int = 0
    progress: bool = True


@dataclasses.dataclass
class Figure:
    """One written figure: its file name (relative to the output folder) and index line."""

    file: str
    line: str


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "class"


def validate_images(images: np.ndarray, labels: np.ndarray, info: DatasetInfo) -> None:
    """Checks that ``images`` are uint8 of ``info``'s image shape, one per label.

    Raises:
        ValueError: naming the expected and the actual shape or dtype.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"{info.name} images must be uint8 (raw MedMNIST); got {images.dtype}.")
    if images.shape[1:] != info.image_shape:
        raise ValueError(
            f"{info.name} at size {info.size} has images of shape {info.image_shape}; got "
            f"{images.shape[1:]}. Is --size right for this file?"
        )
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels; they must match.")


def _class_definition(info: DatasetInfo) -> str:
    if not info.is_multilabel:
        return f"Each image has one class ({info.task}); class names are shortened for legends."
    return (
        "Multi-label: counts, mean images, histograms and montages use one group per label "
        f'(images positive for it) plus "{NO_FINDING}" (no positive label); groups overlap. '
        f'Scatter plots colour each image by "{NO_FINDING}" or its first positive label '
        "in catalog order (a partition, so each point has one colour)."
    )


def _counts_text(view: ClassView) -> str:
    return ", ".join(f"{n} {c}" for n, c in zip(view.names, view.counts, strict=True))


def _ratio_text(ratios: np.ndarray) -> str:
    return ", ".join(f"PC{i + 1} {r:.4f}" for i, r in enumerate(ratios))


class _Writer:
    """Draws figures into ``out`` and collects their index lines and numbers."""

    def __init__(self, images, view, info, out, options):
        self.images, self.view, self.info, self.out = images, view, info, out
        self.options = options
        self.figures: list[Figure] = []
        self.numbers: dict = {}
        self.where = f"{info.name} ({options.split}, {info.size}px)"
        self.heading = f"{info.name} ({options.split}, {info.size}px, {len(images)} images)"

    def counts(self) -> None:
        path = image_figs.class_counts(
            self.view, f"Class counts: {self.heading}", self.out / "class_counts.png"
        )
        ratio = self.view.imbalance_ratio
        counts = self.view.counts.tolist()
        self.numbers["class_counts"] = dict(zip(self.view.names, counts, strict=True))
        # An empty class makes the ratio infinite, which strict JSON cannot hold.
        self.numbers["imbalance_ratio"] = ratio if np.isfinite(ratio) else None
        self._add(
            path,
            f"images per class: {_counts_text(self.view)}; "
            f"imbalance ratio (largest/smallest) {ratio:.2f}",
        )

    def pca(self) -> None:
        opts = self.options
        sample = stratified_sample(self.view.colour, opts.pca_samples, opts.seed)
        proj = embedding.pca(self.images, sample, opts.seed)
        ratio = proj.explained_variance_ratio
        self.numbers["pca"] = {
            "sample_indices": sample.tolist(),
            "explained_variance_ratio": ratio.tolist(),
        }
        what = f"on {self._sample_text(sample)}"
        for dims in (2, 3):
            title = f"PCA {dims}D: {self.where}\nfitted {what}"
            path = embedding.scatter(proj, self.view, dims, title, self.out / f"pca_{dims}d.png")
            shown = ratio[:dims]
            self._add(
                path,
                f"first {dims} principal components {what}, coloured by class; "
                f"explained variance ratio {_ratio_text(shown)} "
                f"(together {shown.sum():.4f}); first {len(ratio)}: "
                f"{_ratio_text(ratio)}",
            )

    def tsne(self, dims: int) -> None:
        opts = self.options
        sample = stratified_sample(self.view.colour, opts.tsne_samples, opts.seed)
        proj = embedding.tsne(
            self.images,
            sample,
            dims,
            opts.seed,
            opts.tsne_perplexity,
            opts.tsne_iterations,
        )
        self.numbers[f"tsne_{dims}d"] = {"sample_indices": sample.tolist()}
        what = f"{self._sample_text(sample)}, perplexity {opts.tsne_perplexity:g}"
        path = embedding.scatter(
            proj,
            self.view,
            dims,
            f"t-SNE {dims}D: {self.where}\n{what}",
            self.out / f"tsne_{dims}d.png",
        )
        self._add(
            path,
            f"t-SNE into {dims} dimensions of {what} after PCA to "
            f"{embedding.TSNE_PCA_DIMS} components, coloured by class",
        )

    def means(self) -> None:
        means = image_figs.mean_images(self.images, self.view)
        path = image_figs.mean_image_figure(
            means, self.view, f"Mean image per class: {self.heading}", self.out / "mean_images.png"
        )
        # An empty class (possible in small splits) has no mean: None in JSON, "n/a" in text.
        overall = {
            n: None if np.isnan(m).all() else round(float(m.mean()), 2)
            for n, m in zip(self.view.names, means, strict=True)
        }
        self.numbers["mean_intensity"] = overall
        text = ", ".join(f"{n} {'n/a' if v is None else f'{v:.1f}'}" for n, v in overall.items())
        self._add(path, f"pixel-wise mean image of each class; mean intensity (0-255): {text}")

    def histograms(self) -> None:
        hist = image_figs.intensity_histograms(self.images, self.view)
        per = "per channel (R, G, B), " if hist.shape[1] > 1 else ""
        path = image_figs.histogram_figure(
            hist,
            self.view,
            f"Pixel intensity {per}per class: {self.heading}",
            self.out / "intensity_histograms.png",
        )
        self._add(path, f"normalised 256-bin pixel-intensity histograms {per}one line per class")

    def montages(self) -> None:
        for k, name in enumerate(self.view.names):
            chosen = image_figs.montage_indices(self.view, k, self.options.seed)
            file = f"montage_{k:02d}_{_slug(name)}.png"
            full = self.view.full_names[k]
            # The full name as a second line only when the short one hides it ("grade 0" shows
            # the "0" already; "immature gran." does not show "immature granulocytes").
            detail = f"\n{full}" if full not in name else ""
            count = f"{self.view.counts[k]} of {len(self.images)} images"
            title = f"Examples of {name}: {self.where}, {count}{detail}"
            path = image_figs.montage_figure(self.images, chosen, title, self.out / file)
            self._add(
                path,
                f"{len(chosen)} random examples of class {name!r} ({self.view.counts[k]} images)",
            )

    def _sample_text(self, sample: np.ndarray) -> str:
        if len(sample) == len(self.images):
            return f"all {len(sample)} images"
        return f"{len(sample)} images (seeded stratified sample, seed {self.options.seed})"

    def _add(self, path: pathlib.Path, line: str) -> None:
        self.figures.append(Figure(path.name, line))


def _steps(writer: _Writer) -> list[tuple[str, callable]]:
    return [
        ("class counts", writer.counts),
        ("PCA", writer.pca),
        ("t-SNE 2D", lambda: writer.tsne(2)),
        ("t-SNE 3D", lambda: writer.tsne(3)),
        ("mean images", writer.means),
        ("histograms", writer.histograms),
        ("montages", writer.montages),
    ]


def write_eda(
    images: np.ndarray,
    labels: np.ndarray,
    info: DatasetInfo,
    out_dir: str | pathlib.Path,
    options: EdaOptions | None = None,
) -> pathlib.Path:
    """Draws every EDA figure of one split into ``out_dir`` and writes its index.

    Args:
        images: uint8 [N, H, W] or [N, H, W, C], as in the MedMNIST npz.
        labels: [N, 1] (or [N]) class indices, or [N, L] 0/1 for multi-label sets.
        info: the catalog entry of the dataset at its size.
        out_dir: folder for the PNGs, ``index.md`` and ``eda.json`` (created if missing).
        options: sample sizes, seed, progress bar (defaults: ``EdaOptions()``).

    Returns:
        The path of ``index.md``.

    Raises:
        ValueError: images or labels that do not fit ``info`` (shape, dtype, values).
    """
    options = options or EdaOptions()
    view = class_view(labels, info)
    validate_images(images, labels, info)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    writer = _Writer(np.asarray(images), view, info, out, options)
    steps = _steps(writer)
    progress = tqdm(steps, desc=f"EDA {info.name}", unit="step", disable=not options.progress)
    with progress as bar, threadpool_limits(options.threads):
        for name, step in bar:
            bar.set_postfix_str(name)
            step()
    return _write_index(writer)


def _write_index(writer: _Writer) -> pathlib.Path:
    info, opts = writer.info, writer.options
    numbers = {
        "dataset": info.name,
        "split": opts.split,
        "size": info.size,
        "num_images": len(writer.images),
        "task": info.task,
        "class_names": dict(zip(writer.view.names, writer.view.full_names, strict=True)),
        "options": dataclasses.asdict(opts),
        **writer.numbers,
    }
    (writer.out / "eda.json").write_text(json.dumps(numbers, indent=1) + "\n")
    lines = [
        f"# EDA: {writer.heading}",
        "",
        f"Task: {info.task}. {_class_definition(info)}",
        f"Sampling: PCA is fitted on up to {opts.pca_samples} images (randomized SVD) and "
        f"t-SNE embeds up to {opts.tsne_samples} (after PCA to {embedding.TSNE_PCA_DIMS} "
        f"components), each a sample stratified by class with seed {opts.seed}; the PCA "
        "numbers below come from that sample.",
        "",
        "## Figures",
        "",
    ]
    lines += [f"- [{f.file}]({f.file}): {f.line}" for f in writer.figures]
    lines += ["", "## Class names", ""]
    lines += [
        f"- {s}: {full}" for s, full in zip(writer.view.names, writer.view.full_names, strict=True)
    ]
    path = writer.out / "index.md"
    path.write_text("\n".join(lines) + "\n")
    return path
