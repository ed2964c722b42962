"""``evaluate_run``: load a finished run, score one split, write the report into the run;
``evaluate_ensemble``: the same for the mean probability of several runs (seed ensemble)."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tlmed_keras.evaluate import figures
from tlmed_keras.evaluate.ensemble import check_tta, load_members, with_tta
from tlmed_keras.evaluate.evaluation import Evaluation, evaluate_scores, predict_scores, summary
from tlmed_keras.evaluate.split import load_split

EVAL_DIR = "eval"
ENSEMBLE_DIR = "eval_ensemble"


@dataclasses.dataclass(frozen=True)
class Report:
    evaluation: Evaluation
    text: str  # the printed summary
    out_dir: Path
    files: dict[str, Path]  # report.json, summary.txt, confusion_matrix.png, roc_curves.png


def evaluate_run(
    workdir: str | os.PathLike,
    split: str = "test",
    *,
    data_dir: str | None = None,
    download: bool | None = None,
    batch_size: int = 256,
    out_dir: str | os.PathLike | None = None,
    tta: str = "none",
) -> Report:
    """Evaluates the run in ``workdir`` on ``split`` and writes ``WORKDIR/eval/<split>/``
    (``<split>_tta-flip`` with flip test-time augmentation).

    Args:
        workdir: a finished run directory (``tlmed_keras.train.rundir.load_run``).
        split: "train", "val" or "test".
        data_dir, download: where the npz file is / whether to fetch it (default: the run's).
        batch_size: prediction batch size.
        out_dir: where the files go (default ``WORKDIR/eval/<split>``).
        tta: test-time augmentation, "none" or "flip" (``ensemble.TTA_MODES``).

    Returns:
        A ``Report``.

    Raises:
        FileNotFoundError: no finished run in ``workdir`` or no data file; ValueError: bad
        split, batch size or tta.
    """
    from tlmed_keras.train.rundir import load_run

    _check_batch_size(batch_size)
    check_tta(tta)
    run = load_run(workdir)
    images, labels = load_split(run, split, data_dir, download)
    ev = _member_evaluation(run, images, labels, split, batch_size, tta)
    out = Path(out_dir) if out_dir else Path(workdir) / EVAL_DIR / _folder(split, tta)
    header = f"Run {workdir}: model {run.config.model}" + _tta_note(tta)
    payload = {"workdir": str(workdir), "model": run.config.model, "tta": tta}
    return _write(ev, out, header, payload)


def evaluate_ensemble(
    workdirs: Sequence[str | os.PathLike],
    split: str = "test",
    *,
    data_dir: str | None = None,
    download: bool | None = None,
    batch_size: int = 256,
    out_dir: str | os.PathLike | None = None,
    tta: str = "none",
) -> Report:
    """Evaluates the mean probability of several runs (a seed ensemble) on ``split``.

    Each member is scored alone too (same TTA); the printed summary lists the members' ACC /
    AUC, their mean +- sample sd, then the ensemble's full report. Files go to ``out_dir``
    (default: ``<common parent of the runs>/eval_ensemble/<split>[_tta-flip]``).

    Raises:
        ValueError: members that differ in dataset, size, label set or preprocessing (named),
            a bad split, batch size or tta. FileNotFoundError: a folder without a finished run.
    """
    _check_batch_size(batch_size)
    check_tta(tta)
    runs = load_members(workdirs)
    images, labels = load_split(runs[0], split, data_dir, download)
    members = [_member_evaluation(r, images, labels, split, batch_size, tta) for r in runs]
    info = runs[0].info
    scores = np.mean([ev.scores for ev in members], axis=0)
    ev = evaluate_scores(
        members[0].y_true,
        scores,
        task=info.task,
        label_names=info.label_names,
        dataset=info.name,
        split=split,
    )
    common = Path(os.path.commonpath([os.path.abspath(w) for w in workdirs]))
    out = Path(out_dir) if out_dir else common / ENSEMBLE_DIR / _folder(split, tta)
    rows = [
        {"workdir": str(w), "acc": m.to_json()["acc"], "auc": m.to_json()["auc"]}
        for w, m in zip(workdirs, members, strict=True)
    ]
    header = _members_text(rows) + f"\nEnsemble of {len(runs)} runs" + _tta_note(tta)
    payload = {"workdirs": [str(w) for w in workdirs], "tta": tta, "members": rows}
    return _write(ev, out, header, payload)


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")


def _folder(split: str, tta: str) -> str:
    return split if tta == "none" else f"{split}_tta-{tta}"


def _tta_note(tta: str) -> str:
    return "" if tta == "none" else f" (test-time augmentation: {tta})"


def _member_evaluation(run, images, labels, split: str, batch_size: int, tta: str) -> Evaluation:
    info = run.info
    model = with_tta(run.model, info.task, tta)
    y_true, scores = predict_scores(run, images, labels, batch_size, model=model)
    return evaluate_scores(
        y_true, scores, task=info.task, label_names=info.label_names, dataset=info.name, split=split
    )


def _members_text(rows: list[dict]) -> str:
    lines = ["Members:"]
    lines += [f"  ACC {r['acc']:.4f}   AUC {r['auc']:.4f}   {r['workdir']}" for r in rows]
    for key in ("acc", "auc"):
        values = [r[key] for r in rows if r[key] is not None]
        sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        lines.append(f"  mean {key.upper()} {np.mean(values):.4f} +- {sd:.4f} (sample sd)")
    return "\n".join(lines)


def _write(ev: Evaluation, out: Path, header: str, payload: dict) -> Report:
    out.mkdir(parents=True, exist_ok=True)
    text = summary(ev, header=header)
    files = {
        "confusion_matrix": figures.confusion_figure(ev, out / "confusion_matrix.png"),
        "roc_curves": figures.roc_figure(ev, out / "roc_curves.png"),
        "report": out / "report.json",
        "summary": out / "summary.txt",
    }
    files["report"].write_text(json.dumps({**payload, **ev.to_json()}, indent=2) + "\n")
    files["summary"].write_text(text + "\n")
    return Report(ev, text, out, files)
