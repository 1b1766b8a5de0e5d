"""Rule entries of the hyperparameter search (rules/hpo.smk): one worker of the shared study,
and the summary (best point, trials table, figures). The search itself is robustmaps.hpo."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from ..checkpoints import Terminated
from ..config import ARCHITECTURE_KEYS, TRAINING_KEYS
from ..devices import device_for
from ..hpo import (
    InfeasibleTrial,
    Sigterm,
    _Reservation,
    best_trial,
    check_feasible,
    counted,
    interrupt,
    make_pruner,
    make_sampler,
    origin,
    release_dead_trials,
    repair_journal,
    run_trial,
    settings_for,
    storage,
    study_name,
    suggest,
    trials_table,
)
from ..io import InputError, atomic_path, read_tsv, write_tsv
from ..plots import hpo_figures
from ..preprocess import open_store
from ..settings import Search

log = logging.getLogger(__name__)


def hpo_worker(store_npy, index_tsv, train_tsv, validation_tsv, journal, out_tsv, *, worker: int, params: dict,
               workers: int | None = None, device: str = "auto", threads: int = 1, cache_size: int = 0,
               checkpoint_minutes: float = 0.0) -> None:
    """Rule entry: one worker of the shared study. ``params``: the rule's mapping of the ``hpo``
    config section (n_trials, sampler, pruner, hyperband, seed, space, baseline, max_parameters) and
    ``train`` (the TrainConfig values not searched: epochs, patience, ...), read as
    :class:`robustmaps.settings.Search`; its hash names the study. ``workers``: how many workers the
    search has now (hpo.workers). ``device``, ``cache_size``, ``checkpoint_minutes``: pure
    resources. Writes the trials this worker ran."""
    import optuna

    search = Search.of(params)
    device_for(device)  # no usable CUDA where a GPU was asked for: stop here, not as failed trials
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store, _ = open_store(store_npy, index_tsv)
    in_shape = tuple(store.shape[1:])
    del store
    name = study_name(params, [index_tsv, train_tsv, validation_tsv])
    Path(journal).parent.mkdir(parents=True, exist_ok=True)
    with _Reservation(journal):
        for note in repair_journal(journal):
            log.warning("worker %d: repaired %s: %s", worker, journal, note)
    st = storage(journal)
    pruner = make_pruner(search.pruner, search.hyperband, search.train["max_epochs"])
    study = optuna.create_study(study_name=name, storage=st, direction="maximize", load_if_exists=True,
                                sampler=make_sampler(search.sampler, search.seed), pruner=pruner)
    paths = {"store": store_npy, "index": index_tsv, "train": train_tsv, "validation": validation_tsv}
    ckdir = Path(journal).parent / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)
    with _Reservation(journal):
        dead = release_dead_trials(study, st, worker, workers)
        if dead:
            log.warning("worker %d: trials %s were left running by a killed run of this worker or by a worker that "
                        "no longer exists: marked failed (interrupted), their points enqueued again; they do not "
                        "count towards n_trials", worker, dead)
        if not study.get_trials(deepcopy=False):
            baseline = {k: search.baseline[k] for k in search.space}
            study.enqueue_trial(baseline, user_attrs={"baseline": True})
            log.info("study %s: baseline enqueued as the first trial: %s", name, baseline)
    log.info("worker %d: study %s in %s, %s sampler, %s pruner, %d trials in all", worker, name, journal,
             search.sampler, search.pruner, search.n_trials)
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
                                                checkpoint_every=60 * checkpoint_minutes, sigterm=sigterm)
            except InfeasibleTrial as exc:
                state, value, error = "FAIL", None, f"infeasible: {exc}"
            except Exception as exc:  # noqa: BLE001 - a point the network refuses is the trial's result
                state, value, error = "FAIL", None, f"{type(exc).__name__}: {exc}"
                log.warning("worker %d: trial %d failed: %s", worker, trial.number, error)
            if state == "INTERRUPTED":
                with _Reservation(journal):
                    interrupt(study, st, trial, error)
                log.warning("worker %d: trial %d interrupted (%s); exiting with 143", worker, trial.number, error)
                break
            if error:
                trial.set_user_attr("error", error)
            study.tell(trial, value if state == "COMPLETE" else None, state=getattr(optuna.trial.TrialState, state))
            log.info("worker %d: trial %d %s%s", worker, trial.number, state,
                     f" validation balanced accuracy {value:.3f}" if value is not None
                     else f" ({error})" if error else "")
    if sigterm.received:
        raise Terminated()
    write_tsv(trials_table(study, worker), out_tsv)


def hpo_summary(journal, worker_tsvs, out: dict, *, params: dict, index_tsv, train_tsv, validation_tsv) -> None:
    """Rule entry: ``trials.tsv`` (every trial of the study: params, state, value, duration),
    ``best.yaml`` (the best completed trial's settings, read by training when
    ``train.architecture_from_hpo``), optuna's history and importance plots and the random-search
    curve of seed 003 eq. 2.20."""
    import optuna
    import yaml

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = study_name(params, [index_tsv, train_tsv, validation_tsv])
    for note in repair_journal(journal):
        log.warning("repaired %s: %s", journal, note)
    try:
        study = optuna.load_study(study_name=name, storage=storage(journal))
    except KeyError:
        raise InputError(f"{journal}: no study {name}: the journal was removed or replaced after the workers ran; "
                         f"re-run the hpo_worker jobs") from None
    table = trials_table(study)
    ran = set()  # the workers' own records must all be in the journal
    for f in worker_tsvs:
        ran |= set(read_tsv(f, ["number", "state"], what="HPO worker table").number.astype(int))
    if not ran <= set(table.number):
        raise InputError(f"{journal}: trials {sorted(ran - set(table.number))} of the workers are not in study "
                         f"{name}: re-run the hpo_worker jobs")
    best = best_trial(table)
    point = study.trials[int(best.number)].user_attrs["point"]
    write_tsv(table, out["trials"])
    with atomic_path(out["best"]) as tmp:
        Path(tmp).write_text(yaml.safe_dump({"trial": int(best.number), "validation_balanced_accuracy":
                                             float(best.value), "study": name, "point": point,
                                             "settings": {"architecture": {"name": "paper", **{
                                                 k: point[k] for k in ARCHITECTURE_KEYS}},
                                                 **{k: point[k] for k in TRAINING_KEYS}}}, sort_keys=False))
    hpo_figures(study, table, out["history"], out["importance"], out["random_search"])
    counts = table.state.value_counts().to_dict()
    log.info("study %s: %d trials (%s); best trial %d, validation balanced accuracy %.3f: %s", name, len(table),
             ", ".join(f"{k} {v}" for k, v in counts.items()), best.number, best.value, point)
