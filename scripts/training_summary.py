"""Rule training_summary: see robustmaps.jobs.train.summarise_training."""
from robustmaps.jobs.train import summarise_training
from robustmaps.runner import resolve_inputs, script

with script(snakemake):
    summarise_training(resolve_inputs(snakemake.params.models, snakemake.input), snakemake.output.summary,
                       snakemake.output.curves)
