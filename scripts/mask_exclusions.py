"""Rule mask_exclusions: see robustmaps.jobs.masks.cohort_exclusions."""
from robustmaps.jobs.masks import cohort_exclusions
from robustmaps.runner import resolve_inputs, script

with script(snakemake):
    screens = resolve_inputs(snakemake.params.screens, snakemake.input)
    cohort_exclusions({s["model"]: s["flagged"] for s in screens}, snakemake.output.excluded)
