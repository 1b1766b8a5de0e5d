"""Rule actmax: see robustmaps.jobs.saliency.actmax_maps."""
from robustmaps.config import job_resources
from robustmaps.runner import script
from robustmaps.jobs.saliency import actmax_maps

with script(snakemake):
    actmax_maps(
        snakemake.input.model,
        snakemake.input.store,
        snakemake.input.index,
        snakemake.input.table,
        dict(snakemake.output.items()),
        params=snakemake.params.settings,
        grids=snakemake.params.grids,
        group_class=snakemake.params.group_class,
        # pure resources come from the config, not params: changing them re-runs nothing
        **job_resources(snakemake.config, "saliency", ("device",)),
        threads=snakemake.params.threads,
    )
