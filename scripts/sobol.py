"""Rule sobol: see robustmaps.jobs.saliency.sobol_entry."""
from robustmaps.config import job_resources
from robustmaps.runner import script
from robustmaps.jobs.saliency import sobol_entry

with script(snakemake):
    sobol_entry(
        snakemake.input.model,
        snakemake.input.store,
        snakemake.input.index,
        snakemake.input.table,
        snakemake.input.atlas,
        snakemake.input.labels,
        dict(snakemake.output.items()),
        params=snakemake.params.sobol,
        # pure resources come from the config, not params: changing them re-runs nothing
        **job_resources(snakemake.config, "sobol", ("device",)),
        threads=snakemake.params.threads,
    )
