# Paths, settings and input functions of the training stage (rules/train.smk).


TRAIN_FOLDS = config["train"]["folds"] if config["train"]["folds"] is not None else FOLDS
SEEDS = config["train"]["seeds"]
EVAL_SETS = ["validation", "test", *OTHER_COHORTS]
MODEL_DIR = paths.model_dir()
MODELS = rmconfig.trained_models(config)


def evaluation_inputs(wildcards):
    """Per evaluation set (its validation set, the test set, every independent cohort) the
    store, its index and the set's table, named {set}_store, {set}_index, {set}_table."""
    cohorts = {"validation": MAIN, "test": MAIN, **{c: c for c in OTHER_COHORTS}}
    tables = {
        "validation": paths.fold_table("validation_baseline", wildcards.fold),
        "test": paths.test_table("test_baseline"),
        **{c: paths.cohort_test_table("test_baseline", c) for c in OTHER_COHORTS},
    }
    files = {}
    for name in EVAL_SETS:
        files[f"{name}_store"] = paths.store(cohorts[name])
        files[f"{name}_index"] = paths.store_index(cohorts[name])
        files[f"{name}_table"] = tables[name]
    return files


def train_settings():
    """train.* values the train rule uses; with train.architecture_from_hpo the searched ones
    come from best.yaml (an input) instead, so that they do not re-run training for nothing."""
    keys = ["architecture", "lr", "weight_decay", "batch_size", "max_epochs", "patience", "min_epochs",
            "normalisation", "amp", "augmentation"]  # not the pure resources (rmconfig.RESOURCES)
    if config["train"]["architecture_from_hpo"]:
        keys = [k for k in keys if k not in rmconfig.SEARCHED_TRAIN_KEYS]
    return {k: config["train"][k] for k in keys}


def hpo_best_input(wildcards):
    """best.yaml of the search, an input of training when train.architecture_from_hpo."""
    return {"best": f"{HPO_DIR}/best.yaml"} if config["train"]["architecture_from_hpo"] else {}


# every model's metrics and history for the training summary (rules/common.smk name_paths)
MODEL_TABLE_INPUTS, MODEL_TABLE_RECORDS = name_paths(
    [{"fold": f, "seed": s, "metrics": f"{paths.model_dir(f, s)}/metrics.tsv",
      "history": f"{paths.model_dir(f, s)}/history.tsv"} for f in TRAIN_FOLDS for s in SEEDS],
    "model", ("metrics", "history"))
