# Split stage (study 2.2.1): matched test set + one stratified k-fold split of the main cohort.

include: "split.inputs.smk"


rule split:
    """Test set and k-fold split of the main cohort, ClinicaDL file names (robustmaps.jobs.split.make_splits)."""
    input:
        index=paths.store_index(MAIN),
        imported=imported_split_files(),
    output:
        tables=split_tables(),
        summary=reported(
            "results/splits/summary.tsv",
            caption="../report/captions/split_summary.rst",
            category="Splits",
        ),
    params:
        out_dir=lambda w, output: os.path.dirname(output.summary),
        cohort=MAIN,
        n_folds=config["split"]["n_folds"],
        seed=config["split"]["seed"],
        test_per_class=config["split"]["test_per_class"],
        p_age_threshold=config["split"]["p_age_threshold"],
        p_sex_threshold=config["split"]["p_sex_threshold"],
        max_tries=config["split"]["max_tries"],
        import_dir=config["split"]["import_dir"],
    benchmark:
        "results/benchmarks/split/split.tsv",
    log:
        "results/logs/split/split.log",
    conda:
        ENV
    script:
        "../scripts/split.py"


rule test_cohort:
    """An independent cohort is a test set as a whole: its baseline and all-session tables."""
    input:
        index=paths.store_index(),
    output:
        baseline=paths.cohort_test_table("test_baseline"),
        sessions=paths.cohort_test_table("test"),
        summary=paths.cohort_test_table("summary"),
    params:
        out_dir=lambda w, output: os.path.dirname(output.summary),
    benchmark:
        "results/benchmarks/test_cohort/{cohort}.tsv",
    log:
        "results/logs/split/{cohort}.log",
    conda:
        ENV
    script:
        "../scripts/test_cohort.py"
