"""Rule hpo_worker: see robustmaps.jobs.hpo.hpo_worker."""
from robustmaps.config import job_resources
from robustmaps.jobs.hpo import hpo_worker
from robustmaps.runner import script

with script(snakemake):
    hpo_worker(
        snakemake.input.store,
        snakemake.input.index,
        snakemake.input.train,
        snakemake.input.validation,
        snakemake.params.journal,
        snakemake.output[0],
        worker=int(snakemake.wildcards.worker),
        workers=snakemake.params.workers,
        params=snakemake.params.settings,
        # pure resources come from the config, not params: changing them re-runs nothing
        **job_resources(snakemake.config, "hpo", ("device", "cache_size")),
        threads=snakemake.params.threads,
        checkpoint_minutes=snakemake.config["resources"]["checkpoint_minutes"],
    )
