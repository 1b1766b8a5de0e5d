"""Rule mask_reference: see robustmaps.jobs.masks.mean_reference."""
from robustmaps.jobs.masks import mean_reference
from robustmaps.runner import script

with script(snakemake):
    mean_reference(
        snakemake.input.store,
        snakemake.input.index,
        snakemake.input.train,
        snakemake.output.reference,
        reference_class=snakemake.params.reference_class,
        working_grid=snakemake.params.working_grid,
    )
