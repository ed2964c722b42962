"""Evaluate a finished run, or an ensemble of runs, on one split.

    python -m tlmed_keras.evaluate --workdir=RUN [--split=test] [--tta=MODE] [--data_dir=DIR]
    python -m tlmed_keras.evaluate --workdir=RUN_A,RUN_B,RUN_C   # or --workdir='runs/x/seed*'

Prints ACC / AUC (MedMNIST definitions, the code training uses) and per-class precision,
recall, F1, support and AUC; writes ``RUN/eval/<split>/`` (report.json, summary.txt,
confusion_matrix.png, roc_curves.png). With several runs (a comma list and/or a quoted glob)
it averages their probabilities, prints each member's ACC / AUC and their mean +- sd beside
the ensemble's, and writes ``<common parent>/eval_ensemble/<split>/``. Members must share
the dataset, its stored size and label set (a mismatch is refused, naming it); backbones,
model input sizes and normalisations may differ (each member keeps its own preprocessing).
``--tta=flip`` averages each model over the image and its horizontal mirror; ``shift`` and
``flip_shift`` add small shifts (MODE: none, flip, shift, flip_shift; ``tlmed_keras.tta``).
"""

from __future__ import annotations

from absl import app, flags

from tlmed_keras import cli, runtime, tta

flags.DEFINE_string(
    "workdir",
    None,
    "Run directory of a finished training run; several (comma list or glob): their ensemble "
    "(any backbones of one dataset).",
)
flags.DEFINE_enum("split", "test", ["train", "val", "test"], "Split to evaluate.")
flags.DEFINE_enum("tta", "none", list(tta.NAMES), tta.HELP)
flags.DEFINE_string("data_dir", None, "Folder of the npz files; default: the run's data_dir.")
flags.DEFINE_bool("download", None, "Download a missing data file; default: the run's setting.")
flags.DEFINE_integer("batch_size", 256, "Prediction batch size.")
flags.DEFINE_string(
    "out_dir",
    None,
    "Where the report goes; default: WORKDIR/eval/<split> (one run) or "
    "<common parent>/eval_ensemble/<split> (several); _tta-<mode> is appended with a --tta "
    "other than none.",
)
flags.DEFINE_enum("backend", "auto", list(runtime.BACKENDS), "Keras backend.")
flags.mark_flag_as_required("workdir")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    F = flags.FLAGS
    workdirs = cli.finished_runs(F.workdir)  # before the backend: a bad path fails at once
    runtime.setup(F.backend)

    from tlmed_keras.evaluate.report import EvalOptions, evaluate_ensemble, evaluate_run

    options = cli.options_from_flags(EvalOptions)
    if len(workdirs) == 1:
        report = evaluate_run(workdirs[0], F.split, options)
    else:
        report = evaluate_ensemble(workdirs, F.split, options)
    print(report.text)
    print()
    for name, path in report.files.items():
        print(f"{name:>17}: {path}")


if __name__ == "__main__":
    cli.run(main)
