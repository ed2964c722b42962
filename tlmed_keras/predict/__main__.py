"""Classify your own image files with a trained run or an exported SavedModel.

    python -m tlmed_keras.predict --workdir=RUN scan1.png scan2.jpg
    python -m tlmed_keras.predict --saved_model=serving/bloodmnist/1 --output=csv cell.png

Any PNG/JPEG, any size, RGB or grey: each file is brought to the dataset's channels and
stored size the way MedMNIST made its images (a centre square crop for the datasets whose
medmnist.INFO description says "center-crop", bicubic resize, grey as ITU-R 601-2 luma; see
``tlmed_keras.predict.images``), then the model's own preprocessing runs as in training.
Prints the top ``--top_k`` classes with label names and probabilities per image.

    python -m tlmed_keras.predict --workdir=RUN --explain [--explain_dir=DIR] scan1.png

``--explain`` also writes, per image, ``DIR/<name>_saliency.png``: the image as the model saw
it, a HiResCAM heatmap of where the model looked for its top class, and the two overlaid
(docs/saliency.md). The written paths go to stderr, so stdout stays the chosen --output.
"""

from __future__ import annotations

import sys

from absl import app, flags

from tlmed_keras import cli, runtime
from tlmed_keras.predict.output import FORMATS

flags.DEFINE_string("workdir", None, "Run directory of a finished training run.")
flags.DEFINE_string(
    "saved_model", None, "Exported version folder EXPORT_DIR/<name>/<version>/ (export's output)."
)
flags.DEFINE_integer("top_k", 3, "Classes listed per image (most probable first).")
flags.DEFINE_enum("output", "text", list(FORMATS), "text (readable), csv or json.")
flags.DEFINE_integer("batch_size", 64, "Images per prediction batch.")
flags.DEFINE_enum("backend", "auto", list(runtime.BACKENDS), "Keras backend (--workdir only).")
flags.DEFINE_bool(
    "explain",
    False,
    "Also write per image a PNG: the image, the heatmap of where the model looked for its top "
    "class (HiResCAM), and the overlay (--workdir only).",
)
flags.DEFINE_string("explain_dir", "explanations", "Folder for the --explain PNGs (created).")
FLAGS = flags.FLAGS


def _predictors(workdir: str | None, saved_model: str | None) -> list:
    """One predictor today; a list so that an ensemble of runs can be passed later."""
    from tlmed_keras.predict.sources import RunPredictor, SavedModelPredictor

    if bool(workdir) == bool(saved_model):
        raise app.UsageError("Pass exactly one of --workdir=RUN or --saved_model=DIR.")
    if workdir:
        return [RunPredictor(workdir, FLAGS.batch_size)]
    return [SavedModelPredictor(saved_model, FLAGS.batch_size)]


def predict(paths: list[str]) -> str:
    """The formatted predictions of ``paths`` under the parsed flags.

    Raises:
        app.UsageError: no image, or not exactly one model source.
        ImageFileError: a missing or undecodable image (checked before TensorFlow starts).
        FileNotFoundError: no finished run / no export at the given path.
    """
    from tlmed_keras.predict.classify import predict_images
    from tlmed_keras.predict.images import read_image
    from tlmed_keras.predict.output import format_results

    if not paths:
        raise app.UsageError("Pass one or more image files after the flags.")
    if FLAGS.top_k < 1:
        raise app.UsageError(f"Bad --top_k={FLAGS.top_k}: must be >= 1.")
    if FLAGS.explain and FLAGS.saved_model:
        raise app.UsageError(
            "--explain needs --workdir=RUN: an exported SavedModel keeps no feature layers to "
            "take heatmaps at. Pass the run directory it was exported from."
        )
    images = [read_image(path) for path in paths]  # fail fast, before TensorFlow loads
    runtime.setup(FLAGS.backend if FLAGS.workdir else "tensorflow")
    predictors = _predictors(FLAGS.workdir, FLAGS.saved_model)
    results = predict_images(predictors, paths, FLAGS.top_k, images=images)
    if FLAGS.explain:
        from tlmed_keras.predict.explain import write_explanations

        for path in write_explanations(predictors, images, results, FLAGS.explain_dir):
            print(f"explanation: {path}", file=sys.stderr)
    return format_results(results, predictors[0].spec, FLAGS.output)


def main(argv: list[str]) -> None:
    # Errors (a non-image file, a missing run, a model of another dataset) reach the user as
    # one line through cli.run.
    print(predict(argv[1:]))


if __name__ == "__main__":
    cli.run(main)
