"""Rule test_cohort: see robustmaps.jobs.split.make_test_cohort."""
from robustmaps.runner import script
from robustmaps.jobs.split import make_test_cohort

with script(snakemake):
    make_test_cohort(snakemake.input.index, snakemake.params.out_dir, cohort=snakemake.wildcards.cohort)
