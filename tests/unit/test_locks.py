"""robustmaps.locks.FileLock with real processes: exclusion, a killed owner, another node's lock,
and a slow owner that cannot remove its successor's lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from robustmaps.locks import FileLock, LockLost

COUNTER = """
import sys, time
from pathlib import Path
from robustmaps.locks import FileLock
lock, counter = sys.argv[1], Path(sys.argv[2])
for _ in range(int(sys.argv[3])):
    with FileLock(lock, poll=0.001):
        n = int(counter.read_text())
        time.sleep(0.001)  # a read-modify-write that interleaves without the lock
        counter.write_text(str(n + 1))
"""


def test_processes_never_hold_the_lock_together(tmp_path):
    counter = tmp_path / "n"
    counter.write_text("0")
    procs = [subprocess.Popen([sys.executable, "-c", COUNTER, str(tmp_path / "lock"), str(counter), "40"])
             for _ in range(3)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0]
    assert counter.read_text() == "120" and not (tmp_path / "lock").exists()


def test_a_killed_owner_on_this_host_is_taken_over_at_once(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from robustmaps.locks import FileLock; "
                               "l = FileLock(sys.argv[1]); l.acquire(); print('held', flush=True); time.sleep(600)",
                               str(tmp_path / "lock")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    record = json.loads((tmp_path / "lock").read_text())
    assert record["pid"] == holder.pid and record["host"] and "slurm_job_id" in record
    lock = FileLock(tmp_path / "lock", stale_after=3600, timeout=5)
    with pytest.raises(TimeoutError):  # alive: not taken, whatever the wait
        FileLock(tmp_path / "lock", stale_after=3600, timeout=0.3).acquire()
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    lock.acquire()  # dead: broken at once, long before stale_after
    assert lock.owned()
    lock.release()
    assert not (tmp_path / "lock").exists() and not list(tmp_path.glob("lock.stale-*"))


def test_another_nodes_lock_is_broken_only_once_it_is_stale(tmp_path):
    path = tmp_path / "lock"
    path.write_text(json.dumps({"host": "node-elsewhere", "pid": 1, "slurm_job_id": "42", "token": "t"}))
    with pytest.raises(TimeoutError):
        FileLock(path, stale_after=60, timeout=0.3).acquire()
    old = time.time() - 120
    os.utime(path, (old, old))
    with FileLock(path, stale_after=60, timeout=5) as lock:
        assert json.loads(path.read_text())["token"] == lock.owner["token"]


def test_an_owner_whose_lock_was_broken_cannot_release_its_successors(tmp_path):
    path = tmp_path / "lock"
    slow = FileLock(path, stale_after=1)
    slow.acquire()
    old = time.time() - 10
    os.utime(path, (old, old))  # held past stale_after without a refresh
    successor = FileLock(path, stale_after=1, timeout=5)
    successor.acquire()
    with pytest.raises(LockLost):
        slow.refresh()
    slow.release()  # does not remove the successor's lock
    assert successor.owned() and path.exists()
    successor.refresh()
    successor.release()
    assert not path.exists()
