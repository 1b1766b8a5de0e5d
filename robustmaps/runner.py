"""What every leaf script shares: logging into the rule's log, thread limits, clean failures."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Iterator

from .io import InputError, StorageError
from .locks import FileLock


@contextlib.contextmanager
def script(smk) -> Iterator[logging.Logger]:
    """Context for a Snakemake ``script:``: log to ``log[0]`` (and stderr), cap threads, and turn
    an :class:`InputError` (bad input) or a :class:`StorageError` (disk full, quota, read-only) into
    one ``ERROR:`` line and exit status 1 instead of a traceback."""
    threads = str(max(1, int(getattr(smk, "threads", 1))))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = threads
    handlers = [logging.StreamHandler(sys.stderr)]
    if smk.log:
        handlers.append(logging.FileHandler(str(smk.log[0]), mode="w"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format=f"%(asctime)s {smk.rule}: %(message)s", datefmt="%H:%M:%S")
    logger = logging.getLogger(f"robustmaps.{smk.rule}")
    logger.info("%s", job_context())
    if "torch" in sys.modules:  # otherwise torch reads OMP_NUM_THREADS when first imported
        sys.modules["torch"].set_num_threads(int(threads))
    outputs = list(getattr(smk, "output", []))
    lock = job_lock(outputs[0]) if outputs else None
    if lock is not None and not lock.try_acquire() and not lock.try_acquire():  # (a stale lock is broken by the first)
        owner = lock.read() or {}
        logger.error("ERROR: %s is being written by another job still running (host %s, pid %s, Slurm job %s), "
                     "probably left by a Snakemake that was killed: cancel it (scancel, or kill the pid) or let it "
                     "finish, then run again", outputs[0], owner.get("host", "?"), owner.get("pid", "?"),
                     owner.get("slurm_job_id") or "none")
        logging.shutdown()
        sys.exit(1)
    try:
        with _refreshing(lock):
            yield logger
    except (InputError, StorageError) as exc:
        logger.error("ERROR: %s", exc)
        logging.shutdown()
        sys.exit(1)
    finally:
        if lock is not None:
            lock.release()
    logger.info(PEAK_RSS_LINE, *peak_rss_mib())
    logging.shutdown()


#: the last line of every successful job's log (robustmaps.acceptance reads it back)
PEAK_RSS_LINE = "peak resident memory: %.0f MiB (largest child process: %.0f MiB)"
PEAK_RSS_PATTERN = r"peak resident memory: (\d+) MiB \(largest child process: (\d+) MiB\)"


def peak_rss_mib() -> tuple[float, float]:
    """The kernel's high-water marks of resident memory (MiB) of this process and of the largest
    child it waited for (a search trial, a loader worker): exact peaks, where Snakemake's
    ``benchmark:`` samples every 30 s after the first 15 s and can miss a short one."""
    import resource

    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


JOB_LOCK_STALE = 600.0  # seconds without a refresh after which another node's job lock is stale


def job_lock(output):
    """The lock a job holds on its first output while it runs (``.lock-<name>`` beside it): a
    job of a killed Snakemake still running is seen by the re-run's job for the same output,
    which stops instead of writing the same files (robustmaps.locks: safe on NFS and Lustre)."""
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(out.parent / f".lock-{out.name}", stale_after=JOB_LOCK_STALE)


@contextlib.contextmanager
def _refreshing(lock, every: float = JOB_LOCK_STALE / 10):
    """Refresh ``lock`` from a daemon thread while the block runs (long jobs stay visibly alive)."""
    import threading

    if lock is None:
        yield
        return
    stop = threading.Event()

    def beat():
        while not stop.wait(every):
            try:
                lock.refresh()
            except Exception:  # noqa: BLE001 - lost or unreachable: the job goes on, release checks ownership
                return

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()


def or_exit(fn, *args, **kwargs):
    """Call ``fn``; on bad input print one ``ERROR:`` line and exit 1 (for Snakefile-time checks,
    where an exception would add Snakemake's traceback to the message)."""
    try:
        return fn(*args, **kwargs)
    except InputError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        sys.exit(1)


def job_context() -> str:
    """Where a job runs, for its log: host, Slurm job id, and the GPUs it was given
    (CUDA_VISIBLE_DEVICES as the job saw it; "unset" when the scheduler gave none)."""
    env = os.environ
    return (f"host {socket.gethostname()}, SLURM_JOB_ID={env.get('SLURM_JOB_ID', 'unset')}, "
            f"CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES', 'unset')}")


def visible_gpus(proc: str | Path = "/proc/driver/nvidia/gpus") -> int:
    """How many NVIDIA GPUs this process could use, without importing torch (the Snakefile must
    stay light): the driver's GPU entries, restricted by CUDA_VISIBLE_DEVICES when it is set."""
    proc = Path(proc)
    n = len(list(proc.iterdir())) if proc.is_dir() else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return n
    ids = [v for v in visible.split(",") if v.strip()]
    # CUDA stops at the first invalid id ("-1" is the usual way to hide every GPU)
    valid = 0
    for v in ids:
        if v.strip().lstrip("-").isdigit() and int(v) < 0:
            break
        valid += 1
    return min(n, valid)


def gpu_request(device: str, local: bool, gpus: int | None = None) -> int:
    """The ``gpu`` resource of a network rule: 1 unless its device is ``cpu``, or the workflow
    runs on this machine (local executor) and it has no GPU: the job then runs on CPU and asks
    for none, so that the ``gpu`` limit of the local profile does not serialise CPU work. On a
    cluster (any other executor) the submit host's GPUs say nothing about the nodes: ask for one."""
    if device == "cpu":
        return 0
    if local:
        return 1 if (visible_gpus() if gpus is None else gpus) > 0 else 0
    return 1


def resolve_inputs(obj, inputs):
    """A rule's params with the files it reads named, not listed (rules/common.smk
    ``name_paths``): every input name in ``obj`` (records, a dict, a list, nested) replaced by
    that input's path in ``inputs`` (``snakemake.input``). A file's ids travel with it in one
    record; nothing is paired by position with a parallel list."""
    names = set(inputs.keys())

    def walk(x):
        if isinstance(x, dict):
            return {k: walk(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v) for v in x]
        return inputs[x] if isinstance(x, str) and x in names else x

    return walk(obj)


def checkpoint_for(output) -> str:
    """Where the job that writes ``output`` (a path under ``results/``) keeps its checkpoint:
    the same path under ``results/checkpoints/``, outside every rule's outputs."""
    parts = Path(output).parts
    if "results" not in parts:
        raise ValueError(f"{output}: not under results/")
    i = parts.index("results")
    return str(Path(*parts[:i + 1], "checkpoints", *parts[i + 1:])) + ".ckpt"


# How a network rule asks the cluster for its GPU: sites differ (README "On a cluster").
GPU_FORM_ENV = "ROBUSTMAPS_SLURM_GPU"
GPU_FORMS = "gpus (default: --gpus=1), gres or gres:<type> (--gres=gpu[:<type>]:1), model:<name> " \
            "(--gpus=<name>:1), constraint:<feature> (--gpus=1 -C <feature>)"


def gpu_form(value: str | None) -> tuple[str, str]:
    """Parse ROBUSTMAPS_SLURM_GPU: (kind, argument); kind in gpus, gres, model, constraint."""
    import re

    value = (value or "gpus").strip()
    m = re.fullmatch(r"(gpus)|(gres)(?::([\w.]+))?|(model|constraint):([\w.&|!-]+)", value)
    if not m:
        raise InputError(f"{GPU_FORM_ENV}={value!r}: expected one of {GPU_FORMS}")
    if m.group(1):
        return "gpus", ""
    if m.group(2):
        return "gres", m.group(3) or ""
    return m.group(4), m.group(5)


def gpu_resources(n: int, form: tuple[str, str], local: bool) -> dict:
    """The resources of a network rule that asks for ``n`` GPUs (robustmaps.runner.gpu_request),
    in the site's form for snakemake-executor-plugin-slurm: ``gpu`` (--gpus=n), or ``gres``
    (--gres=gpu[:type]:n, no ``gpu``), ``gpu_model`` with ``gpu`` (--gpus=model:n), or ``gpu``
    with ``constraint`` (-C feature). Local runs and jobs without a GPU keep the plain ``gpu``
    count (the local profile's cap). Keys a form does not use are None (Snakemake drops them)."""
    kind, arg = form
    out = {"gpu": n, "gres": None, "gpu_model": None, "constraint": None}
    if local or n == 0 or kind == "gpus":
        return out
    if kind == "gres":
        return {**out, "gpu": None, "gres": f"gpu:{arg}:{n}" if arg else f"gpu:{n}"}
    return {**out, "gpu_model" if kind == "model" else "constraint": arg}
