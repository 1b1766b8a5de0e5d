"""Rule saliency_summary: see robustmaps.jobs.saliency.summarise_saliency."""
from robustmaps.runner import script
from robustmaps.jobs.saliency import summarise_saliency

with script(snakemake):
    summarise_saliency(
        snakemake.params.entries,
        list(snakemake.input.faithfulness),
        snakemake.params.group_maps,
        dict(snakemake.output.items()),
        views=[(ids, snakemake.output[name]) for name, ids in snakemake.params.views.items()],
        background=snakemake.input.background,
        comparison=snakemake.params.comparison,
    )
