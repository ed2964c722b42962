"""Train the plan's runs one after another, each as ``python -m tlmed_keras.train`` in its own
process (its own TensorFlow state, exactly what ``train`` does, output passed through).

A run whose directory holds a finished run (``DONE``) with the same flags is skipped without
starting a process; any other run starts the trainer, which resumes an unfinished run from
its last epoch (or refuses a run directory holding other flags, naming them).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from tlmed_keras.errors import TlmedError
from tlmed_keras.recipe.members import REPO, MemberRun, member_config, train_arguments


class MemberFailedError(TlmedError, RuntimeError):
    """A member's training process failed; its own output said why."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What happened to one run: "finished before" (skipped) or "trained" (now)."""

    run: MemberRun
    state: str
    seconds: float  # wall time of its process here (0 when skipped)


def is_finished(run: MemberRun, arguments: Sequence[str]) -> bool:
    """Whether ``run.workdir`` holds a finished run (DONE) of exactly these flags."""
    from tlmed_keras.runs import rundir

    folder = rundir.RunDir(run.workdir)
    if not (folder.is_done() and folder.has_config()):
        return False
    try:
        folder.check_same_config(member_config(arguments))
    except rundir.ConfigMismatchError:
        return False  # the trainer refuses it, naming the flags: let it say so
    return True


def train_command(arguments: Sequence[str]) -> list[str]:
    """The member's training command line (this interpreter)."""
    return [sys.executable, "-m", "tlmed_keras.train", *arguments]


def _environment() -> dict[str, str]:
    """This process's environment, with this package importable from any folder."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), path) if p)}


def train_all(
    runs: Sequence[MemberRun], extra: dict[str, str], say: Callable[..., None] = print
) -> list[Outcome]:
    """Trains ``runs`` in order (see the module docstring).

    Raises:
        MemberFailedError: a member's process exited with an error; later runs do not start
            (rerunning the command keeps the finished ones and resumes this one).
    """
    outcomes = []
    for i, run in enumerate(runs, start=1):
        arguments = train_arguments(run, extra)
        if is_finished(run, arguments):
            say(f"[recipe] {i}/{len(runs)} {run.label}: finished before, kept ({run.workdir}).")
            outcomes.append(Outcome(run, "finished before", 0.0))
            continue
        command = train_command(arguments)
        say(f"[recipe] {i}/{len(runs)} {run.label}: training: {' '.join(command[1:])}", flush=True)
        start = time.perf_counter()
        code = subprocess.run(command, env=_environment(), check=False).returncode
        seconds = time.perf_counter() - start
        if code != 0:
            raise MemberFailedError(
                f"member {run.label} failed (exit {code}; its output is above). Fix the cause "
                "and rerun the same command: finished members are kept and this one resumes."
            )
        outcomes.append(Outcome(run, "trained", seconds))
    return outcomes
