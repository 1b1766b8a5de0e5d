"""Rule cohort_table: see robustmaps.jobs.data.cohort_table."""
from robustmaps.jobs.data import cohort_table
from robustmaps.runner import script

with script(snakemake):
    cohort_table(
        snakemake.input.qc,
        snakemake.input.index,
        snakemake.output[0],
        cohorts=snakemake.params.cohorts,
        names=snakemake.params.names,
    )
