"""Rule saliency_summary: see robustmaps.jobs.saliency.summarise_saliency."""
from robustmaps.jobs.saliency import summarise_saliency
from robustmaps.runner import resolve_inputs, script

with script(snakemake):
    summarise_saliency(
        resolve_inputs(snakemake.params.entries, snakemake.input),
        resolve_inputs(snakemake.params.group_maps, snakemake.input),
        dict(snakemake.output.items()),
        views=[(ids, snakemake.output[name]) for name, ids in snakemake.params.views.items()],
        background=snakemake.input.background,
        comparison=snakemake.params.comparison,
    )
