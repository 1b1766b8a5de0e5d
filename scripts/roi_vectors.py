"""Rule roi_vectors: see robustmaps.jobs.analysis.roi_vectors_entry."""
from robustmaps.jobs.analysis import roi_vectors_entry
from robustmaps.runner import resolve_inputs, script

with script(snakemake):
    roi_vectors_entry(
        resolve_inputs(snakemake.params.entries, snakemake.input),
        snakemake.input.atlas,
        snakemake.input.labels,
        snakemake.output[0],
        masks=snakemake.params.masks,
        maps=snakemake.params.maps,
        group_class=snakemake.params.group_class,
        index_tsv=snakemake.input.index,
    )
