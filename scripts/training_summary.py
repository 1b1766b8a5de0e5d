"""Rule training_summary: see robustmaps.jobs.train.summarise_training."""
from robustmaps.jobs.train import summarise_training
from robustmaps.runner import script

with script(snakemake):
    models = [
        {**m, "metrics": met, "history": hist}
        for m, met, hist in zip(snakemake.params.models, snakemake.input.metrics, snakemake.input.histories)
    ]
    summarise_training(models, snakemake.output.summary, snakemake.output.curves)
