# Paths and settings of the hyperparameter search (rules/hpo.smk).


# Hyperparameter search (rules/hpo.smk)
HPO = config["hpo"]
HPO_DIR = "results/hpo"
# the shared optuna study: appended to by every worker, never an output (a re-run continues it)
HPO_JOURNAL = f"{HPO_DIR}/study/journal.log"
HPO_INPUTS = {
    "store": paths.store(MAIN),
    "index": paths.store_index(MAIN),
    "train": paths.fold_table("train", HPO['fold']),
    "validation": paths.fold_table("validation_baseline", HPO['fold']),
}


def hpo_params():
    """The search's settings: the hpo section only (never train.*), so that changing training
    settings does not re-run the search."""
    keys = ("n_trials", "sampler", "pruner", "hyperband", "seed", "space", "baseline", "max_parameters")
    train = {k: HPO[k] for k in ("max_epochs", "patience", "min_epochs", "amp")}  # cache_size: a resource
    return {**{k: HPO[k] for k in keys}, "train": train}
