"""Rule sobol_summary: see robustmaps.jobs.saliency.summarise_sobol."""
from robustmaps.jobs.saliency import summarise_sobol
from robustmaps.runner import resolve_inputs, script

with script(snakemake):
    summarise_sobol(resolve_inputs(snakemake.params.entries, snakemake.input), dict(snakemake.output.items()))
