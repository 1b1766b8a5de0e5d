"""Rules <method> (one per saliency.methods entry): see robustmaps.jobs.saliency.saliency_maps."""
from robustmaps.config import job_resources
from robustmaps.runner import script
from robustmaps.jobs.saliency import saliency_maps

with script(snakemake):
    saliency_maps(
        snakemake.input.model,
        snakemake.input.store,
        snakemake.input.index,
        snakemake.input.table,
        dict(snakemake.output.items()),
        method=snakemake.params.method,
        params=snakemake.params.settings,
        grids=snakemake.params.grids,
        faith=snakemake.params.faithfulness,
        group_class=snakemake.params.group_class,
        # pure resources come from the config, not params: changing them re-runs nothing
        **job_resources(snakemake.config, "saliency", ("device",)),
        threads=snakemake.params.threads,
        atlas_nii=snakemake.input.atlas,
        reference_nii=snakemake.input.get("reference"),
        train_tsv=snakemake.input.get("train"),
    )
