# Paths and input functions of the split stage (rules/split.smk).


def split_tables():
    """Every split TSV of the main cohort (ClinicaDL names, folds from 0)."""
    files = [paths.test_table("test_baseline"), paths.test_table("test")]
    for k in FOLDS:
        files += [
            paths.fold_table(name, k)
            for name in ("train", "train_baseline", "validation_baseline")
        ]
    return files


def imported_split_files():
    """The split TSVs of split.import_dir, ClinicaDL's layout or the project's own (inputs, so
    that editing them re-runs); planning stops when the config asks for a test set and none is
    there, naming where it looked."""
    from robustmaps.splits import split_files  # here: splits imports scipy and scikit-learn

    root = config["split"]["import_dir"]
    if not root:
        return []
    found = or_exit(split_files, root, config["split"]["n_folds"], need_test=config["split"]["test_per_class"] > 0)
    files = [str(f[k]) for f in found["folds"] for k in ("train", "validation_baseline")]
    return files + [str(found[k]) for k in ("test_baseline", "test") if found.get(k)]
