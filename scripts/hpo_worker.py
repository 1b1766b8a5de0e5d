"""Rule hpo_worker: see robustmaps.hpo.hpo_worker."""
from robustmaps.hpo import hpo_worker
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
        params=snakemake.params.settings,
        device=snakemake.params.device,
        threads=snakemake.params.threads,
        checkpoint_minutes=snakemake.config["resources"]["checkpoint_minutes"],  # a pure resource: not params
    )
