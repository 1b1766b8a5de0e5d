"""Rule regions: see robustmaps.jobs.analysis.regions_entry."""
from robustmaps.jobs.analysis import regions_entry
from robustmaps.runner import resolve_inputs, script

with script(snakemake):
    regions_entry(
        snakemake.input.roi,
        snakemake.input.get("truth"),
        dict(snakemake.output.items()),
        group_class=snakemake.params.group_class,
        k=snakemake.params.k,
        masks=resolve_inputs(snakemake.params.masks, snakemake.input),
        cut_coords=snakemake.params.cut_coords,
    )
