"""Collect every run's metrics.json into one table: mean ± sd of test ACC and AUC per cell.

A cell is one flagfile (one model x dataset x budget); its runs are its seeds. Files written
into the sweep's ``--out``:

- ``results.md``   per cell: mean ± sd (sample sd, n-1) beside the study's numbers and the
                   MedMNIST v2 / MedMNIST+ baselines; failed runs with their error; sources.
- ``results.csv``  the same per-cell numbers, one row per cell.
- ``runs.csv``     one row per run (state, seed, metrics, seconds, error).
- ``results.png``  bar chart of the cells' test ACC and AUC with sd error bars.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import pathlib
import shlex
import statistics
import time
from collections.abc import Sequence

from experiments import references as refs
from experiments import runs as sweep_runs
from tlmed_keras.runs import rundir

RUN_FIELDS = (
    "cell",
    "seed",
    "state",
    "model",
    "data",
    "size",
    "image_size",
    "weights",
    "test_acc",
    "test_auc",
    *(f"test_{m}_ci_{end}" for m in ("acc", "auc") for end in ("low", "high")),
    "val_acc",
    "val_auc",
    "seconds",
    "note",
    "error",
    "workdir",
)
CELL_FIELDS = (
    "cell",
    "model",
    "data",
    "size",
    "image_size",
    "weights",
    "runs",
    "done",
    "failed",
    "test_acc_mean",
    "test_acc_sd",
    "test_auc_mean",
    "test_auc_sd",
    *(f"test_{m}_ci_{end}_mean" for m in ("acc", "auc") for end in ("low", "high")),
    "val_acc_mean",
    "val_acc_sd",
    "val_auc_mean",
    "val_auc_sd",
    "study_acc",
    "study_auc",
    "medmnist_v2_resnet18_28_acc",
    "medmnist_v2_resnet18_28_auc",
    "medmnist_plus_best28_acc",
    "medmnist_plus_best28_auc",
)


@dataclasses.dataclass
class RunResult:
    """One run as the table sees it."""

    cell: str
    seed: int
    state: str  # done | failed | running | not run
    model: str = ""
    data: str = ""
    size: int | None = None
    image_size: int | None = None
    weights: str = ""
    test_acc: float | None = None
    test_auc: float | None = None
    # the run's 95 % bootstrap interval over the test images (metrics.json "test_ci95")
    test_acc_ci_low: float | None = None
    test_acc_ci_high: float | None = None
    test_auc_ci_low: float | None = None
    test_auc_ci_high: float | None = None
    val_acc: float | None = None
    val_auc: float | None = None
    seconds: float | None = None
    note: str = ""
    error: str = ""
    workdir: str = ""


@dataclasses.dataclass
class CellResult:
    cell: str
    model: str
    data: str
    size: int | None
    image_size: int | None
    weights: str
    runs: list[RunResult]

    def done(self) -> list[RunResult]:
        return [r for r in self.runs if r.state == "done"]

    def failed(self) -> list[RunResult]:
        return [r for r in self.runs if r.state == "failed"]

    def stat(self, key: str) -> tuple[float | None, float | None]:
        """Mean and sample sd (n-1) of ``key`` over finished runs; sd is None for n < 2."""
        values = [getattr(r, key) for r in self.done() if getattr(r, key) is not None]
        if not values:
            return None, None
        sd = statistics.stdev(values) if len(values) > 1 else None
        return statistics.fmean(values), sd


def flagfile_values(path: os.PathLike | str, _depth: int = 0) -> dict[str, str]:
    """``--name=value`` lines of a flagfile (nested ``--flagfile=`` followed), for labelling
    cells whose runs all failed. Comments (# or //) and blank lines are skipped."""
    values: dict[str, str] = {}
    try:
        lines = pathlib.Path(path).read_text().splitlines()
    except OSError:
        return values
    for line in lines:
        line = line.strip()
        if not line.startswith("-") or line.startswith("//"):
            continue
        name, _, value = line.lstrip("-").partition("=")
        if name == "flagfile" and _depth < 5:
            values.update(flagfile_values(value, _depth + 1))
        else:
            values[name] = value
    return values


def _same_value(recorded, text: str) -> bool:
    if isinstance(recorded, bool):
        return text.lower() in (("", "true", "1") if recorded else ("false", "0"))
    if isinstance(recorded, (int, float)):
        number = _number(text)
        return number is not None and math.isclose(number, recorded)
    return str(recorded) == text


def _same_settings(run: sweep_runs.Run) -> bool:
    """Whether every flag the run's flagfile sets now (nested files followed) has the value
    the run was trained with (config.json's "flags"): an edit of comments or of how the
    flagfile is put together leaves its finished runs valid."""
    try:
        recorded = rundir.RunDir(run.workdir).read_config()[rundir.FLAGS_KEY]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    for name, text in flagfile_values(run.flagfile).items():
        if name not in recorded and name.startswith("no") and text == "":
            name, text = name[2:], "false"  # --noflag
        if name not in recorded or not _same_value(recorded[name], text):
            return False
    return True


def _number(value, cast=float):
    try:
        return None if value in (None, "") else cast(value)
    except (TypeError, ValueError):
        return None


def run_result(run: sweep_runs.Run) -> RunResult:
    """Reads one run's workdir: metrics when finished, else its state and error."""
    status = sweep_runs.read_status(run)
    flags = flagfile_values(run.flagfile)
    flags.update(_extra_flags(status.get("command", "")))
    result = RunResult(
        cell=run.cell,
        seed=run.seed,
        state="not run",
        model=flags.get("model", ""),
        data=flags.get("data", ""),
        size=_number(flags.get("size", 28), int),
        image_size=_number(flags.get("image_size"), int) or None,
        weights=flags.get("weights", "imagenet"),
        workdir=str(run.workdir),
    )
    result.seconds = status.get("seconds")
    if run.is_finished():
        return _finished(run, result, status)
    if status.get("state") == "running" and sweep_runs.is_running(run):
        result.state = "running"
        result.note = f"started {status.get('started', '?')} on {status.get('host', '?')}"
    elif status.get("state") == "running":  # its worker died (killed, machine lost)
        result.state = "failed"
        tail = sweep_runs.log_tail(run)
        result.error = f"{tail}\ninterrupted: its sweep worker is gone; rerun the sweep to resume"
    elif status.get("state") in ("failed", "done"):
        result.state = "failed"
        result.error = status.get("error") or sweep_runs.log_tail(run) or "(no log)"
    return result


def _extra_flags(command: str) -> dict[str, str]:
    """Flags given on the run's command line after its flagfile (they override it)."""
    out: dict[str, str] = {}
    try:
        argv = shlex.split(command)
    except ValueError:
        return out
    for arg in argv:
        if arg.startswith("--") and "=" in arg and not arg.startswith("--flagfile="):
            name, _, value = arg[2:].partition("=")
            out[name] = value
    return out


def _finished(run: sweep_runs.Run, result: RunResult, status: dict) -> RunResult:
    try:
        metrics = json.loads((run.workdir / sweep_runs.METRICS_FILE).read_text())
        test, val = metrics["test"] or {}, metrics.get("val", {})  # None: a cross-fitting fold
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        result.state = "failed"
        result.error = f"DONE is there but metrics.json is unreadable: {e!r}"
        return result
    result.state = "done"
    result.model = metrics.get("model", result.model)
    result.data = metrics.get("data", result.data)
    result.size = metrics.get("size", result.size)
    result.image_size = metrics.get("image_size", result.image_size)
    result.weights = metrics.get("weights", result.weights)
    result.test_acc, result.test_auc = _number(test.get("acc")), _number(test.get("auc"))
    result.val_acc, result.val_auc = _number(val.get("acc")), _number(val.get("auc"))
    for name, (low, high) in (metrics.get("test_ci95") or {}).items():
        setattr(result, f"test_{name}_ci_low", _number(low))
        setattr(result, f"test_{name}_ci_high", _number(high))
    digest = status.get("flagfile_sha256")
    if digest and run.flagfile.is_file() and digest != sweep_runs.flagfile_digest(run.flagfile):
        if _same_settings(run):
            result.note = "flagfile text edited since this run; every flag it sets is unchanged"
        else:
            result.note = "flagfile changed since this run; delete its workdir to rerun it"
    return result


def collect(runs: Sequence[sweep_runs.Run]) -> list[CellResult]:
    """Per-cell results, cells in the order of the plan."""
    cells: dict[str, CellResult] = {}
    for run in runs:
        r = run_result(run)
        cell = cells.get(r.cell)
        if cell is None:
            cell = cells[r.cell] = CellResult(
                r.cell, r.model, r.data, r.size, r.image_size, r.weights, []
            )
        if r.state == "done":  # metrics.json is authoritative for the cell's labels
            cell.model, cell.data, cell.size = r.model, r.data, r.size
            cell.image_size, cell.weights = r.image_size, r.weights
        cell.runs.append(r)
    return list(cells.values())


# ----------------------------------------------------------------------------- writing


def _fmt(x: float | None, digits: int = 4) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _pm(mean: float | None, sd: float | None) -> str:
    if mean is None:
        return "—"
    return f"{mean:.4f} ± {sd:.4f}" if sd is not None else f"{mean:.4f} (n=1)"


def _pm_ci(cell: CellResult, key: str) -> str:
    """``mean ± sd [low, high]``: the bounds are the means over seeds of each run's 95 %
    bootstrap interval over the test images (runs trained before intervals existed have
    none: then no bracket)."""
    low, high = cell.stat(f"{key}_ci_low")[0], cell.stat(f"{key}_ci_high")[0]
    text = _pm(*cell.stat(key))
    return text if low is None or high is None else f"{text} [{low:.4f}, {high:.4f}]"


def _val(cell: CellResult) -> str:
    acc, auc = cell.stat("val_acc")[0], cell.stat("val_auc")[0]
    return "" if acc is None else f"{_fmt(acc, 3)} / {_fmt(auc, 3)}"


def _pair(score: refs.Score) -> str:
    if score.acc is None and score.auc is None:
        return ""
    return f"{_fmt(score.acc, 3) or '—'} / {_fmt(score.auc, 3) or '—'}"


def _weights_label(weights: str) -> str:
    if weights in ("imagenet", "none", ""):
        return weights or "imagenet"
    return f"file {pathlib.Path(weights).name}"


def cell_rows(cells: Sequence[CellResult]) -> list[dict]:
    rows = []
    for c in cells:
        acc, acc_sd = c.stat("test_acc")
        auc, auc_sd = c.stat("test_auc")
        val_acc, val_acc_sd = c.stat("val_acc")
        val_auc, val_auc_sd = c.stat("val_auc")
        study = refs.study(c.model, c.data)
        v2 = refs.medmnist_v2(c.data)
        plus = refs.medmnist_plus(c.data)
        rows.append(
            {
                "cell": c.cell,
                "model": c.model,
                "data": c.data,
                "size": c.size,
                "image_size": c.image_size,
                "weights": c.weights,
                "runs": len(c.runs),
                "done": len(c.done()),
                "failed": len(c.failed()),
                "test_acc_mean": _fmt(acc, 6),
                "test_acc_sd": _fmt(acc_sd, 6),
                "test_auc_mean": _fmt(auc, 6),
                "test_auc_sd": _fmt(auc_sd, 6),
                **{
                    f"test_{m}_ci_{end}_mean": _fmt(c.stat(f"test_{m}_ci_{end}")[0], 6)
                    for m in ("acc", "auc")
                    for end in ("low", "high")
                },
                "val_acc_mean": _fmt(val_acc, 6),
                "val_acc_sd": _fmt(val_acc_sd, 6),
                "val_auc_mean": _fmt(val_auc, 6),
                "val_auc_sd": _fmt(val_auc_sd, 6),
                "study_acc": _fmt(study.acc),
                "study_auc": _fmt(study.auc),
                "medmnist_v2_resnet18_28_acc": _fmt(v2.acc, 3),
                "medmnist_v2_resnet18_28_auc": _fmt(v2.auc, 3),
                "medmnist_plus_best28_acc": _fmt(plus.acc),
                "medmnist_plus_best28_auc": _fmt(plus.auc),
            }
        )
    return rows


def _csv(rows: Sequence[dict], fields: Sequence[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(cells: Sequence[CellResult], title: str = "Sweep results") -> str:
    all_runs = [r for c in cells for r in c.runs]
    counts = {s: sum(r.state == s for r in all_runs) for s in ("done", "failed", "running")}
    pending = len(all_runs) - sum(counts.values())
    lines = [
        f"# {title}",
        "",
        f"Collected {time.strftime('%Y-%m-%d %H:%M')}: {len(all_runs)} runs, "
        f"{counts['done']} done, {counts['failed']} failed, {counts['running']} running, "
        f"{pending} not run. Test ACC / AUC: mean ± sample sd (n-1) over the finished seeds "
        "of each cell (one cell = one flagfile), then [the mean over seeds of each run's 95 % "
        "bootstrap interval over the test images]: the sd is the spread between seeds, the "
        "interval the test sample's own uncertainty; MedMNIST's ACC and AUC definitions. Val: "
        "the selected checkpoint on the validation split, the only split to choose "
        "settings on.",
        "",
        "| cell | model | data | size → input | weights | runs ok | test ACC | test AUC "
        "| val ACC / AUC | study ACC (Table 3) | MedMNIST v2 ResNet-18 (28) ACC / AUC "
        "| MedMNIST+ best (28) ACC / AUC |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        study = refs.study(c.model, c.data)
        ok = f"{len(c.done())}/{len(c.runs)}" + (
            f" ({len(c.failed())} failed)" if c.failed() else ""
        )
        lines.append(
            f"| {c.cell} | {c.model} | {c.data} | {c.size} → {c.image_size or 'native'} "
            f"| {_weights_label(c.weights)} | {ok} | {_pm_ci(c, 'test_acc')} "
            f"| {_pm_ci(c, 'test_auc')} | {_val(c)} | {_fmt(study.acc)} "
            f"| {_pair(refs.medmnist_v2(c.data))} | {_pair(refs.medmnist_plus(c.data))} |"
        )
    lines += _failures(all_runs) + _notes(all_runs) + _baselines(cells) + _sources()
    return "\n".join(lines) + "\n"


def _failures(all_runs: Sequence[RunResult]) -> list[str]:
    failed = [r for r in all_runs if r.state == "failed"]
    if not failed:
        return []
    lines = ["", "## Failed runs", "", "| run | error (last line of its log) |", "|---|---|"]
    for r in failed:
        last = r.error.strip().splitlines()[-1] if r.error.strip() else "(empty log)"
        lines.append(f"| {r.cell}/seed{r.seed} | {_md_escape(last[:300])} |")
    for r in failed:
        lines += ["", f"`{r.cell}/seed{r.seed}` ({r.workdir}/sweep.log), tail:", "", "```"]
        lines += [r.error.strip() or "(empty log)", "```"]
    return lines


def _notes(all_runs: Sequence[RunResult]) -> list[str]:
    noted = [r for r in all_runs if r.note and r.state != "running"]
    if not noted:
        return []
    lines = ["", "## Notes", ""]
    return lines + [f"- {r.cell}/seed{r.seed}: {r.note}" for r in noted]


def _baselines(cells: Sequence[CellResult]) -> list[str]:
    datasets = list(dict.fromkeys(c.data for c in cells if c.data))
    if not datasets:
        return []
    head = " | ".join(refs.MEDMNIST_V2_METHODS)
    lines = [
        "",
        "## Published baselines for these datasets (test ACC / AUC)",
        "",
        f"| data | {head} | MedMNIST+ best (28) |",
        "|---" * (len(refs.MEDMNIST_V2_METHODS) + 2) + "|",
    ]
    for data in datasets:
        cols = [_pair(refs.medmnist_v2(data, m)) for m in refs.MEDMNIST_V2_METHODS]
        lines.append(f"| {data} | {' | '.join(cols)} | {_pair(refs.medmnist_plus(data))} |")
    return lines


def _sources() -> list[str]:
    return [
        "",
        "Blank = not available to us; no number is guessed.",
        "",
        f"- Study: {refs.STUDY_SOURCE}",
        f"- {refs.MEDMNIST_V2_SOURCE}",
        f"- {refs.MEDMNIST_PLUS_SOURCE}",
    ]


def write(
    cells: Sequence[CellResult], out: os.PathLike | str, *, plot: bool = True
) -> dict[str, pathlib.Path]:
    """Writes results.md, results.csv, runs.csv (and results.png) into ``out``."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "md": out / "results.md",
        "csv": out / "results.csv",
        "runs": out / "runs.csv",
    }
    paths["md"].write_text(markdown(cells))
    paths["csv"].write_text(_csv(cell_rows(cells), CELL_FIELDS))
    run_rows = [
        {k: ("" if v is None else v) for k, v in dataclasses.asdict(r).items()}
        for c in cells
        for r in c.runs
    ]
    paths["runs"].write_text(_csv(run_rows, RUN_FIELDS))
    if plot:
        from experiments import plot as sweep_plot

        paths["png"] = sweep_plot.bar_chart(cells, out / "results.png")
    return paths
