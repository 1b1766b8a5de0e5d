"""Rule masks_summary: see robustmaps.jobs.masks.summarise_masks."""
from robustmaps.jobs.masks import summarise_masks
from robustmaps.runner import resolve_inputs, script

with script(snakemake):
    summarise_masks(
        resolve_inputs(snakemake.params.entries, snakemake.input),
        dict(snakemake.output.items()),
        threshold=snakemake.params.threshold,
        views=[(ids, snakemake.output[name]) for name, ids in snakemake.params.views.items()],
        background=snakemake.input.background,
    )
