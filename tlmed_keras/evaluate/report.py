"""``evaluate_run``: load a finished run, score one split, write the report into the run;
``evaluate_ensemble``: the same for the mean probability of several runs (an ensemble of
seeds or backbones). Both take their data, batch size, output folder and TTA as one
``EvalOptions``."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tlmed_keras.evaluate import figures
from tlmed_keras.evaluate.ensemble import check_split_shared, check_tta, load_members, with_tta
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


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    """How runs are evaluated: the flags of ``python -m tlmed_keras.evaluate`` (same names).

    Checked when built.

    Attributes:
        data_dir, download: where the npz file is / whether to fetch it (default: the run's).
        batch_size: prediction batch size.
        out_dir: where the files go (default: beside the run or runs, see ``out_path``).
        tta: test-time augmentation, a mode of ``tlmed_keras.tta.MODES``.

    Raises:
        ValueError: a batch size below 1 or an unknown tta.
    """

    data_dir: str | None = None
    download: bool | None = None
    batch_size: int = 256
    out_dir: str | os.PathLike | None = None
    tta: str = "none"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size}.")
        check_tta(self.tta)

    def out_path(self, eval_root: Path, split: str) -> Path:
        """``out_dir``, else ``eval_root/<split>`` (``<split>_tta-<mode>`` with TTA)."""
        if self.out_dir:
            return Path(self.out_dir)
        return eval_root / (split if self.tta == "none" else f"{split}_tta-{self.tta}")


def evaluate_run(
    workdir: str | os.PathLike, split: str = "test", options: EvalOptions | None = None
) -> Report:
    """Evaluates the run in ``workdir`` on ``split`` and writes ``WORKDIR/eval/<split>/``
    (``<split>_tta-<mode>`` with test-time augmentation) unless ``options.out_dir``.

    Args:
        workdir: a finished run directory (``tlmed_keras.train.rundir.load_run``).
        split: "train", "val" or "test".
        options: data, batch size, output folder, TTA (default ``EvalOptions()``).

    Returns:
        A ``Report``.

    Raises:
        FileNotFoundError: no finished run in ``workdir`` or no data file; ValueError: bad
        split.
    """
    from tlmed_keras.train.rundir import load_run

    options = options or EvalOptions()
    run = load_run(workdir)
    (ev,) = _member_evaluations([run], split, options)
    out = options.out_path(Path(workdir) / EVAL_DIR, split)
    header = f"Run {workdir}: model {run.config.model}" + _tta_note(options.tta)
    payload = {"workdir": str(workdir), "model": run.config.model, "tta": options.tta}
    return _write(ev, out, header, payload)


def evaluate_ensemble(
    workdirs: Sequence[str | os.PathLike], split: str = "test", options: EvalOptions | None = None
) -> Report:
    """Evaluates the mean probability of several runs (seeds or backbones) on ``split``.

    Each member is scored alone too (same TTA); the printed summary lists the members' ACC /
    AUC, their mean +- sample sd, then the ensemble's full report. Files go to
    ``options.out_dir`` (default: ``<common parent of the runs>/eval_ensemble/<split>``,
    ``[_tta-<mode>]`` appended with TTA).

    Raises:
        ValueError: members that differ in dataset, stored size or label set (named),
            or in their folds when ``split`` is not test; a bad split.
        FileNotFoundError: a folder without a finished run.
    """
    options = options or EvalOptions()
    runs = load_members(workdirs)
    check_split_shared(runs, split)
    members = _member_evaluations(runs, split, options)
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
    out = options.out_path(common / ENSEMBLE_DIR, split)
    rows = [
        {"workdir": str(w), "model": r.config.model, **_scores(m)}
        for w, r, m in zip(workdirs, runs, members, strict=True)
    ]
    header = _members_text(rows) + f"\nEnsemble of {len(runs)} runs" + _tta_note(options.tta)
    payload = {"workdirs": [str(w) for w in workdirs], "tta": options.tta, "members": rows}
    return _write(ev, out, header, payload)


def _scores(ev: Evaluation) -> dict:
    saved = ev.to_json()
    return {"acc": saved["acc"], "auc": saved["auc"]}


def _tta_note(tta: str) -> str:
    return "" if tta == "none" else f" (test-time augmentation: {tta})"


def _member_evaluations(runs: Sequence, split: str, options: EvalOptions) -> list[Evaluation]:
    """Each run scored alone on ``split`` (read once, from the first run's data settings)."""
    images, labels = load_split(runs[0], split, options.data_dir, options.download)
    return [_member_evaluation(run, images, labels, split, options) for run in runs]


def _member_evaluation(run, images, labels, split: str, options: EvalOptions) -> Evaluation:
    info = run.info
    model = with_tta(run.model, info.task, options.tta)
    y_true, scores = predict_scores(run, images, labels, options.batch_size, model=model)
    return evaluate_scores(
        y_true, scores, task=info.task, label_names=info.label_names, dataset=info.name, split=split
    )


def _members_text(rows: list[dict]) -> str:
    lines = ["Members:"]
    lines += [
        f"  ACC {r['acc']:.4f}   AUC {r['auc']:.4f}   {r['workdir']} ({r['model']})" for r in rows
    ]
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
