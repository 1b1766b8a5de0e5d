"""Rule split: see robustmaps.jobs.split.make_splits."""
from robustmaps.runner import script
from robustmaps.jobs.split import make_splits

with script(snakemake):
    make_splits(
        snakemake.input.index,
        snakemake.params.out_dir,
        cohort=snakemake.params.cohort,
        n_folds=snakemake.params.n_folds,
        seed=snakemake.params.seed,
        test_per_class=snakemake.params.test_per_class,
        p_age_threshold=snakemake.params.p_age_threshold,
        p_sex_threshold=snakemake.params.p_sex_threshold,
        max_tries=snakemake.params.max_tries,
        import_dir=snakemake.params.import_dir,
    )
