"""Rule mask_exclusions: see robustmaps.jobs.masks.cohort_exclusions."""
from robustmaps.jobs.masks import cohort_exclusions
from robustmaps.runner import script

with script(snakemake):
    cohort_exclusions(dict(zip(snakemake.params.models, snakemake.input.flagged)), snakemake.output.excluded)
