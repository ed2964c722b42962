"""``evaluate_run``: load a finished run, score one split, write the report into the run."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from tlmed_keras.reporting import figures
from tlmed_keras.reporting.evaluation import Evaluation, evaluate_scores, predict_scores, summary
from tlmed_keras.reporting.split import load_split

EVAL_DIR = "eval"


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
) -> Report:
    """Evaluates the run in ``workdir`` on ``split`` and writes ``WORKDIR/eval/<split>/``.

    Args:
        workdir: a finished run directory (``tlmed_keras.training.rundir.load_run``).
        split: "train", "val" or "test".
        data_dir, download: where the npz file is / whether to fetch it (default: the run's).
        batch_size: prediction batch size.
        out_dir: where the files go (default ``WORKDIR/eval/<split>``).

    Returns:
        A ``Report``.

    Raises:
        FileNotFoundError: no finished run in ``workdir`` or no data file; ValueError: bad
        split or batch size.
    """
    from tlmed_keras.training.rundir import load_run

    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")
    run = load_run(workdir)
    images, labels = load_split(run, split, data_dir, download)
    y_true, scores = predict_scores(run, images, labels, batch_size)
    info = run.info
    ev = evaluate_scores(
        y_true, scores, task=info.task, label_names=info.label_names, dataset=info.name, split=split
    )
    out = Path(out_dir) if out_dir else Path(workdir) / EVAL_DIR / split
    out.mkdir(parents=True, exist_ok=True)
    text = summary(ev, header=f"Run {workdir}: model {run.config.model}")
    files = {
        "confusion_matrix": figures.confusion_figure(ev, out / "confusion_matrix.png"),
        "roc_curves": figures.roc_figure(ev, out / "roc_curves.png"),
        "report": out / "report.json",
        "summary": out / "summary.txt",
    }
    payload = {"workdir": str(workdir), "model": run.config.model, **ev.to_json()}
    files["report"].write_text(json.dumps(payload, indent=2) + "\n")
    files["summary"].write_text(text + "\n")
    return Report(ev, text, out, files)
