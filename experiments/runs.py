"""Plan and execute a sweep: flagfiles x seeds, one independent process per run.

A run is identified by ``(flagfile, seed)`` and lives in ``OUT/runs/<flagfile-stem>/seed<k>/``,
which is also the trainer's ``--workdir``. Beside the trainer's files the runner writes:

- ``sweep.log``   stdout + stderr of the run's process,
- ``sweep.json``  ``{"state": "running"|"done"|"failed", "rc", "seconds", "command", ...}``,
- ``sweep.lock``  while a process of this runner works on the run (another worker skips it).

A run is finished when the trainer wrote ``DONE`` and ``metrics.json``; finished runs are
never started again. Unfinished runs (failed, killed) are started again by the next
invocation (the trainer resumes from its last checkpoint).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import json
import os
import pathlib
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence

DEFAULT_COMMAND = (
    "{python} -m tlmed_keras.train --flagfile={flagfile} --seed={seed} --workdir={workdir}"
)
TEMPLATE_FIELDS = ("python", "flagfile", "seed", "workdir")
RUNS_DIR = "runs"
LOG_FILE = "sweep.log"
STATUS_FILE = "sweep.json"
LOCK_FILE = "sweep.lock"
DONE_FILE = "DONE"  # written last by the trainer (tlmed_keras.runs.rundir)
METRICS_FILE = "metrics.json"


class SweepError(ValueError):
    """A bad sweep argument (names the value and what to do)."""


@dataclasses.dataclass(frozen=True)
class Run:
    """One (flagfile, seed) of the sweep."""

    flagfile: pathlib.Path
    seed: int
    workdir: pathlib.Path

    @property
    def cell(self) -> str:
        """The table row this run belongs to: the flagfile's stem."""
        return self.flagfile.stem

    @property
    def name(self) -> str:
        return f"{self.cell}/seed{self.seed}"

    def is_finished(self) -> bool:
        return (self.workdir / DONE_FILE).is_file() and (self.workdir / METRICS_FILE).is_file()


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or ``"0-4"`` (inclusive) or a mix -> sorted unique seeds.

    Raises:
        SweepError: an empty list, a negative or non-integer seed.
    """
    seeds: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            if "-" in part.lstrip("-"):
                lo, hi = part.split("-", 1)
                first, last = int(lo), int(hi)
                if first > last:
                    raise ValueError
                seeds.update(range(first, last + 1))
            else:
                seeds.add(int(part))
        except ValueError:
            raise SweepError(
                f"Bad --seeds={text!r}: {part!r} is not a seed; use e.g. 0,1,2 or 0-4."
            ) from None
    if not seeds or min(seeds) < 0:
        raise SweepError(f"Bad --seeds={text!r}: give one or more seeds >= 0, e.g. 0,1,2.")
    return sorted(seeds)


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (0 <= i < n) -> ``(i, n)``; ``""`` -> ``(0, 1)``."""
    if not text:
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise SweepError(f"Bad --shard={text!r}: use i/n, e.g. 0/4 (shards 0..n-1).") from None
    if not 0 <= i < n:
        raise SweepError(f"Bad --shard={text!r}: need 0 <= i < n (shards 0..{max(n, 1) - 1}).")
    return i, n


def expand_flagfiles(patterns: Sequence[str]) -> list[pathlib.Path]:
    """Globs (comma-split by the caller) -> existing flagfiles, in order, without repeats.

    Raises:
        SweepError: a pattern matching nothing, or two flagfiles with the same stem (their
            runs would share a workdir).
    """
    files: list[pathlib.Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        matches = [m for m in matches if os.path.isfile(m)]
        if not matches:
            raise SweepError(
                f"Bad --flagfiles: {pattern!r} matches no file (relative paths are taken "
                f"from {os.getcwd()}; quote globs so the shell leaves them to the runner)."
            )
        files += [pathlib.Path(m) for m in matches if pathlib.Path(m) not in files]
    stems: dict[str, pathlib.Path] = {}
    for f in files:
        if f.stem in stems:
            raise SweepError(
                f"Bad --flagfiles: {stems[f.stem]} and {f} share the stem {f.stem!r}, so their "
                "runs would share a workdir; rename one or sweep them into different --out."
            )
        stems[f.stem] = f
    return files


def plan(
    flagfiles: Sequence[pathlib.Path], seeds: Iterable[int], out: os.PathLike | str
) -> list[Run]:
    """Every (flagfile, seed) run, flagfile-major, each with its workdir under ``out``."""
    root = pathlib.Path(out).resolve() / RUNS_DIR
    seeds = list(seeds)
    return [Run(f, s, root / f.stem / f"seed{s}") for f in flagfiles for s in seeds]


def shard(runs: Sequence[Run], index: int, count: int) -> list[Run]:
    """Every ``count``-th run starting at ``index`` (shards partition the plan)."""
    return [r for k, r in enumerate(runs) if k % count == index]


def check_template(template: str) -> None:
    """Raises SweepError when the command template has unknown ``{fields}``."""
    try:
        template.format(**{k: "x" for k in TEMPLATE_FIELDS})
    except (KeyError, IndexError, ValueError) as e:
        raise SweepError(
            f"Bad --command={template!r}: {e!r}; the fields it may use are "
            f"{', '.join('{' + k + '}' for k in TEMPLATE_FIELDS)}."
        ) from None


def command(run: Run, template: str = DEFAULT_COMMAND, extra: str = "") -> list[str]:
    """The argv of ``run``: the template filled in (each value shell-quoted), + ``extra``."""
    values = {
        "python": sys.executable,
        "flagfile": str(run.flagfile),
        "seed": str(run.seed),
        "workdir": str(run.workdir),
    }
    quoted = {k: shlex.quote(v) for k, v in values.items()}
    return shlex.split(template.format(**quoted)) + shlex.split(extra)


def flagfile_digest(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def read_status(run: Run) -> dict:
    path = run.workdir / STATUS_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _write_status(run: Run, status: dict) -> None:
    path = run.workdir / STATUS_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(status, indent=2) + "\n")
    os.replace(tmp, path)


def log_tail(run: Run, lines: int = 20) -> str:
    """The last ``lines`` non-empty lines of the run's log ("" when there is none)."""
    path = run.workdir / LOG_FILE
    if not path.is_file():
        return ""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - 64_000))
        text = f.read().decode("utf-8", "replace")
    # Progress bars rewrite their line with \r: keep only what the line ended as.
    kept = [ln.rsplit("\r", 1)[-1].rstrip() for ln in text.splitlines()]
    return "\n".join([ln for ln in kept if ln.strip()][-lines:])


@contextlib.contextmanager
def _lock(run: Run):
    """Holds ``sweep.lock`` for the run, or yields False when another live process has it.

    A lock left by a dead process on this host is taken over; one from another host is
    respected (delete it by hand if that worker died).
    """
    path = run.workdir / LOCK_FILE
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if not _stale(path):
                yield False
                return
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        try:
            yield True
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return
    yield False


def is_running(run: Run) -> bool:
    """Whether a live worker holds the run's lock (a dead one's lock on this host does not
    count; another host's lock is believed)."""
    path = run.workdir / LOCK_FILE
    return path.is_file() and not _stale(path)


def _stale(path: pathlib.Path) -> bool:
    try:
        owner = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False  # being written right now
    if owner.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, ValueError):
        return False
    return False


def execute(
    run: Run,
    template: str = DEFAULT_COMMAND,
    extra: str = "",
    timeout_s: float = 0,
    say: Callable[[str], None] = print,
) -> str:
    """Runs one run in its own process unless it is finished or locked by another worker.

    Returns:
        "skipped" (already finished), "busy" (another worker holds it), "done" or "failed".
        A failure never raises: its return code and log tail are in ``sweep.json``.
    """
    if run.is_finished():
        return "skipped"
    run.workdir.mkdir(parents=True, exist_ok=True)
    with _lock(run) as mine:
        if not mine:
            say(f"[sweep] {run.name}: another worker is running it; skipping.")
            return "busy"
        if run.is_finished():  # finished while we waited for the lock
            return "skipped"
        return _execute_locked(run, command(run, template, extra), timeout_s, say)


def _execute_locked(run: Run, argv: list[str], timeout_s: float, say) -> str:
    status = {
        "state": "running",
        "run": run.name,
        "flagfile": str(run.flagfile),
        "flagfile_sha256": flagfile_digest(run.flagfile) if run.flagfile.is_file() else None,
        "seed": run.seed,
        "command": shlex.join(argv),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    _write_status(run, status)
    say(f"[sweep] {run.name}: {status['command']}")
    start = time.perf_counter()
    rc: int | None
    with open(run.workdir / LOG_FILE, "ab") as log:
        log.write(f"\n=== {status['started']} {status['command']}\n".encode())
        log.flush()
        try:
            proc = subprocess.run(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=timeout_s or None,
                check=False,
            )
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = None
            log.write(f"\n[sweep] killed after --timeout_s={timeout_s:g} s\n".encode())
        except OSError as e:  # the command itself could not start
            rc = None
            log.write(f"\n[sweep] could not start {argv[0]!r}: {e}\n".encode())
    seconds = round(time.perf_counter() - start, 1)
    finished = rc == 0 and run.is_finished()
    status.update(state="done" if finished else "failed", rc=rc, seconds=seconds)
    if rc == 0 and not finished:
        status["error"] = "exited 0 but left no DONE + metrics.json in the workdir"
    elif not finished:
        status["error"] = log_tail(run, 20)
    status["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    _write_status(run, status)
    tail = "" if finished else f" (rc={rc}): {status['error'].splitlines()[-1:]}"
    say(f"[sweep] {run.name}: {status['state']} in {seconds:.0f} s{tail}")
    return status["state"]


def list_commands(runs: Sequence[Run], out: os.PathLike | str, passthrough: Sequence[str]) -> str:
    """One shell command per unfinished run: the runner itself on that single run (so each
    keeps its log, status and skip-if-finished), for a scheduler / ``xargs -P`` / SLURM."""
    lines = []
    for run in runs:
        if run.is_finished():
            continue
        argv = [
            "python",
            "-m",
            "experiments.sweep",
            f"--flagfiles={run.flagfile}",
            f"--seeds={run.seed}",
            f"--out={out}",
            "--nocollect",
            *passthrough,
        ]
        lines.append(shlex.join(argv))
    return "\n".join(lines)
