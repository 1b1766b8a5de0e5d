"""A lock file that works on shared file systems (NFS, Lustre), where flock/fcntl locks may be
local to a node or not implemented.

The lock is a file created with ``O_CREAT | O_EXCL`` (atomic on NFSv3+ and Lustre) that names
its owner: host, process id, Slurm job id, and a token unique to this acquisition. It is stale
when its owner is known to be dead (same host, no such process), or when it was not refreshed
for ``stale_after`` seconds (another host: a node that died cannot say so). A stale lock is
broken by renaming it to a unique name first (one rename wins), so two processes that find it
stale cannot both take the lock. Release and refresh check the token: a process whose lock was
broken (it was too slow) never removes or refreshes its successor's lock.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from pathlib import Path

log = logging.getLogger(__name__)


class LockLost(RuntimeError):
    """The lock was broken by another process (this one held it for too long)."""


def _owner() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job_id": os.environ.get("SLURM_JOB_ID", ""),
            "token": uuid.uuid4().hex}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class FileLock:
    """``with FileLock(path):`` holds ``path`` exclusively (see the module's docstring)."""

    def __init__(self, path, *, stale_after: float = 120.0, poll: float = 0.05, timeout: float | None = None):
        self.path = Path(path)
        self.stale_after = stale_after
        self.poll = poll
        self.timeout = timeout
        self.owner: dict | None = None

    def read(self) -> dict | None:
        """The current owner's record, or None (no lock, or one being written or removed)."""
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None

    def stale(self, record: dict | None) -> bool:
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return False
        if record and record.get("host") == socket.gethostname() and not _alive(int(record.get("pid", -1))):
            return True
        # another host's lock, or an unreadable one (its writer died between create and write)
        return age > self.stale_after

    def try_acquire(self) -> bool:
        owner = _owner()
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            record = self.read()
            if self.stale(record):
                self._break(record)
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(owner, f)
            f.flush()
            os.fsync(f.fileno())
        self.owner = owner
        return True

    def _break(self, record: dict | None) -> None:
        """Remove a stale lock: rename it aside (atomic: only one breaker succeeds), then delete."""
        aside = self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        moved = None
        try:
            moved = json.loads(aside.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            pass
        if record is not None and moved is not None and moved.get("token") != record.get("token"):
            # it changed between our reading and our rename: a fresh lock; put it back if we can
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
        else:
            log.warning("broke the stale lock %s of %s", self.path, moved or record or "an unknown owner")
        aside.unlink(missing_ok=True)

    def acquire(self) -> None:
        t0 = time.monotonic()
        while not self.try_acquire():
            if self.timeout is not None and time.monotonic() - t0 > self.timeout:
                raise TimeoutError(f"{self.path}: still locked by {self.read()} after {self.timeout:.0f} s")
            time.sleep(self.poll)

    def owned(self) -> bool:
        record = self.read()
        return bool(self.owner and record and record.get("token") == self.owner["token"])

    def refresh(self) -> None:
        """Tell the others this lock is alive (for holds longer than ``stale_after``)."""
        if not self.owned():
            raise LockLost(f"{self.path}: the lock was broken by another process")
        os.utime(self.path)

    def release(self) -> None:
        if self.owned():
            self.path.unlink(missing_ok=True)
        elif self.owner is not None:
            log.warning("lock %s was broken while held (it is now %s); not removing it", self.path, self.read())
        self.owner = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
        return False
