"""Rule roi_vectors: see robustmaps.analysis.roi_vectors_entry."""
from robustmaps.analysis import roi_vectors_entry
from robustmaps.runner import script

with script(snakemake):
    roi_vectors_entry(
        snakemake.params.entries,
        snakemake.input.atlas,
        snakemake.input.labels,
        snakemake.output[0],
        reduction=snakemake.params.reduction,
        group_class=snakemake.params.group_class,
        map_normalisation=snakemake.params.map_normalisation,
        index_tsv=snakemake.input.index,
    )
