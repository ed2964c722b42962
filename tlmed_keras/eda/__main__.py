"""Exploratory figures of one MedMNIST 2D split, with an index of what they show.

    python -m tlmed_keras.eda --data=bloodmnist            # writes eda/bloodmnist_28/
    python -m tlmed_keras.eda --data=breastmnist --data_dir=../shared/data/medmnist --out=/tmp/b

Writes class counts, PCA and t-SNE scatter plots (2D and 3D), the mean image, pixel-intensity
histograms and a montage of each class, plus ``index.md`` (one line per figure, with the
numbers behind it) and ``eda.json`` (the same numbers). See ``tlmed_keras.eda``.
Uses numpy, scikit-learn and matplotlib only: no Keras or TensorFlow is imported.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from tlmed_keras import cli

flags.DEFINE_string("data", None, "MedMNIST 2D dataset name, e.g. bloodmnist.", required=True)
flags.DEFINE_string(
    "out", None, "Output folder for the PNGs, index.md and eda.json; default: eda/<data>_<size>."
)
flags.DEFINE_enum("split", "train", ["train", "val", "test"], "Split to describe.")
flags.DEFINE_integer("size", 28, "Image size of the MedMNIST file (28, 64, 128 or 224).")
flags.DEFINE_string("data_dir", None, "Folder with the npz; default: medmnist's cache.")
flags.DEFINE_bool(
    "download", False, "Download the file (MD5 verified) when it is not found; off by default."
)
flags.DEFINE_integer("pca_samples", 10_000, "Images PCA is fitted on (seeded, stratified).")
flags.DEFINE_integer("tsne_samples", 2_000, "Images t-SNE embeds (seeded, stratified).")
flags.DEFINE_float("tsne_perplexity", 30.0, "t-SNE perplexity (below --tsne_samples).")
flags.DEFINE_integer("tsne_iterations", 1000, "t-SNE optimisation steps (at least 250).")
flags.DEFINE_integer(
    "threads", 1, "BLAS/OpenMP threads (0 = every core); 1 is fastest on busy shared CPUs."
)
flags.DEFINE_integer("seed", 0, "Seed of the samples, PCA, t-SNE and montages.")
FLAGS = flags.FLAGS


def _fail(error: Exception) -> None:
    sys.exit(f"tlmed_keras.eda: error: {error}")


def default_out(data: str, size: int, split: str) -> str:
    """``eda/<data>_<size>`` (``_<split>`` added for val/test): beside ``runs/``, git-ignored."""
    name = f"{data.lower()}_{size}" + ("" if split == "train" else f"_{split}")
    return os.path.join("eda", name)


def _load_split():
    """The (images, labels, info) of the flagged split; exits with the reason on failure."""
    from tlmed_keras.data import load_arrays

    try:
        splits = load_arrays(FLAGS.data, FLAGS.size, FLAGS.data_dir, FLAGS.download)
    except (ValueError, OSError) as e:
        _fail(e)
    images, labels = splits[FLAGS.split]
    return images, labels, splits.info


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    images, labels, info = _load_split()
    # Imported after loading, so a bad name or path fails before matplotlib and sklearn load.
    from tlmed_keras.eda.write import EdaOptions, write_eda

    options = cli.options_from_flags(EdaOptions, threads=FLAGS.threads or None)
    out = FLAGS.out or default_out(FLAGS.data, FLAGS.size, FLAGS.split)
    print(f"Writing the {FLAGS.split} split's figures to {out}/")
    try:
        index = write_eda(images, labels, info, out, options)
    except (ValueError, OSError) as e:
        _fail(e)
    print(f"Wrote {index}")


if __name__ == "__main__":
    cli.run(main)
