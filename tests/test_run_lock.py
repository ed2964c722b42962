"""housekeeping.RunLock: a flock the kernel drops when its holder dies, however it dies."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest

from tlmed_keras import housekeeping
from tlmed_keras.errors import RunLockedError

ROOT = pathlib.Path(__file__).resolve().parents[1]
HOLDER = """
import sys, time
from tlmed_keras.housekeeping import RunLock
lock = RunLock(sys.argv[1], say=lambda *a: None)
lock.acquire()
print("held", flush=True)
time.sleep(120)
"""


def hold_in_another_process(workdir: pathlib.Path) -> subprocess.Popen:
    """A live process holding ``workdir``'s lock (returns once it holds it)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(workdir)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def wait_until_dead(process: subprocess.Popen) -> None:
    """Until the kernel has ended ``process`` (a zombie: not reaped, its files closed)."""
    stat = pathlib.Path(f"/proc/{process.pid}/stat")
    for _ in range(500):
        if stat.is_file() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return
        time.sleep(0.01)
    raise AssertionError(f"process {process.pid} did not die")


def test_a_lock_held_by_a_live_process_refuses_naming_it_in_one_line(tmp_path):
    holder = hold_in_another_process(tmp_path)
    try:
        with pytest.raises(RunLockedError) as refused:
            housekeeping.RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    message = str(refused.value)
    assert "\n" not in message
    assert f"is in use by process {holder.pid} on host {socket.gethostname()}" in message
    assert "Wait for it to finish or stop it, or use another --workdir." in message


@pytest.mark.skipif(not pathlib.Path("/proc/self/stat").is_file(), reason="needs Linux /proc")
def test_a_lock_left_by_a_process_killed_with_sigkill_never_blocks_even_as_a_zombie(tmp_path):
    holder = hold_in_another_process(tmp_path)
    holder.send_signal(signal.SIGKILL)
    wait_until_dead(holder)  # not reaped: kill(pid, 0) would still call it alive
    said: list[str] = []
    try:
        with housekeeping.RunLock(tmp_path, said.append) as lock:
            assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    finally:
        holder.wait()
    assert len(said) == 1 and said[0].startswith(f"Removed a stale lock in {tmp_path}: ")
    assert f"process {holder.pid} on host" in said[0] and said[0].endswith("holds it no more.")
    assert not (tmp_path / housekeeping.LOCK_FILE).exists()


def test_a_stale_lock_file_naming_pid_1_on_this_host_never_blocks(tmp_path):
    # As after a container restart: PID 1 is alive again, but holds no lock here.
    info = {"pid": 1, "host": socket.gethostname(), "started": "earlier", "command": "old"}
    (tmp_path / housekeeping.LOCK_FILE).write_text(json.dumps(info))
    said: list[str] = []
    with housekeeping.RunLock(tmp_path, said.append):
        assert json.loads((tmp_path / housekeeping.LOCK_FILE).read_text())["pid"] == os.getpid()
    assert said == [
        f"Removed a stale lock in {tmp_path}: process 1 on host {socket.gethostname()} "
        "(started earlier: old) holds it no more."
    ]


def test_the_lock_file_tells_humans_who_holds_it(tmp_path):
    with housekeeping.RunLock(tmp_path) as lock:
        info = json.loads(lock.path.read_text())
    assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
    assert info["started"] and info["command"]


def test_the_next_holder_after_a_release_gets_it_at_once(tmp_path):
    holder = hold_in_another_process(tmp_path)
    holder.terminate()
    holder.wait()
    said: list[str] = []
    with housekeeping.RunLock(tmp_path, said.append):
        pass
    assert said and "holds it no more" in said[0]  # SIGTERM: the holder's file stays behind
    with housekeeping.RunLock(tmp_path, said.append):
        pass
    assert len(said) == 1  # a released lock leaves nothing to take over
