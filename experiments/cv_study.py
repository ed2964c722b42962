"""Cross-fitted comparison of recipe candidates (issue #12): 5 folds of train + val, not the
78 / 120 official val images.

    for d in breastmnist retinamnist; do for k in 0 1 2 3 4; do
      python -m experiments.sweep --flagfiles=flags/recipes/candidates/c1_96px_flip.cfg,... \\
        --seeds=$k --out=experiments/results/cv/$d/fold$k --nocollect \\
        --train_args="--data=$d --data_dir=../shared/data/medmnist --cv_folds=5 --cv_fold=$k"
    done; done
    python -m experiments.cv_study     # writes experiments/results/cv/cv_candidates.md

Rule 5 (the same test, c9 as the reference, both rerun at one commit in their own root):

    python -m experiments.cv_study --root=experiments/results/cv_rule5 \
        --reference=c9_112px --candidates=c11_128px_head1

Fold k trains with seed k and validates on fold k of train + val (``--cv_folds``); the test
split is never read here. The decision rules are rules 4 and 5 of
``flags/recipes/mobilenet_v2_torchvision.cfg``, written before any of their runs: the score of
a (set, fold) cell is (val ACC + val AUC) / 2 of the selected checkpoint (metrics.json "val");
a candidate's difference to the reference (the recipe: c1 for rule 4, c9 for rule 5) is the
mean over the 10 paired cells (= the mean over the two sets of their fold means); it replaces
the reference only if that difference is >= 0.005 AND >= one standard error of the paired
differences (sample sd / sqrt(10)); the largest such difference wins. Pooled out-of-fold
ACC / AUC (every train + val image scored once) are reported beside it, for information.

A name ``CANDIDATE@MODE`` (rule 11) scores CANDIDATE's fold models on their val folds again with
test-time augmentation MODE (``tlmed_keras.tta``), so TTA modes compare like trained candidates:

    python -m experiments.cv_study --root=experiments/results/cv_rule6 \
        --reference=c14_dropout@flip --candidates=c14_dropout@shift,c14_dropout@flip_shift
"""

from __future__ import annotations

import functools
import json
import pathlib

import numpy as np
from absl import flags

from tlmed_keras import cli

REPO = pathlib.Path(__file__).resolve().parents[1]
OUT = REPO / "experiments" / "results" / "cv"
DATASETS = ("breastmnist", "retinamnist")
FOLDS = 5
REFERENCE = "c1_96px_flip"
CANDIDATES = ("c3_ema", "c7_llrd", "c9_112px")
MARGIN = 0.005

flags.DEFINE_list("candidates", list(CANDIDATES), "Candidates compared with the reference.")
flags.DEFINE_list(
    "datasets",
    list(DATASETS),
    "The sets whose fold cells are paired (rule 15 pairs BreastMNIST alone: only it has a "
    "native 64-px file here).",
)
flags.DEFINE_string("reference", REFERENCE, "The recipe the candidates are paired with.")
flags.DEFINE_string("root", str(OUT), "Folder of <data>/fold<k>/runs/<candidate>/seed<k>.")
flags.DEFINE_string(
    "table",
    "cv_candidates.md",
    "File name, under --root, of the table (one per rule, so a "
    "later rule does not overwrite an earlier one's).",
)
flags.DEFINE_bool("pooled", True, "Also score the pooled out-of-fold predictions (loads models).")
FLAGS = flags.FLAGS


def run_dir(data: str, candidate: str, fold: int) -> pathlib.Path:
    return OUT / data / f"fold{fold}" / "runs" / candidate / f"seed{fold}"


def cell_scores(data: str, candidate: str) -> list[float] | None:
    """(val ACC + val AUC) / 2 per fold, or None while a fold is unfinished. A name
    ``CANDIDATE@MODE`` evaluates CANDIDATE's fold models again with that TTA mode."""
    name, _, tta = candidate.partition("@")
    scores = []
    for fold in range(FOLDS):
        path = run_dir(data, name, fold) / "metrics.json"
        if not path.is_file():
            return None
        if tta:
            ev = val_fold(path.parent, tta)
            acc, auc = ev.acc, ev.auc
        else:
            val = json.loads(path.read_text())["val"]
            acc, auc = val["acc"], val["auc"]
        scores.append((acc + auc) / 2)
    return scores


@functools.cache  # the table, the decision and the pooled scores all ask; a path names one run
def val_fold(workdir: pathlib.Path, tta: str = "none"):
    """The ``Evaluation`` of a finished fold run on its val fold (with TTA ``tta``)."""
    from tlmed_keras.evaluate.report import EvalOptions, evaluate_run

    return evaluate_run(workdir, "val", EvalOptions(tta=tta)).evaluation


def paired(candidate: str, reference: str, datasets: tuple[str, ...] = DATASETS) -> dict | None:
    """Mean paired difference over the (set, fold) cells, its standard error, the decision."""
    diffs = []
    for data in datasets:
        ours, ref = cell_scores(data, candidate), cell_scores(data, reference)
        if ours is None or ref is None:
            return None
        diffs += [a - b for a, b in zip(ours, ref, strict=True)]
    diffs = np.asarray(diffs)
    mean, se = float(diffs.mean()), float(diffs.std(ddof=1) / np.sqrt(len(diffs)))
    return {"diff": mean, "se": se, "clears": mean >= MARGIN and mean >= se}


def pooled(data: str, candidate: str) -> tuple[float, float]:
    """ACC and AUC of every train + val image, each scored by the fold model that held it out
    (every fold's run must be finished)."""
    from tlmed_keras import metrics as mm

    name, _, tta = candidate.partition("@")
    truths, scores, task = [], [], None
    for fold in range(FOLDS):
        ev = val_fold(run_dir(data, name, fold), tta or "none")
        truths.append(ev.y_true)
        scores.append(ev.scores)
        task = ev.task
    result = mm.evaluate_scores(np.concatenate(truths), np.concatenate(scores), task)
    return result["acc"], result["auc"]


def table(
    candidates: list[str],
    reference: str,
    with_pooled: bool,
    datasets: tuple[str, ...] = DATASETS,
) -> str:
    names = [reference, *candidates]
    lines = [
        "# Cross-fitted comparison (5 folds of train + val, seed = fold; validation only)",
        "",
        "Per cell: (val ACC + val AUC) / 2 of the selected checkpoint, folds 0-4.",
        "",
        "| candidate | data | folds 0-4 | mean | pooled OOF ACC / AUC |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        for data in datasets:
            scores = cell_scores(data, name)
            if scores is None:
                lines.append(f"| {name} | {data} | (unfinished) | | |")
                continue
            pool = pooled(data, name) if with_pooled else None
            pool_text = f"{pool[0]:.4f} / {pool[1]:.4f}" if pool else ""
            folds_text = ", ".join(f"{s:.4f}" for s in scores)
            mean = np.mean(scores)
            lines.append(f"| {name} | {data} | {folds_text} | {mean:.4f} | {pool_text} |")
    lines += [
        "",
        f"Paired against {reference} ({FOLDS * len(datasets)} cells; "
        f"rule: diff >= {MARGIN} and >= 1 SE):",
        "",
    ]
    lines += ["| candidate | mean diff | SE | clears |", "|---|---|---|---|"]
    for name in candidates:
        result = paired(name, reference, datasets)
        if result is None:
            lines.append(f"| {name} | (unfinished) | | |")
        else:
            lines.append(
                f"| {name} | {result['diff']:+.4f} | {result['se']:.4f} | "
                f"{'yes' if result['clears'] else 'no'} |"
            )
    lines += ["", f"Decision: {decision(candidates, reference, datasets)}"]
    return "\n".join(lines) + "\n"


def decision(candidates: list[str], reference: str, datasets: tuple[str, ...] = DATASETS) -> str:
    results = {name: paired(name, reference, datasets) for name in candidates}
    if any(r is None for r in results.values()):
        return "pending (unfinished runs)."
    winners = {n: r["diff"] for n, r in results.items() if r["clears"]}
    if not winners:
        return f"no candidate clears the rule: the recipe stays {reference}."
    best = max(winners, key=winners.get)
    return (
        f"{best} clears the score (largest paired gain that clears it); it replaces "
        f"{reference} only if its rule's other conditions hold too (the time budget: "
        "experiments/recipe_budget.py, results/recipe/budget.jsonl)."
    )


def main(argv: list[str]) -> None:
    del argv
    global OUT  # run_dir's root: the study's folder (rule 4: cv, rule 5: cv_rule5)
    OUT = pathlib.Path(FLAGS.root)
    if FLAGS.pooled or "@" in FLAGS.reference + "".join(FLAGS.candidates):
        from absl import logging

        from tlmed_keras import runtime

        runtime.setup("auto")
        logging.set_verbosity(logging.ERROR)  # one predict function per fold model: retracing
    text = table(FLAGS.candidates, FLAGS.reference, FLAGS.pooled, tuple(FLAGS.datasets))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / FLAGS.table).write_text(text)
    print(text)


if __name__ == "__main__":
    cli.run(main, prog="experiments.cv_study")
