"""Hyperparameter search (study 2.2.2, seed 003 ch. 2) with optuna, run as parallel cluster jobs.

Several worker jobs share one study through optuna's file-based journal storage (a log file
appended under a lock: safe on a shared cluster file system, no database server). Each worker:

1. marks the trials it left RUNNING in an earlier, killed run as FAIL (``interrupted``): the
   journal storage has no heartbeat, and a worker id (the ``{worker}`` wildcard) has one job at
   a time, so its RUNNING trials at start-up are dead;
2. under a reservation lock, counts the trials that are done or running (interrupted ones do
   not count) and asks for a new trial only while the count is below ``n_trials``: together
   the workers finish exactly ``n_trials`` trials, and a re-run after an interruption
   continues the study instead of starting over;
3. trains each trial in a child process (a crash, e.g. the kernel killing a process out of
   memory, fails that trial, not the worker), reports each epoch's validation balanced
   accuracy to the pruner, and records the trial's value (the best epoch's validation balanced
   accuracy, maximised), or FAIL with the error, or PRUNED.

The study's name holds a hash of the search's settings and data, so a changed configuration
starts a new study in the same journal. Samplers: ``random`` (seeded per trial number, so the
set of trials does not depend on the number of workers: deterministic on CPU), ``tpe``
(constant liar for parallel workers; not deterministic in parallel), ``gp``; the hand-made
baseline (``hpo.baseline``) is enqueued as trial 0.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import threading
import traceback
from pathlib import Path

import numpy as np
import pandas as pd

from .checkpoints import Terminated, fingerprint
from .config import ARCHITECTURE_KEYS, SEARCH_KEYS, TRAINING_KEYS
from .io import InputError, atomic_path
from .locks import FileLock
from .models import build_model
from .preprocess import open_store
from .settings import Hyperband, Search, Searched
from .splits import read_split_rows
from .training import TrainConfig, result_settings, train

log = logging.getLogger(__name__)

SAMPLERS = ("random", "tpe", "gp")
PRUNERS = ("none", "hyperband")


class InfeasibleTrial(ValueError):
    """A point of the search space that cannot be trained on this input (recorded as FAIL)."""


# ----------------------------------------------------------------------------- seed 003 eq. 2.20
def p_top_found(n: int, top_fraction: float, population: int = 100_000) -> float:
    """Probability that ``n`` random draws without replacement from ``population`` models include
    at least one of the top ``top_fraction`` (eq. 2.20: 1 - prod_{k<n} (1 - M / (N - k)))."""
    m = top_fraction * population
    k = np.arange(n)
    return float(1.0 - np.prod(1.0 - m / (population - k)))


def draws_needed(p: float, top_fraction: float, population: int = 100_000) -> int:
    """Smallest number of random draws whose probability of including a top-``top_fraction``
    model exceeds ``p`` (seed 003 Table 2.2)."""
    m = top_fraction * population
    none = 1.0
    for n in range(1, population + 1):
        none *= 1.0 - m / (population - n + 1)
        if 1.0 - none > p:
            return n
    return population


# ------------------------------------------------------------------------------- search space
def max_blocks(in_shape) -> int:
    """Most convolutional blocks an input allows: each block halves the grid (rounding up);
    blocks past a 1-voxel grid downsample nothing."""
    return max(1, math.ceil(math.log2(max(2, min(in_shape)))))


def suggest(trial, space: dict[str, Searched], baseline: dict) -> dict:
    """The trial's point: every key of ``space`` suggested (a range -> int or float by the bounds'
    type; choices -> categorical), the others from ``baseline``."""
    point = {}
    for key in SEARCH_KEYS:
        spec = space.get(key)
        if spec is None:
            point[key] = baseline[key]
        elif spec.choices is not None:
            point[key] = trial.suggest_categorical(key, list(spec.choices))
        elif isinstance(spec.low, int) and isinstance(spec.high, int) and not spec.log:
            point[key] = trial.suggest_int(key, spec.low, spec.high)
        else:
            point[key] = trial.suggest_float(key, float(spec.low), float(spec.high), log=bool(spec.log))
    return point


def settings_for(point: dict, train: dict) -> dict:
    """TrainConfig settings of a point: the paper CNN with the point's architecture, its training
    values, the rest (epochs, patience, cache ...) from ``train``."""
    arch = {"name": "paper", **{k: point[k] for k in ARCHITECTURE_KEYS}}
    return {**train, "architecture": arch, **{k: point[k] for k in TRAINING_KEYS}}


def check_feasible(point: dict, in_shape, max_parameters: int) -> int:
    """Raise :class:`InfeasibleTrial` for a point too large for the input (more blocks than the
    grid allows, or more parameters than ``max_parameters``); else return the parameter count."""
    limit = max_blocks(in_shape)
    if point["n_blocks"] > limit:
        raise InfeasibleTrial(f"{point['n_blocks']} blocks on a {tuple(in_shape)} grid: at most {limit} "
                              "(each block halves it)")
    arch = {"name": "paper", **{k: point[k] for k in ARCHITECTURE_KEYS}}
    n = sum(p.numel() for p in build_model(arch, tuple(in_shape)).parameters())
    if n > max_parameters:
        raise InfeasibleTrial(f"{n:,} parameters > hpo.max_parameters {max_parameters:,}")
    return n


# ----------------------------------------------------------------------------- optuna plumbing
def make_sampler(kind: str, seed: int):
    import optuna

    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    if kind == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    raise ValueError(f"hpo.sampler must be one of {SAMPLERS}, got {kind!r}")


def make_pruner(kind: str, hyperband: Hyperband, max_epochs: int):
    import optuna

    if kind == "none":
        return optuna.pruners.NopPruner()
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=hyperband.min_resource,
                                              max_resource=hyperband.max_resource or max_epochs,
                                              reduction_factor=hyperband.reduction_factor)
    raise ValueError(f"hpo.pruner must be one of {PRUNERS}, got {kind!r}")


def storage(journal) -> object:
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    Path(journal).parent.mkdir(parents=True, exist_ok=True)
    backend = JournalFileBackend(str(journal), lock_obj=JournalFileOpenLock(str(journal)))
    return optuna.storages.JournalStorage(backend)


def repair_journal(journal) -> list[str]:
    """Find and drop half-written records of the shared journal (a worker killed, or a disk full,
    in the middle of an append): a last line without its newline, which optuna's readers skip
    until another worker appends behind it and every reader then fails on the joined line; and
    such a joined line, whose complete record (from its last ``{"op_code"``) is kept. The
    dropped half was never read by anyone, so the study is what every reader saw. Runs under
    optuna's own journal lock; returns what it repaired (empty: nothing). Damage it cannot
    attribute to a cut append stops with one message naming the journal and the line."""
    from optuna.storages.journal import JournalFileOpenLock

    path = Path(journal)
    if not path.exists():
        return []
    lock = JournalFileOpenLock(str(path))
    lock.acquire()
    try:
        lines = path.read_bytes().split(b"\n")
        tail = lines.pop()  # after the last newline: empty when the file ends with one
        kept, notes = [], []
        for number, line in enumerate(lines, 1):
            if _record(line):
                kept.append(line)
                continue
            start = line.rfind(b'{"op_code"')
            if start > 0 and _record(line[start:]):
                kept.append(line[start:])
                notes.append(f"line {number}: a half-written record ({start} bytes) before a complete one: half dropped")
                continue
            raise InputError(f"{path}: line {number} is not a journal record and is not a cut append either "
                             f"({line[:60]!r}...): the study cannot be read; move the journal aside (a new search "
                             "starts) or restore it")
        if tail:
            notes.append(f"the last record was cut after {len(tail)} bytes (a killed or full-disk append): dropped")
        if notes:
            with atomic_path(path) as tmp:
                tmp.write_bytes(b"".join(line + b"\n" for line in kept))
        return notes
    finally:
        lock.release()


def _record(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        return False


class _Reservation:
    """A lock around "count the trials, then ask for one", so that two workers never both take
    the last slot: a lock file safe on NFS and Lustre (robustmaps.locks: O_EXCL, owner recorded,
    a dead local owner's lock broken at once, another node's after 60 s without a refresh)."""

    def __init__(self, journal):
        self.lock = FileLock(f"{journal}.reserve", stale_after=60)

    def __enter__(self):
        self.lock.acquire()
        return self

    def __exit__(self, *exc):
        self.lock.release()


def study_name(settings: dict, files) -> str:
    """``hpo-<hash>`` of the search's settings and input files: a changed configuration starts a
    new study (in the same journal) instead of mixing trials of two searches."""
    return "hpo-" + fingerprint(settings, files)[:16]


def _interrupted(t) -> bool:
    return bool(t.user_attrs.get("interrupted"))


def counted(trials) -> list:
    """The trials that count towards ``n_trials``: finished (complete, pruned, failed with an
    error) or running, not those a dead worker left behind."""
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL,
              optuna.trial.TrialState.RUNNING)
    return [t for t in trials if t.state in states and not _interrupted(t)]


def origin(trial) -> int:
    """The number of the trial that first drew this point: a point enqueued again after an
    interruption keeps it, and with it its checkpoint (``<study>-trial-<origin>.pt``)."""
    return int(trial.user_attrs.get("origin", trial.number))


def interrupt(study, storage, trial, why: str) -> None:
    """Mark a RUNNING trial (optuna's ``Trial`` or ``FrozenTrial``) of ``study`` (whose storage is
    ``storage``) as FAIL, ``interrupted``, and enqueue its point again (keeping its origin, hence its
    checkpoint, and the baseline mark), so that the search evaluates the same points as an
    uninterrupted run would. Optuna has no study method that ends another process's trial; the
    storage's own (public) interface does it, by the trial's number."""
    import optuna

    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name),
                                                               trial.number)
    storage.set_trial_user_attr(trial_id, "interrupted", True)
    storage.set_trial_user_attr(trial_id, "error", f"interrupted: {why}")
    storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
    again = {k: v for k, v in trial.user_attrs.items() if k == "baseline"}
    study.enqueue_trial(dict(trial.params), user_attrs={**again, "retry_of": trial.number, "origin": origin(trial)})


def release_dead_trials(study, storage, worker: int, workers: int | None = None) -> list[int]:
    """Mark the RUNNING trials left by a killed run of this worker, and those of workers that no
    longer exist (``hpo.workers`` lowered to ``workers`` after a kill: no job of theirs will come
    back), as interrupted and enqueue their points again (:func:`interrupt`)."""
    import optuna

    numbers = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = t.user_attrs.get("worker")
        if owner == worker:
            interrupt(study, storage, t, "its worker died; re-run")
            numbers.append(t.number)
        elif workers is not None and owner is not None and owner >= workers:
            interrupt(study, storage, t, f"worker {owner} no longer exists (hpo.workers is {workers}); re-run")
            numbers.append(t.number)
    return numbers


class Sigterm:
    """SIGTERM to a search worker (what Slurm sends before a time-limit or preemption kill):
    remembered and passed on to the trial's process, which saves its checkpoint at once and
    exits; the worker then marks the trial interrupted, enqueues its point again and exits with
    143, and a re-run resumes the point from its checkpoint."""

    def __init__(self):
        self.received = False
        self.child = None
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handler)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        return False

    def _handler(self, signum, frame):
        self.received = True
        log.warning("SIGTERM: the running trial saves its checkpoint; the worker then exits")
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)


# ----------------------------------------------------------------------------- one worker
def join_study(study, storage, journal, search: Search, worker: int, workers: int | None, name: str) -> None:
    """A worker's start in the shared study (under the journal's reservation): the trials left
    running by a killed run of this worker, or by a worker that no longer exists, are marked
    failed (interrupted) and their points enqueued again; an empty study gets the baseline point
    as its first trial."""
    with _Reservation(journal):
        dead = release_dead_trials(study, storage, worker, workers)
        if dead:
            log.warning("worker %d: trials %s were left running by a killed run of this worker or by a worker that "
                        "no longer exists: marked failed (interrupted), their points enqueued again; they do not "
                        "count towards n_trials", worker, dead)
        if not study.get_trials(deepcopy=False):
            baseline = {k: search.baseline[k] for k in search.space}
            study.enqueue_trial(baseline, user_attrs={"baseline": True})
            log.info("study %s: baseline enqueued as the first trial: %s", name, baseline)


def run_worker(study, storage, journal, search: Search, worker: int, *, name: str, in_shape, paths: dict,
               device: str, threads: int, cache_size: int, checkpoint_every: float) -> bool:
    """One worker's trials until the study holds ``search.n_trials`` (done or failed, over every
    worker): under the journal's reservation it asks for a trial (the sampler seeded by the
    trial's slot, so that random search draws the same points whatever the workers), then
    suggests its point, refuses an infeasible one and trains it in a child process
    (:func:`run_trial`, checkpoint ``<journal folder>/checkpoints/<study>-trial-<origin>.pt``,
    which follows the point), and tells the study. Returns True when a SIGTERM ended it: the
    trial in flight is marked interrupted and its point enqueued again (:func:`interrupt`)."""
    import optuna

    ckdir = Path(journal).parent / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)
    with Sigterm() as sigterm:
        while not sigterm.received:
            with _Reservation(journal):
                trials = study.get_trials(deepcopy=False)
                n = len(counted(trials))
                if n >= search.n_trials:
                    break
                # seeded by the trial's slot: random search draws the same points whatever the workers
                study.sampler = make_sampler(search.sampler, search.seed + n)
                trial = study.ask()
                trial.set_user_attr("worker", worker)
                trial.set_user_attr("host", f"{socket.gethostname()}:{os.getpid()}")
            point = suggest(trial, search.space, search.baseline)
            trial.set_user_attr("point", point)
            log.info("worker %d: trial %d (%d of %d): %s", worker, trial.number, n + 1, search.n_trials, point)
            try:
                trial.set_user_attr("n_parameters", check_feasible(point, in_shape, search.max_parameters))
                settings = settings_for(point, {**search.train, "cache_size": cache_size})
                # the checkpoint follows the point: a re-run that enqueued it again resumes it
                state, value, error = run_trial(trial, paths, settings, seed=search.seed, device=device,
                                                threads=threads,
                                                checkpoint=str(ckdir / f"{name}-trial-{origin(trial)}.pt"),
                                                checkpoint_every=checkpoint_every, sigterm=sigterm)
            except InfeasibleTrial as exc:
                state, value, error = "FAIL", None, f"infeasible: {exc}"
            except Exception as exc:  # noqa: BLE001 - a point the network refuses is the trial's result
                state, value, error = "FAIL", None, f"{type(exc).__name__}: {exc}"
                log.warning("worker %d: trial %d failed: %s", worker, trial.number, error)
            if state == "INTERRUPTED":
                with _Reservation(journal):
                    interrupt(study, storage, trial, error)
                log.warning("worker %d: trial %d interrupted (%s); exiting with 143", worker, trial.number, error)
                break
            if error:
                trial.set_user_attr("error", error)
            study.tell(trial, value if state == "COMPLETE" else None, state=getattr(optuna.trial.TrialState, state))
            log.info("worker %d: trial %d %s%s", worker, trial.number, state,
                     f" validation balanced accuracy {value:.3f}" if value is not None
                     else f" ({error})" if error else "")
    return sigterm.received


# ------------------------------------------------------------------------------- one trial
def _trial_main(spec_json) -> None:
    """Child process (``python -m robustmaps.hpo SPEC``): train one trial; one JSON line on stdout
    per epoch (its validation balanced accuracy goes to the parent, which asks the pruner),
    then ``done`` (value, best epoch) or ``error``.

    One of the library's stated exceptions to "only robustmaps.jobs reads a job's files": a trial
    runs in a process of its own (a crash or an out-of-memory kill fails the trial, not the
    worker), so this entry reads the spec and the split tables itself; the rule entry that starts
    it is robustmaps.jobs.hpo.hpo_worker."""
    spec = json.loads(Path(spec_json).read_text())

    def send(*msg):
        print(json.dumps(msg), flush=True)

    try:
        store, index = open_store(spec["store"], spec["index"])
        tr, va = read_split_rows(spec["train"], index), read_split_rows(spec["validation"], index)
        # a checkpoint at this path is resumed only if it trained this very point on these inputs
        fp = fingerprint({"settings": result_settings(spec["settings"]), "seed": spec["seed"]},
                         [spec[k] for k in ("store", "index", "train", "validation")])
        best, _ = train(store, tr.row.to_numpy(), tr.label.to_numpy(), va.row.to_numpy(), va.label.to_numpy(),
                        TrainConfig(**spec["settings"]), seed=spec["seed"], checkpoint=spec["checkpoint"],
                        device=spec["device"], threads=spec["threads"], fingerprint=fp,
                        checkpoint_every=spec.get("checkpoint_every", 0.0),
                        on_epoch=lambda row: send("epoch", int(row["epoch"]),
                                                  float(row["validation_balanced_accuracy"]),
                                                  float(row["train_loss"]), float(row["validation_loss"])))
        send("done", float(best["balanced_accuracy"]), int(best["epoch"]))
    except Terminated:  # SIGTERM: the checkpoint is saved; the worker enqueues the point again
        send("terminated")
        raise
    except BaseException as exc:  # noqa: BLE001 - every error of a trial is the trial's result
        send("error", f"{type(exc).__name__}: {exc}", traceback.format_exc(limit=5))


def run_trial(trial, paths: dict, settings: dict, *, seed: int, device: str, threads: int,
              checkpoint: str, checkpoint_every: float = 0.0, sigterm: Sigterm | None = None
              ) -> tuple[str, float | None, str]:
    """Train ``settings`` in a child process (its own interpreter: a crash or an out-of-memory
    kill ends it, not the worker), feeding the pruner. Returns (state, value, error) with state
    ``COMPLETE``, ``PRUNED``, ``FAIL`` or ``INTERRUPTED`` (SIGTERM: the checkpoint is kept for a
    re-run; otherwise it is removed). ``sigterm``: the worker's :class:`Sigterm`, which passes a
    SIGTERM on to the child."""
    import subprocess
    import sys

    spec = Path(f"{checkpoint}.json")
    spec.write_text(json.dumps({**{k: str(v) for k, v in paths.items()}, "settings": settings, "seed": seed,
                                "checkpoint": checkpoint, "device": device, "threads": threads,
                                "checkpoint_every": checkpoint_every}))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "robustmaps.hpo", str(spec)], stdout=subprocess.PIPE, text=True,
                            env=env)
    if sigterm is not None:
        sigterm.child = proc
        if sigterm.received:  # the signal came while the child started
            proc.send_signal(signal.SIGTERM)
    result = None
    try:
        for line in proc.stdout:
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:  # a library printing to stdout: not ours
                continue
            if msg[0] == "epoch":
                _, epoch, value, train_loss, val_loss = msg
                log.info("trial %d epoch %d: train loss %.4f | validation loss %.4f bacc %.3f", trial.number, epoch,
                         train_loss, val_loss, value)
                trial.report(value, epoch)
                if trial.should_prune():
                    log.info("trial %d pruned after epoch %d", trial.number, epoch)
                    result = ("PRUNED", None, "")
                    break
            elif msg[0] == "done":
                trial.set_user_attr("best_epoch", msg[2])
                result = ("COMPLETE", msg[1], "")
            elif msg[0] == "error":
                log.warning("trial %d failed: %s\n%s", trial.number, msg[1], msg[2])
                result = ("FAIL", None, msg[1])
            elif msg[0] == "terminated":
                result = ("INTERRUPTED", None, "SIGTERM: its checkpoint is kept; a re-run resumes the point")
    finally:
        if proc.poll() is None and result is not None and result[0] == "PRUNED":
            proc.kill()
        code = proc.wait()
        if sigterm is not None:
            sigterm.child = None
            if sigterm.received:  # whatever the child said last, the worker is stopping
                result = ("INTERRUPTED", None, "SIGTERM: its checkpoint is kept; a re-run resumes the point")
        if result is None or result[0] != "INTERRUPTED":
            Path(checkpoint).unlink(missing_ok=True)
        spec.unlink(missing_ok=True)
    if result is None:
        result = ("FAIL", None, f"the trial's process died (exit code {code}: out of memory or killed)")
    return result


# ------------------------------------------------------------------------------- rule entries
TRIAL_COLUMNS = ["number", "state", "value", "duration_s", "worker", "best_epoch", "n_parameters", "error"]


def trials_table(study, worker: int | None = None) -> pd.DataFrame:
    """One row per trial (of ``worker`` if given): number, state, value, duration, params."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state.name == "WAITING" or (worker is not None and t.user_attrs.get("worker") != worker):
            continue
        duration = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete and t.datetime_start else np.nan
        rows.append({"number": t.number, "state": t.state.name, "value": t.value, "duration_s": duration,
                     "worker": t.user_attrs.get("worker"), "best_epoch": t.user_attrs.get("best_epoch"),
                     "n_parameters": t.user_attrs.get("n_parameters"), "error": t.user_attrs.get("error", ""),
                     **{f"params_{k}": v for k, v in t.user_attrs.get("point", t.params).items()}})
    cols = TRIAL_COLUMNS + sorted({c for r in rows for c in r} - set(TRIAL_COLUMNS))
    return pd.DataFrame(rows, columns=cols).sort_values("number")


def best_trial(table: pd.DataFrame) -> pd.Series:
    done = table[table.state == "COMPLETE"]
    if done.empty:
        raise InputError("no hyperparameter trial completed: see results/hpo/trials.tsv for the errors")
    return done.sort_values(["value", "number"], ascending=[False, True]).iloc[0]


def load_best(best_yaml) -> dict:
    """The training settings of ``results/hpo/best.yaml``."""
    import yaml

    try:
        data = yaml.safe_load(Path(best_yaml).read_text())
        return dict(data["settings"])
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise InputError(f"{best_yaml}: not a hyperparameter search result ({exc})") from exc


if __name__ == "__main__":  # a trial's child process (run_trial)
    import sys

    _trial_main(sys.argv[1])
