"""Rule session_masks: see robustmaps.jobs.masks.session_masks."""
from robustmaps.config import job_resources
from robustmaps.jobs.masks import session_masks
from robustmaps.runner import checkpoint_for, script

with script(snakemake):
    session_masks(
        snakemake.input.model,
        snakemake.input.store,
        snakemake.input.index,
        snakemake.input.test,
        dict(snakemake.output.items()),
        target=snakemake.params.target,
        params=snakemake.params.masks,
        grids=snakemake.params.grids,
        reference_nii=snakemake.input.get("reference"),
        # pure resources come from the config, not params: changing them re-runs nothing
        **job_resources(snakemake.config, "masks", ("device",)),
        threads=snakemake.params.threads,
        checkpoint=checkpoint_for(snakemake.output.index),
        checkpoint_minutes=snakemake.config["resources"]["checkpoint_minutes"],
    )
