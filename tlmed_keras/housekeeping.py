"""Run-directory housekeeping: one trainer per run directory, and no stale temporary files.

``RunLock`` holds an exclusive ``flock`` on the run's ``LOCK`` file for the trainer's life:
the kernel drops it when the holder exits, however it dies (``kill -9``, a crash, a container
restart), so a lock is never stale: a second trainer in the same directory refuses at once,
naming the first, and the next one after the first has died takes the directory over with
one line of notice. The file's content (pid, host, start time, command) is for humans and for
that message; it decides nothing. On a network filesystem, ``flock`` reaches other hosts only
where the filesystem supports it (NFS v4 does).

``remove_stale_temps`` deletes what a killed writer leaves: ``.<name>.<random>.tmp`` files
(``rundir.atomic_write``), ``model.tmp.keras``, and an exporter's ``.tmp-<version>-...``
folders. It is only called by a process that holds the run's lock (or, for exports, on
folders whose writer is gone), so no live writer loses a file. Standard library only.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
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


def _parse_lock(content: bytes) -> dict | None:
    """The lock's details, or None when they are empty or unreadable (a holder that died, or
    one that has not written them yet)."""
    try:
        info = json.loads(content)
    except ValueError:
        return None
    return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else None


def _read_lock(path: pathlib.Path) -> dict | None:
    try:
        return _parse_lock(path.read_bytes())
    except OSError:
        return None


def _describe(info: dict | None) -> str:
    """``process 123 on host h (started T: COMMAND)`` from a lock's content."""
    if info is None:
        return "another process (starting: its details are not written yet)"
    return (
        f"process {info['pid']} on host {info.get('host', '?')} (started "
        f"{info.get('started', '?')}: {info.get('command', '?')})"
    )


# LOCK paths this process holds, so a nested RunLock (the entry point's, then the trainer's)
# does not lock against itself: a second flock on a new descriptor would refuse.
_HELD: set[pathlib.Path] = set()


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
        self._fd: int | None = None  # the open LOCK file whose flock this lock holds

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        """Raises RunLockedError, in one line naming the holder, when a live process holds
        the directory; takes over (saying so) a lock file that no process holds."""
        folder = self.root.absolute()
        while not folder.exists():
            self._created.append(folder)
            folder = folder.parent
        self.root.mkdir(parents=True, exist_ok=True)
        if self.path.resolve() in _HELD:
            self._nested = True
            return
        for _ in range(3):  # again when a releasing holder removed the file we opened
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunLockedError(
                    f"{self.root} is in use by {_describe(_read_lock(self.path))}. Wait for it "
                    "to finish or stop it, or use another --workdir."
                ) from None
            if _is_current(fd, self.path):
                self._take(fd)
                return
            os.close(fd)
        raise RunLockedError(f"{self.path} keeps coming back: another trainer is starting here.")

    def _take(self, fd: int) -> None:
        """Notes a holder that died without releasing, then writes this process's details."""
        left = os.pread(fd, 4096, 0)
        if left.strip():
            info = _parse_lock(left)
            who = _describe(info) if info else "an unknown process"
            self.say(f"Removed a stale lock in {self.root}: {who} holds it no more.")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_lock_info()).encode(), 0)
        self._fd = fd
        _HELD.add(self.path.resolve())

    def release(self) -> None:
        """Removes the file, then drops the flock (closing it), then the empty folders it made."""
        if self._nested or self._fd is None:
            return
        _HELD.discard(self.path.resolve())
        # Removed while still locked: a process that opened this file meanwhile sees, once it
        # gets the flock, that the path names another file now, and starts again.
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None
        for folder in self._created:
            try:
                folder.rmdir()
            except OSError:  # not empty: the run wrote something, keep it (and its parents)
                break


def _is_current(fd: int, path: pathlib.Path) -> bool:
    """Whether the open file ``fd`` is still the one at ``path`` (not removed meanwhile)."""
    try:
        now = path.stat()
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (opened.st_dev, opened.st_ino) == (now.st_dev, now.st_ino)


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
