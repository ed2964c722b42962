"""Evaluate a finished run, or an ensemble of runs, on one split.

    python -m tlmed_keras.evaluate --workdir=RUN [--split=test] [--tta=MODE] [--data_dir=DIR]
    python -m tlmed_keras.evaluate --workdir=RUN_A,RUN_B,RUN_C   # or --workdir='runs/x/seed*'
    python -m tlmed_keras.evaluate --workdir=RUN_A --compare=RUN_B   # paired difference

Prints ACC / AUC (MedMNIST definitions, the code training uses) with their 95 % bootstrap
intervals over the split's images, calibration (ECE, Brier) before and after temperature
scaling, and per-class precision, recall, F1, support and AUC; writes ``RUN/eval/<split>/``
(report.json, summary.txt, confusion_matrix.png, roc_curves.png, reliability_diagram.png;
with ``--explain=K`` saliency_montage.png: the K most confident errors and correct images with
heatmaps of where the model looked, see docs/saliency.md). The temperature is read from the
run's calibration.json, or fitted on the validation split and stored there when missing
(docs/calibration.md). With several runs (a comma list and/or a quoted glob) it averages their
probabilities, prints each member's ACC / AUC and their mean +- sd beside the ensemble's, and
writes ``<common parent>/eval_ensemble/<split>/``. Members must share the dataset, its stored
size and label set (a mismatch is refused, naming it); backbones, model input sizes and
normalisations may differ (each member keeps its own preprocessing).

The test-time augmentation (TTA) is the run's own by default (its ``--tta`` in config.json),
so ``evaluate`` repeats the numbers the trainer printed; an ensemble uses its members' common
mode and refuses members trained with different ones. ``--tta`` overrides: ``flip`` averages
each model over the image and its horizontal mirror; ``shift`` and ``flip_shift`` add small
shifts (MODE: none, flip, shift, flip_shift; ``tlmed_keras.tta``). The summary names the TTA.
``--compare=B`` (a run or an ensemble) also prints ``--workdir`` minus B in ACC and AUC on the
same images with a paired bootstrap interval (compare.json).
"""

from __future__ import annotations

from absl import app, flags

from tlmed_keras import cli, runtime, tta
from tlmed_keras.runs.workdirs import finished_runs

flags.DEFINE_string(
    "workdir",
    None,
    "Run directory of a finished training run; several (comma list or glob): their ensemble "
    "(any backbones of one dataset).",
)
flags.DEFINE_string(
    "compare",
    None,
    "Another run or ensemble (same forms as --workdir): prints the paired difference "
    "--workdir minus --compare in ACC and AUC on the same images, with its 95 % interval.",
)
flags.DEFINE_enum("split", "test", ["train", "val", "test"], "Split to evaluate.")
flags.DEFINE_enum(
    "tta",
    None,
    list(tta.NAMES),
    tta.HELP + " Default: the TTA the run was trained with (config.json), so the numbers "
    "repeat the trainer's; for several runs their common one (runs that differ need --tta).",
)
flags.DEFINE_string("data_dir", None, "Folder of the npz files; default: the run's data_dir.")
flags.DEFINE_bool("download", None, "Download a missing data file; default: the run's setting.")
flags.DEFINE_integer("batch_size", 256, "Prediction batch size.")
flags.DEFINE_string(
    "out_dir",
    None,
    "Where the report goes; default: WORKDIR/eval/<split> (one run) or "
    "<common parent>/eval_ensemble/<split> (several); _tta-<mode> is appended with a TTA "
    "other than none.",
)
flags.DEFINE_integer(
    "explain",
    0,
    "K > 0: also write saliency_montage.png, the K most confident errors and the K most "
    "confident correct images with HiResCAM heatmaps of their predicted class.",
)
flags.DEFINE_enum("backend", "auto", list(runtime.BACKENDS), "Keras backend.")
flags.mark_flag_as_required("workdir")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    F = flags.FLAGS
    workdirs = finished_runs(F.workdir)  # before the backend: a bad path fails at once
    others = finished_runs(F.compare) if F.compare else None
    runtime.setup(F.backend)

    from tlmed_keras.evaluate import compare
    from tlmed_keras.evaluate.report import (
        EvalOptions,
        evaluate_ensemble,
        evaluate_run,
        evaluate_workdirs,
    )

    options = cli.options_from_flags(EvalOptions)
    if len(workdirs) == 1:
        report = evaluate_run(workdirs[0], F.split, options)
    else:
        report = evaluate_ensemble(workdirs, F.split, options)
    print(report.text)
    if others:
        other = evaluate_workdirs(others, F.split, options)
        comparison = compare.compare(report.evaluation, other, workdirs, others)
        report.files["compare"] = compare.write(comparison, report.out_dir)
        print()
        print(comparison.text())
    print()
    for name, path in report.files.items():
        print(f"{name:>17}: {path}")


if __name__ == "__main__":
    cli.run(main)
