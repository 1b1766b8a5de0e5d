"""Rules group_mask and sweep_mask: see robustmaps.jobs.masks.group_mask."""
from robustmaps.config import job_resources
from robustmaps.jobs.masks import group_mask
from robustmaps.runner import checkpoint_for, script

with script(snakemake):
    group_mask(
        snakemake.input.model,
        snakemake.input.store,
        snakemake.input.index,
        snakemake.input.images,
        snakemake.input.get("validation"),
        dict(snakemake.output.items()),
        target=snakemake.params.target,
        params=snakemake.params.masks,
        grids=snakemake.params.grids,
        reference_nii=snakemake.input.get("reference"),
        excluded_tsv=snakemake.input.get("excluded"),
        screen={k[len("screen_"):]: v for k, v in snakemake.input.items() if k.startswith("screen_")} or None,
        # pure resources come from the config, not params: changing them re-runs nothing
        **job_resources(snakemake.config, "masks", ("device",)),
        threads=snakemake.params.threads,
        checkpoint=checkpoint_for(snakemake.output.mask),
        checkpoint_minutes=snakemake.config["resources"]["checkpoint_minutes"],
    )
