"""Rule sobol_summary: see robustmaps.jobs.saliency.summarise_sobol."""
from robustmaps.runner import script
from robustmaps.jobs.saliency import summarise_sobol

with script(snakemake):
    summarise_sobol(
        snakemake.params.entries,
        list(snakemake.input.indices),
        list(snakemake.input.convergence),
        dict(snakemake.output.items()),
    )
