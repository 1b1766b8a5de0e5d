"""Rule entries of the hyperparameter search (rules/hpo.smk): one worker of the shared study,
and the summary (best point, trials table, figures). The search itself is robustmaps.hpo."""

from __future__ import annotations

import logging
from pathlib import Path

from ..checkpoints import Terminated
from ..config import ARCHITECTURE_KEYS, TRAINING_KEYS
from ..devices import device_for
from ..hpo import (
    _Reservation,
    best_trial,
    join_study,
    make_pruner,
    make_sampler,
    repair_journal,
    run_worker,
    storage,
    study_name,
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
    join_study(study, st, journal, search, worker, workers, name)
    log.info("worker %d: study %s in %s, %s sampler, %s pruner, %d trials in all", worker, name, journal,
             search.sampler, search.pruner, search.n_trials)
    if run_worker(study, st, journal, search, worker, name=name, in_shape=in_shape, paths=paths, device=device,
                  threads=threads, cache_size=cache_size, checkpoint_every=60 * checkpoint_minutes):
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
