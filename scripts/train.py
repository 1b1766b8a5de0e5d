"""Rule train: see robustmaps.jobs.train.train_model."""
from robustmaps.config import job_resources
from robustmaps.runner import script
from robustmaps.jobs.train import train_model

with script(snakemake):
    train_model(
        snakemake.input.store,
        snakemake.input.index,
        snakemake.input.train,
        snakemake.input.validation,
        snakemake.output.model,
        snakemake.output.history,
        snakemake.params.checkpoint,
        fold=int(snakemake.wildcards.fold),
        seed=int(snakemake.wildcards.seed),
        # pure resources come from the config, not params: changing them re-runs nothing
        settings={**snakemake.params.settings, **job_resources(snakemake.config, "train", ("cache_size", "workers"))},
        best_yaml=snakemake.input.get("best"),
        labels=snakemake.params.labels,
        **job_resources(snakemake.config, "train", ("device",)),
        threads=snakemake.params.threads,
        checkpoint_minutes=snakemake.config["resources"]["checkpoint_minutes"],
    )
