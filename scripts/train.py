"""Rule train: see robustmaps.training.train_model."""
from robustmaps.hpo import load_best
from robustmaps.runner import script
from robustmaps.training import train_model

with script(snakemake):
    settings = dict(snakemake.params.settings)
    if "best" in snakemake.input.keys():  # train.architecture_from_hpo
        settings.update(load_best(snakemake.input.best))
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
        settings=settings,
        labels=snakemake.params.labels,
        device=snakemake.params.device,
        threads=snakemake.params.threads,
    )
