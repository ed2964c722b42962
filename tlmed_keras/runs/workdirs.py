"""``--workdir`` of evaluate and export: one run directory, a comma list, globs, or both.

Light on purpose (no Keras): the entry points resolve and check their run directories before
the backend is set up, so a mistyped path fails in a second, not after the imports.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

_GLOB_CHARS = "*?["


def resolve_workdirs(value: str | Sequence[str]) -> list[Path]:
    """The run directories of ``--workdir``: a comma list, globs, or both, in given order
    (a glob's matches sorted), duplicates dropped.

    Raises:
        ValueError: an empty list, or a glob that matches no folder.
    """
    items = value.split(",") if isinstance(value, str) else list(value)
    items = [item.strip() for item in items if item.strip()]
    if not items:
        raise ValueError(f"Bad --workdir={value!r}: give a run directory, a comma list or a glob.")
    found: list[Path] = []
    for item in items:
        if any(ch in item for ch in _GLOB_CHARS):
            matches = sorted(p for p in glob.glob(item) if os.path.isdir(p))
            if not matches:
                raise ValueError(
                    f"Bad --workdir: the pattern {item!r} matches no folder. Quote the pattern "
                    "and check it from the directory you run in."
                )
            found.extend(Path(p) for p in matches)
        else:
            found.append(Path(item))
    return list(dict.fromkeys(found))


def finished_runs(workdir: str) -> list:
    """``--workdir`` of evaluate / export (a run, a comma list or globs) as the run folders,
    each checked to hold a finished run. Cheap (no Keras): call it before ``runtime.setup``.

    Raises:
        app.UsageError: an empty list or a glob matching nothing.
        FileNotFoundError: a folder that is missing or holds no finished run.
    """
    from absl import app

    from tlmed_keras.runs.rundir import check_finished_run

    try:
        workdirs = resolve_workdirs(workdir)
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    for folder in workdirs:
        check_finished_run(folder)
    return workdirs
