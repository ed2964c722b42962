"""The recipe's result: every member run's test ACC / AUC, their mean +- sd (over all runs and
per member), the ensemble's, the export command; printed, and written as
``WORKDIR/recipe_summary.json`` and ``recipe_summary.md``."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tlmed_keras.recipe.runner import Outcome

SUMMARY_JSON = "recipe_summary.json"
SUMMARY_MD = "recipe_summary.md"


def mean_sd(values: Sequence[float | None]) -> dict[str, float | None]:
    """``{"mean", "sd", "n"}`` of the defined values (sample sd; 0 for a single value)."""
    kept = [float(v) for v in values if v is not None]
    if not kept:
        return {"mean": None, "sd": None, "n": 0}
    sd = float(np.std(kept, ddof=1)) if len(kept) > 1 else 0.0
    return {"mean": float(np.mean(kept)), "sd": sd, "n": len(kept)}


def export_command(workdirs: Sequence[Path], tta: str, export_dir: str = "serving") -> str:
    """The command that exports the ensemble as one SavedModel (written with ``uv run``, as
    the trainer's next steps are)."""
    workdir = f"--workdir={','.join(map(str, workdirs))}"
    args = ["uv", "run", "python", "-m", "tlmed_keras.export", workdir]
    args.append(f"--export_dir={export_dir}")
    if tta != "none":
        args.append(f"--tta={tta}")
    return " ".join(shlex.quote(a) for a in args)


def build(
    outcomes: Sequence[Outcome],
    members: Sequence[dict[str, Any]],
    ensemble: Any,
    facts: dict[str, Any],
) -> dict[str, Any]:
    """The summary dict.

    Args:
        outcomes: the runs in plan order (``runner.train_all``).
        members: their scores in the same order (``{"acc", "auc", "model"}``; evaluate's
            report.json "members").
        ensemble: the ensemble's ``Evaluation``.
        facts: data, size, tta, members file, seeds, wall time... (stored as given).
    """
    runs = [
        {
            "member": o.run.member.name,
            "seed": o.run.seed,
            "workdir": str(o.run.workdir),
            "model": m.get("model"),
            "acc": m["acc"],
            "auc": m["auc"],
            "state": o.state,
            "train_wall_s": round(o.seconds, 1),
        }
        for o, m in zip(outcomes, members, strict=True)
    ]
    names = list(dict.fromkeys(r["member"] for r in runs))
    per_member = {
        name: {k: mean_sd([r[k] for r in runs if r["member"] == name]) for k in ("acc", "auc")}
        for name in names
    }
    saved = ensemble.to_json()
    return {
        **facts,
        "split": ensemble.split,
        "num_images": saved["num_images"],
        "runs": runs,
        "members_mean_sd": {k: mean_sd([r[k] for r in runs]) for k in ("acc", "auc")},
        "per_member_mean_sd": per_member,
        "ensemble": {"acc": saved["acc"], "auc": saved["auc"], "runs": len(runs)},
        "export_command": export_command([o.run.workdir for o in outcomes], facts["tta"]),
    }


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _pm(stats: dict) -> str:
    return "n/a" if stats["mean"] is None else f"{stats['mean']:.4f} ± {stats['sd']:.4f}"


def table(summary: dict[str, Any]) -> list[str]:
    """The result as Markdown table rows (also what is printed)."""
    lines = ["| run | model | test ACC | test AUC |", "|---|---|---|---|"]
    for r in summary["runs"]:
        lines.append(
            f"| {r['member']}/seed{r['seed']} | {r['model']} | {_num(r['acc'])} | "
            f"{_num(r['auc'])} |"
        )
    if len(summary["per_member_mean_sd"]) > 1:
        for name, stats in summary["per_member_mean_sd"].items():
            lines.append(f"| {name}: mean ± sd | | {_pm(stats['acc'])} | {_pm(stats['auc'])} |")
    both = summary["members_mean_sd"]
    lines.append(f"| all runs: mean ± sd | | {_pm(both['acc'])} | {_pm(both['auc'])} |")
    ens = summary["ensemble"]
    lines.append(
        f"| **ensemble of {ens['runs']}** | | **{_num(ens['acc'])}** | **{_num(ens['auc'])}** |"
    )
    return lines


def text(summary: dict[str, Any]) -> str:
    """The printed summary: what was scored, the table, where the files are, the export."""
    head = (
        f"{summary['data']} ({summary['size']} px), {summary['split']} split, "
        f"{summary['num_images']} images, test-time augmentation {summary['tta']}; "
        f"the ensemble is the mean probability of every run."
    )
    timing = [] if summary.get("wall_s") is None else [f"Wall time: {summary['wall_s']:.0f} s."]
    return "\n".join(
        [
            head,
            "",
            *table(summary),
            "",
            "Export the ensemble as one SavedModel:",
            f"  {summary['export_command']}",
            *timing,
        ]
    )


def write(summary: dict[str, Any], workdir: str | Path) -> dict[str, Path]:
    """Writes ``recipe_summary.json`` and ``.md`` into ``workdir``; returns their paths."""
    root = Path(workdir)
    paths = {"json": root / SUMMARY_JSON, "md": root / SUMMARY_MD}
    paths["json"].write_text(json.dumps(summary, indent=2) + "\n")
    command = " ".join(shlex.quote(a) for a in summary.get("command", sys.argv))
    md = [
        f"# Recipe result: {summary['data']} ({summary['size']} px)",
        "",
        f"`{command}`",
        "",
        text(summary).split("\n")[0],
        "",
        *table(summary),
        "",
        "Export the ensemble as one SavedModel:",
        "",
        f"```\n{summary['export_command']}\n```",
        "",
    ]
    if summary.get("wall_s") is not None:
        md.append(f"Wall time: {summary['wall_s']:.0f} s.\n")
    paths["md"].write_text("\n".join(md))
    return paths
