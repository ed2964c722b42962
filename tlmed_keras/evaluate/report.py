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

from tlmed_keras import metrics as mm
from tlmed_keras.evaluate import calibrate, figures
from tlmed_keras.evaluate.evaluation import Evaluation, evaluate_scores, summary
from tlmed_keras.runs.ensemble import (
    check_split_shared,
    check_tta,
    load_members,
    recorded_tta,
)
from tlmed_keras.runs.split import load_split

EVAL_DIR = "eval"
ENSEMBLE_DIR = "eval_ensemble"


@dataclasses.dataclass(frozen=True)
class Report:
    evaluation: Evaluation
    text: str  # the printed summary
    out_dir: Path
    files: dict[str, Path]  # report.json, summary.txt and the figures (PNG)


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    """How runs are evaluated: the flags of ``python -m tlmed_keras.evaluate`` (same names).

    Checked when built.

    Attributes:
        data_dir, download: where the npz file is / whether to fetch it (default: the run's).
        batch_size: prediction batch size.
        out_dir: where the files go (default: beside the run or runs, see ``out_path``).
        tta: test-time augmentation, a mode of ``tlmed_keras.tta.MODES``; None: the runs'
            own (``--tta`` of their training, so the numbers repeat the trainer's).
        explain: K > 0 writes ``saliency_montage.png``: the K most confident errors and
            correct images with their heatmaps (``evaluate.explain``); 0: none.

    Raises:
        ValueError: a batch size below 1, a negative explain or an unknown tta.
    """

    data_dir: str | None = None
    download: bool | None = None
    batch_size: int = 256
    out_dir: str | os.PathLike | None = None
    tta: str | None = None
    explain: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size}.")
        if self.explain < 0:
            raise ValueError(
                f"Bad --explain={self.explain}: give K >= 1 images per row of the saliency "
                "montage, or 0 for none."
            )
        if self.tta is not None:
            check_tta(self.tta)

    def for_runs(self, runs: Sequence) -> tuple[EvalOptions, str]:
        """These options with ``tta`` settled for ``runs``, and where it came from: the
        given ``--tta``, else the runs' own (``recorded_tta``, which refuses a disagreement).
        """
        if self.tta is not None:
            return self, "--tta"
        source = "the run's own" if len(runs) == 1 else "the runs' own"
        return dataclasses.replace(self, tta=recorded_tta(runs)), source

    def out_path(self, eval_root: Path, split: str) -> Path:
        """``out_dir``, else ``eval_root/<split>`` (``<split>_tta-<mode>`` with TTA)."""
        if self.out_dir:
            return Path(self.out_dir)
        return eval_root / (split if self.tta in (None, "none") else f"{split}_tta-{self.tta}")


def evaluate_run(
    workdir: str | os.PathLike, split: str = "test", options: EvalOptions | None = None
) -> Report:
    """Evaluates the run in ``workdir`` on ``split`` and writes ``WORKDIR/eval/<split>/``
    (``<split>_tta-<mode>`` with test-time augmentation) unless ``options.out_dir``.

    Args:
        workdir: a finished run directory (``tlmed_keras.runs.rundir.load_run``).
        split: "train", "val" or "test".
        options: data, batch size, output folder, TTA (default ``EvalOptions()``: the run's
            own TTA).

    Returns:
        A ``Report``.

    Raises:
        FileNotFoundError: no finished run in ``workdir`` or no data file; ValueError: bad
        split.
    """
    from tlmed_keras.runs.rundir import load_run

    run = load_run(workdir)
    options, tta_source = (options or EvalOptions()).for_runs([run])
    ev, _ = scored([run], [workdir], split, options)
    out = options.out_path(Path(workdir) / EVAL_DIR, split)
    header = f"Run {workdir}: model {run.config.model}" + _tta_note(options.tta, tta_source)
    payload = {"workdir": str(workdir), "model": run.config.model}
    payload |= {"tta": options.tta, "tta_source": tta_source}
    return _with_montage(_write(ev, out, header, payload), [run], split, options)


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
            or in their folds when ``split`` is not test, or (without ``options.tta``) in
            the TTA they were trained with; a bad split.
        FileNotFoundError: a folder without a finished run.
    """
    runs = load_members(workdirs)
    check_split_shared(runs, split)
    options, tta_source = (options or EvalOptions()).for_runs(runs)
    ev, members = scored(runs, workdirs, split, options, members_too=True)
    common = Path(os.path.commonpath([os.path.abspath(w) for w in workdirs]))
    out = options.out_path(common / ENSEMBLE_DIR, split)
    rows = [_member_row(w, r, m) for w, r, m in zip(workdirs, runs, members, strict=True)]
    header = _members_text(rows) + f"\nEnsemble of {len(runs)} runs"
    header += _tta_note(options.tta, tta_source)
    payload = {"workdirs": [str(w) for w in workdirs], "tta": options.tta}
    payload |= {"tta_source": tta_source, "members": rows}
    return _with_montage(_write(ev, out, header, payload), runs, split, options)


def evaluate_workdirs(
    workdirs: Sequence[str | os.PathLike], split: str, options: EvalOptions
) -> Evaluation:
    """The evaluation of one run or an ensemble (no files written): ``--compare``'s B, with
    its own TTA unless ``options.tta`` names one."""
    from tlmed_keras.runs.rundir import load_run

    runs = [load_run(workdirs[0])] if len(workdirs) == 1 else load_members(workdirs)
    if len(runs) > 1:
        check_split_shared(runs, split)
    options, _ = options.for_runs(runs)
    return scored(runs, workdirs, split, options)[0]


def scored(
    runs: Sequence,
    workdirs: Sequence,
    split: str,
    options: EvalOptions,
    members_too: bool = False,
) -> tuple[Evaluation, list[Evaluation]]:
    """``(evaluation of the run or ensemble, evaluations of its members)`` on ``split``, with
    calibration under the runs' temperature (fitted on val now if none is stored). The member
    list is empty unless ``members_too`` (an ensemble's report lists them, even of one run)."""
    info = runs[0].info
    y_true, logits = calibrate.member_logits(runs, split, options)

    def evaluation(scores):
        return evaluate_scores(
            y_true,
            scores,
            task=info.task,
            label_names=info.label_names,
            dataset=info.name,
            split=split,
        )

    probabilities = [mm.probabilities(z, info.task) for z in logits]
    members = [evaluation(p) for p in probabilities] if members_too else []
    ev = evaluation(np.mean(probabilities, axis=0))
    val = (y_true, logits) if split == "val" else None
    entry, path = calibrate.temperature_for(runs, workdirs, options, val=val)
    if entry is not None:
        combined = calibrate.combined_logits(logits, info.task)
        ev.calibration = calibrate.calibrate(ev.y_true, combined, info.task, entry, path)
    return ev, members


def _member_row(workdir, run, member: Evaluation) -> dict:
    found = member.to_json()
    return {
        "workdir": str(workdir),
        "model": run.config.model,
        **{key: found[key] for key in ("acc", "auc", "acc_ci95", "auc_ci95")},
    }


def _reliability(ev: Evaluation, out: Path) -> dict[str, Path]:
    if ev.calibration is None:
        return {}
    path = figures.reliability_figure(ev, out / "reliability_diagram.png")
    return {"reliability": path}


def _tta_note(tta: str, source: str) -> str:
    """Says which TTA the numbers used and why: every summary names it, none included."""
    return f" (test-time augmentation: {tta}, {source})"


def _members_text(rows: list[dict]) -> str:
    lines = ["Members:"]
    lines += [
        f"  ACC {_ci(r, 'acc')}   AUC {_ci(r, 'auc')}   {r['workdir']} ({r['model']})" for r in rows
    ]
    for key in ("acc", "auc"):
        values = [r[key] for r in rows if r[key] is not None]
        sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        lines.append(f"  mean {key.upper()} {np.mean(values):.4f} +- {sd:.4f} (sample sd)")
    return "\n".join(lines)


def _ci(row: dict, key: str) -> str:
    """``0.8590 [0.8013, 0.9103]`` from a member row (``n/a`` where undefined)."""
    value, (low, high) = row[key], row[f"{key}_ci95"]
    if value is None:
        return "n/a"
    if low is None:
        return f"{value:.4f}"
    return f"{value:.4f} [{low:.4f}, {high:.4f}]"


def _with_montage(report: Report, runs: Sequence, split: str, options: EvalOptions) -> Report:
    """``report`` with the saliency montage of ``options.explain`` images per row, if any
    (the split's raw images are read again only then)."""
    if options.explain:
        from tlmed_keras.evaluate.explain import write_montage

        images, _ = load_split(runs[0], split, options.data_dir, options.download)
        montage = write_montage(
            runs, np.asarray(images), report.evaluation, options.explain, report.out_dir
        )
        report.files["saliency_montage"] = montage
    return report


def _write(ev: Evaluation, out: Path, header: str, payload: dict) -> Report:
    out.mkdir(parents=True, exist_ok=True)
    text = summary(ev, header=header)
    files = {
        "confusion_matrix": figures.confusion_figure(ev, out / "confusion_matrix.png"),
        "roc_curves": figures.roc_figure(ev, out / "roc_curves.png"),
        **_reliability(ev, out),
        "report": out / "report.json",
        "summary": out / "summary.txt",
    }
    files["report"].write_text(json.dumps({**payload, **ev.to_json()}, indent=2) + "\n")
    files["summary"].write_text(text + "\n")
    return Report(ev, text, out, files)
