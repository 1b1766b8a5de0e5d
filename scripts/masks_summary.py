"""Rule masks_summary: see robustmaps.jobs.masks.summarise_masks."""
from robustmaps.jobs.masks import summarise_masks
from robustmaps.runner import script

with script(snakemake):
    summarise_masks(
        snakemake.params.entries,
        {"group": snakemake.input.group, "sweep": snakemake.input.sweep, "session": snakemake.input.sessions},
        snakemake.input.group_flagged,
        snakemake.input.group_images,
        dict(snakemake.output.items()),
        threshold=snakemake.params.threshold,
        views=[(ids, snakemake.output[name]) for name, ids in snakemake.params.views.items()],
        background=snakemake.input.background,
    )
