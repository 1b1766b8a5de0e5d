"""Rule qc: see robustmaps.jobs.data.qc_cohort."""
from robustmaps.jobs.data import qc_cohort
from robustmaps.runner import script

with script(snakemake):
    qc_cohort(
        snakemake.input.sessions,
        snakemake.params.caps_dir,
        snakemake.output[0],
        cohort=snakemake.wildcards.cohort,
        grid=snakemake.params.grid,
        labels=snakemake.params.labels,
        min_max_gm=snakemake.params.min_max_gm,
        value_tolerance=snakemake.params.value_tolerance,
        **snakemake.params.table,
        gm=snakemake.params.gm,
        threads=snakemake.threads,
    )
