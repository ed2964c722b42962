"""Classify your own image files with a trained run or an exported SavedModel.

    python -m tlmed_keras.predict --workdir=RUN scan1.png scan2.jpg
    python -m tlmed_keras.predict --saved_model=serving/bloodmnist/1 --output=csv cell.png

Any PNG, JPEG or TIFF (8-bit, or 16/32-bit grey scaled by the image's own range), any size,
RGB or grey, or a single-frame DICOM (its LUTs and window applied): each file is brought to
the dataset's channels and stored size the way MedMNIST made its images (a centre square crop
for the datasets whose medmnist.INFO description says "center-crop", bicubic resize, grey as
ITU-R 601-2 luma; see ``tlmed_keras.predict.images``), then the model's own preprocessing runs
as in training. Prints the top ``--top_k`` classes with label names and probabilities per
image: calibrated probabilities (the logits divided by the run's temperature, fitted on the
validation split; see docs/calibration.md), or the model's raw ones with ``--raw``. A file
that cannot give a meaningful answer (not an image, a decompression bomb, a flat image, a
multi-frame DICOM) is refused with one line on stderr while the others are still predicted
(exit status 2); an image unlike the training images gets a warning line
(``tlmed_keras.predict.familiar``). See docs/predict.md.

    python -m tlmed_keras.predict --workdir=RUN --explain [--explain_dir=DIR] scan1.png

``--explain`` also writes, per image, ``DIR/<name>_saliency.png``: the image as the model saw
it, a HiResCAM heatmap of where the model looked for its top class, and the two overlaid
(docs/saliency.md). The written paths go to stderr, so stdout stays the chosen --output.
"""

from __future__ import annotations

import sys

from absl import app, flags

from tlmed_keras import cli, runtime
from tlmed_keras.errors import EXIT_USAGE
from tlmed_keras.predict.output import FORMATS

PROG = "tlmed_keras.predict"

flags.DEFINE_string("workdir", None, "Run directory of a finished training run.")
flags.DEFINE_string(
    "saved_model", None, "Exported version folder EXPORT_DIR/<name>/<version>/ (export's output)."
)
flags.DEFINE_integer("top_k", 3, "Classes listed per image (most probable first).")
flags.DEFINE_enum("output", "text", list(FORMATS), "text (readable), csv or json.")
flags.DEFINE_integer("batch_size", 64, "Images per prediction batch.")
flags.DEFINE_bool(
    "raw",
    False,
    "Print the model's raw probabilities instead of the temperature-calibrated ones.",
)
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
        return [RunPredictor(workdir, FLAGS.batch_size, raw=FLAGS.raw)]
    return [SavedModelPredictor(saved_model, FLAGS.batch_size, raw=FLAGS.raw)]


def predict(paths: list[str], say=None) -> tuple[str, int]:
    """The formatted predictions of ``paths`` under the parsed flags, and the exit status.

    Images that cannot be used are refused with one line each and the others still predicted
    (status 2 then); an image unlike the training images gets a warning line. Both go to
    ``say`` (default: stderr), so stdout keeps the text, CSV or JSON alone.

    Raises:
        app.UsageError: no image, or not exactly one model source.
        ImageFileError: every image was refused (file errors before TensorFlow starts).
        FileNotFoundError: no finished run / no export at the given path.
    """
    from tlmed_keras.predict.classify import classify, prepare
    from tlmed_keras.predict.images import read_images
    from tlmed_keras.predict.output import format_results

    say = say or _to_stderr
    if not paths:
        raise app.UsageError("Pass one or more image files after the flags.")
    if FLAGS.top_k < 1:
        raise app.UsageError(f"Bad --top_k={FLAGS.top_k}: must be >= 1.")
    if FLAGS.explain and FLAGS.saved_model:
        raise app.UsageError(
            "--explain needs --workdir=RUN: an exported SavedModel keeps no feature layers to "
            "take heatmaps at. Pass the run directory it was exported from."
        )
    pairs, refusals = read_images(paths)  # fail fast, before TensorFlow loads
    _give_up_if_none_left(pairs, refusals, say)
    runtime.setup(FLAGS.backend if FLAGS.workdir else "tensorflow")
    from tlmed_keras.predict.sources import common_spec  # Keras: after runtime.setup

    predictors = _predictors(FLAGS.workdir, FLAGS.saved_model)
    spec = common_spec(predictors)
    prepared = prepare(spec, pairs)  # images flat once at the model's size are refused here
    refusals += prepared.refusals
    _give_up_if_none_left(prepared.paths, refusals, say)
    for line in [*(f"refused: {r}" for r in refusals), *_warnings(predictors, prepared)]:
        say(line)
    results = classify(predictors, prepared, FLAGS.top_k)
    if FLAGS.explain:
        from tlmed_keras.predict.explain import write_explanations

        for path in write_explanations(predictors, prepared.images, results, FLAGS.explain_dir):
            say(f"explanation: {path}")
    text = format_results(results, spec, FLAGS.output, calibration=predictors[0].calibration)
    return text, (EXIT_USAGE if refusals else 0)


def _give_up_if_none_left(kept: list, refusals: list[str], say) -> None:
    """Raises the one refusal when it was the only image, or a summary after naming each."""
    from tlmed_keras.predict.images import ImageFileError

    if kept:
        return
    if len(refusals) == 1:
        raise ImageFileError(refusals[0])
    for line in refusals:
        say(f"refused: {line}")
    raise ImageFileError(
        f"none of the {len(refusals)} images could be used (each is named above): fix or "
        "replace those files and run again."
    )


def _warnings(predictors: list, prepared) -> list[str]:
    """A line per image unlike the training images (pixels only: independent of how the
    probabilities are computed), or one note that the comparison could not be made."""
    from tlmed_keras.predict.familiar import outside, training_range, warning_line

    known, note = training_range(predictors)
    if known is None:
        return [note]
    reasons = [
        (path, outside(known, pixels))
        for path, pixels in zip(prepared.paths, prepared.pixels, strict=True)
    ]
    return [warning_line(path, reason, known) for path, reason in reasons if reason]


def _to_stderr(line: str) -> None:
    print(f"{PROG}: {line}", file=sys.stderr)


def main(argv: list[str]) -> None:
    # Errors (a non-image file, a missing run, a model of another dataset) reach the user as
    # one line through cli.run.
    text, status = predict(argv[1:])
    print(text)
    if status:
        sys.stdout.flush()
        sys.exit(status)


if __name__ == "__main__":
    cli.run(main)
