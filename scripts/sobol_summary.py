"""Rule sobol_summary: see robustmaps.saliency.maps.summarise_sobol."""
from robustmaps.runner import script
from robustmaps.saliency.maps import summarise_sobol

with script(snakemake):
    summarise_sobol(
        snakemake.params.entries,
        list(snakemake.input.indices),
        list(snakemake.input.convergence),
        dict(snakemake.output.items()),
    )
