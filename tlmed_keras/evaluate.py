"""Evaluate a finished run on one split.

    python -m tlmed_keras.evaluate --workdir=RUN [--split=test] [--data_dir=DIR]

Prints ACC / AUC (MedMNIST definitions, the code training uses) and per-class precision,
recall, F1, support and AUC; writes ``RUN/eval/<split>/`` (report.json, summary.txt,
confusion_matrix.png, roc_curves.png).
"""

from __future__ import annotations

from absl import app, flags

from tlmed_keras import cli, runtime

flags.DEFINE_string("workdir", None, "Run directory of a finished training run.")
flags.DEFINE_enum("split", "test", ["train", "val", "test"], "Split to evaluate.")
flags.DEFINE_string("data_dir", None, "Folder of the npz files; default: the run's data_dir.")
flags.DEFINE_bool("download", None, "Download a missing data file; default: the run's setting.")
flags.DEFINE_integer("batch_size", 256, "Prediction batch size.")
flags.DEFINE_string("out_dir", None, "Where the report goes; default: WORKDIR/eval/<split>.")
flags.DEFINE_enum("backend", "auto", list(runtime.BACKENDS), "Keras backend.")
flags.mark_flag_as_required("workdir")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    F = flags.FLAGS
    runtime.setup(F.backend)

    from tlmed_keras.reporting.report import evaluate_run

    report = evaluate_run(
        F.workdir,
        F.split,
        data_dir=F.data_dir,
        download=F.download,
        batch_size=F.batch_size,
        out_dir=F.out_dir,
    )
    print(report.text)
    print()
    for name, path in report.files.items():
        print(f"{name:>17}: {path}")


if __name__ == "__main__":
    cli.run(main)
