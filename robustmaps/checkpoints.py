"""Checkpoints of long optimisations (masks), handed to the method code by the job layer.

The optimisers in :mod:`robustmaps.masks` open no files: a job gives them a :class:`Checkpoint`,
which they ask for a saved state when they start (``load``) and offer their state at the end of
every epoch (``step``). The checkpoint decides when to write (every ``every_seconds``, 0: every
epoch), writes atomically (one file per optimisation, outside the outputs), and on SIGTERM
(what Slurm sends before a time-limit or preemption kill) writes the state of the epoch that
just ended and ends the process with status 143 (:class:`Terminated`), so that a re-run resumes
it. A saved state is resumed only if it was written for the same ``fingerprint`` (settings and
inputs), on the same kind of device and with the same torch version; otherwise it is ignored,
saying why.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch

from .io import atomic_path

log = logging.getLogger(__name__)


def plain(obj):
    """``obj`` with numpy scalars and arrays and subclasses of str, int, float (such as
    ``torch.__version__``) turned into plain Python values, through dicts, lists and tuples;
    tensors and torch's own state dicts are kept. Result files are read with
    ``torch.load(weights_only=True)``, which refuses every other type (it imports no code), so
    what they hold must be plain; anything else is refused here, when the file is written."""
    if obj is None or isinstance(obj, torch.Tensor) or type(obj) in (bool, int, float, str):
        return obj
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    for kind in (bool, int, float, str):
        if isinstance(obj, kind):
            return kind(obj)
    if type(obj) is dict:
        return {k: plain(v) for k, v in obj.items()}
    if type(obj) in (list, tuple):
        return type(obj)(plain(v) for v in obj)
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj  # a module's state dict (an OrderedDict with its version metadata)
    raise TypeError(f"cannot store a {type(obj).__name__} in a result file: not a plain type")


class Terminated(SystemExit):
    """SIGTERM: the job saved its state and exits with status 143 (128 + SIGTERM); a re-run
    resumes it."""

    def __init__(self):
        super().__init__(128 + signal.SIGTERM)


def device_description(dev: torch.device | str) -> str:
    """The device a run actually used, GPU model included (``cpu``, ``cuda (NVIDIA H100 80GB HBM3)``)."""
    dev = torch.device(dev)
    return f"cuda ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else dev.type


class Checkpoint:
    """One optimisation's checkpoint file. Use as a context manager: inside it, SIGTERM only sets
    a flag, and the next ``step`` saves and exits (the epoch in flight finishes first)."""

    def __init__(self, path, fingerprint: str, *, device: torch.device | str = "cpu", every_seconds: float = 0.0):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.here = {"device": device_description(device), "torch": str(torch.__version__)}
        self.every_seconds = every_seconds
        self.last = time.monotonic()
        self.terminated = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
        return False

    def _on_sigterm(self, signum, frame):
        log.warning("SIGTERM: saving at the end of this epoch, then exiting")
        self.terminated = True

    def load(self) -> dict | None:
        """The saved state, or None (no file, or one written for other settings, inputs, device
        or torch: ignored, saying why)."""
        if not self.path.exists():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a checkpoint only saves time
            log.warning("ignoring checkpoint %s: unreadable (%s)", self.path, str(exc).splitlines()[0][:200])
            return None
        if not isinstance(saved, dict) or saved.get("fingerprint") != self.fingerprint:
            log.info("ignoring checkpoint %s: written for other settings or inputs", self.path)
            return None
        if {k: saved.get(k) for k in self.here} != self.here:
            log.info("ignoring checkpoint %s: written on %s with torch %s, this job runs on %s with torch %s",
                     self.path, saved.get("device"), saved.get("torch"), self.here["device"], self.here["torch"])
            return None
        log.info("resuming from %s after epoch %s", self.path, saved["state"].get("epoch"))
        return saved["state"]

    def save(self, state: dict) -> None:
        with atomic_path(self.path) as tmp:
            torch.save({"fingerprint": self.fingerprint, **self.here, "state": plain(state)}, tmp)
        self.last = time.monotonic()

    def step(self, state_fn) -> None:
        """End of an epoch: save ``state_fn()`` when due, or at once after SIGTERM, then exit."""
        if self.terminated:
            self.save(state_fn())
            log.warning("SIGTERM: the state is in %s; exiting (a re-run resumes from it)", self.path)
            raise Terminated()
        if self.every_seconds <= 0 or time.monotonic() - self.last >= self.every_seconds:
            self.save(state_fn())

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def fingerprint(settings: dict, files) -> str:
    """Hash of everything a training run depends on: its settings and its input files' contents
    (tables whole; the store, too large to hash at every start, by its size and 64 KiB read at 32
    evenly spaced offsets). Neither paths nor times enter it, so that two runs in different
    directories write the same model files."""
    import hashlib
    import json
    import os

    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for f in files:
        if str(f).endswith(".npy"):
            size = os.stat(f).st_size
            h.update(str(size).encode())
            with open(f, "rb") as fh:
                for k in range(32):
                    fh.seek(size * k // 32)
                    h.update(fh.read(1 << 16))
        else:
            h.update(Path(f).read_bytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------- rule entries
def job_checkpoint(path, minutes: float, settings: dict, inputs, device):
    """A rule entry's :class:`~robustmaps.checkpoints.Checkpoint` at ``path`` (None: none),
    valid for exactly these settings and input files."""
    if not path:
        return None

    return Checkpoint(path, fingerprint(settings, [f for f in inputs if f]), device=device,
                      every_seconds=60 * minutes)
