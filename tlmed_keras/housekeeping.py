"""Run-directory housekeeping: one trainer per run directory, and no stale temporary files.

``RunLock`` is a ``LOCK`` file holding the trainer's pid, host, start time and command. A
second trainer in the same directory refuses at once, naming the first; a lock whose process
is gone (killed, crashed, machine rebooted) is stale and taken over with one line of notice.
Only processes on this host can be checked: a lock from another host is refused with the
command that removes it.

``remove_stale_temps`` deletes what a killed writer leaves: ``.<name>.<random>.tmp`` files
(``rundir.atomic_write``), ``model.tmp.keras``, and an exporter's ``.tmp-<version>-...``
folders. It is only called by a process that holds the run's lock (or, for exports, on
folders whose writer is gone), so no live writer loses a file. Standard library only.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import pathlib
import shutil
import socket
import sys
from collections.abc import Callable

from tlmed_keras.errors import RunLockedError

LOCK_FILE = "LOCK"
# Temporary names of rundir.atomic_write (".<name>.<random>.tmp") and of the trainer's model.
TEMP_FILE_PATTERNS = (".*.tmp", "model.tmp.keras")


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host (signal 0 checks, sends nothing)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def _lock_info() -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(sys.argv)[:300],
    }


def _read_lock(path: pathlib.Path) -> dict | None:
    """The lock's content, or None when it is unreadable (a half-written, hence stale, lock)."""
    try:
        info = json.loads(path.read_text())
        return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else None
    except (OSError, ValueError):
        return None


class RunLock:
    """``with RunLock(workdir, say):`` holds the run directory for this process.

    Creating the lock creates ``workdir`` (and missing parents); the folders created here
    that are empty again on release (the run failed before writing anything) are removed.
    Re-entrant: inside a process that already holds it (the entry point locks before the
    slow imports, the trainer again), it does nothing.
    """

    def __init__(self, workdir: os.PathLike | str, say: Callable[..., None] = print):
        self.root = pathlib.Path(workdir)
        self.path = self.root / LOCK_FILE
        self.say = say
        self._created: list[pathlib.Path] = []  # folders this lock created, deepest first
        self._nested = False  # this process held the lock already: leave it to the holder

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        """Raises RunLockedError naming the live process that holds the directory."""
        folder = self.root.absolute()
        while not folder.exists():
            self._created.append(folder)
            folder = folder.parent
        self.root.mkdir(parents=True, exist_ok=True)
        for _ in range(2):  # a second try after removing a stale lock
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._judge_existing():
                    self._nested = True
                    return
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(_lock_info(), f)
            return
        raise RunLockedError(f"{self.path} keeps coming back: another trainer is starting here.")

    def _judge_existing(self) -> bool:
        """True when this process holds the lock already; raises when a live one does;
        removes a stale lock (then False: try again)."""
        info = _read_lock(self.path)
        if info is not None and info["pid"] == os.getpid() and self._same_host(info):
            return True
        if info is not None and not self._same_host(info):
            raise RunLockedError(
                f"{self.root} is in use by process {info['pid']} on host {info.get('host')} "
                f"(started {info.get('started')}). If that process is gone, delete {self.path} "
                "and rerun."
            )
        if info is not None and pid_alive(info["pid"]):
            raise RunLockedError(
                f"{self.root} is in use by process {info['pid']} (started {info.get('started')}: "
                f"{info.get('command')}). Wait for it to finish or stop it, or use another "
                "--workdir."
            )
        who = f"process {info['pid']}" if info else "an unknown process"
        self.say(f"Removed a stale lock in {self.root}: {who} is no longer running.")
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        return False

    @staticmethod
    def _same_host(info: dict) -> bool:
        return info.get("host") == socket.gethostname()

    def release(self) -> None:
        if self._nested:
            return
        info = _read_lock(self.path)
        if info is not None and info["pid"] == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        for folder in self._created:
            try:
                folder.rmdir()
            except OSError:  # not empty: the run wrote something, keep it (and its parents)
                break


def _size(path: pathlib.Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def _remove(paths: list[pathlib.Path]) -> tuple[int, int]:
    count = size = 0
    for path in paths:
        with contextlib.suppress(OSError):
            bytes_ = _size(path)
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
            count, size = count + 1, size + bytes_
    return count, size


def _notice(count: int, size: int, where: pathlib.Path, say: Callable[..., None]) -> None:
    if count:
        say(
            f"Removed {count} temporary file{'s' if count > 1 else ''} ({size / 1e6:.1f} MB) "
            f"left by an interrupted run in {where}."
        )


def remove_stale_temps(folders: list[os.PathLike | str], say: Callable[..., None] = print) -> int:
    """Deletes the temporary files of killed writers in ``folders`` (not recursive) and says
    so in one line. Call only while holding the folders' ``RunLock``. Returns the count."""
    paths = [
        path
        for folder in map(pathlib.Path, folders)
        if folder.is_dir()
        for pattern in TEMP_FILE_PATTERNS
        for path in folder.glob(pattern)
        if path.is_file()
    ]
    count, size = _remove(paths)
    if folders:
        _notice(count, size, pathlib.Path(folders[0]), say)
    return count


def _export_writer_gone(name: str) -> bool:
    """``.tmp-<version>-<pid>-<random>`` (pid gone) or the older ``.tmp-<version>-<random>``."""
    parts = name.split("-")
    if len(parts) == 4 and parts[2].isdigit():
        return not pid_alive(int(parts[2]))
    return len(parts) == 3  # written before the pid was in the name: its writer is long gone


def remove_stale_export_temps(
    model_base: os.PathLike | str, say: Callable[..., None] = print
) -> int:
    """Deletes an exporter's ``.tmp-*`` folders in ``model_base`` (``EXPORT_DIR/<name>``)
    whose writing process is gone, and says so in one line. Returns the count."""
    base = pathlib.Path(model_base)
    if not base.is_dir():
        return 0
    paths = [p for p in base.glob(".tmp-*") if p.is_dir() and _export_writer_gone(p.name)]
    count, size = _remove(paths)
    _notice(count, size, base, say)
    return count
