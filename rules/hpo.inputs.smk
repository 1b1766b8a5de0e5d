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
    """The search's settings (robustmaps.config.hpo_params): the hpo section only."""
    return rmconfig.hpo_params(config)
