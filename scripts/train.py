"""Rule train: see robustmaps.training.train_model."""
from robustmaps.runner import script
from robustmaps.training import train_model

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
        settings=snakemake.params.settings,
        best_yaml=snakemake.input.get("best"),
        labels=snakemake.params.labels,
        device=snakemake.params.device,
        threads=snakemake.params.threads,
        # a pure resource, read from the config (not params: changing it re-runs nothing)
        checkpoint_minutes=snakemake.config["resources"]["checkpoint_minutes"],
    )
