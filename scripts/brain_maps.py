"""Rule brain_maps: see robustmaps.jobs.analysis.brain_maps_entry."""
from robustmaps.jobs.analysis import brain_maps_entry
from robustmaps.runner import resolve_inputs, script

with script(snakemake):
    brain_maps_entry(
        snakemake.input.roi,
        snakemake.input.atlas,
        snakemake.input.labels,
        snakemake.input.get("truth"),
        dict(snakemake.output.items()),
        masks=resolve_inputs(snakemake.params.masks, snakemake.input),
        maps=resolve_inputs(snakemake.params.maps, snakemake.input),
        cut_coords=snakemake.params.cut_coords,
        group_class=snakemake.params.group_class,
    )
