"""Rule synthetic_cohort: see robustmaps.jobs.data.generate_cohort."""
from robustmaps.jobs.data import generate_cohort
from robustmaps.runner import script

with script(snakemake):
    generate_cohort(
        snakemake.output.caps,
        snakemake.output.sessions,
        snakemake.output.ground_truth,
        snakemake.output.truth_sessions,
        name=snakemake.wildcards.cohort,
        spec=snakemake.params.spec,
        seed=snakemake.params.seed,
        grid=snakemake.params.grid,
        atlas=snakemake.params.atlas,
        threads=snakemake.threads,
    )
