"""Rule evaluate: see robustmaps.jobs.train.evaluate_model."""
from robustmaps.config import job_resources
from robustmaps.jobs.train import evaluate_model
from robustmaps.runner import script

with script(snakemake):
    sets = snakemake.params.sets
    evaluate_model(
        snakemake.input.model,
        {s: (snakemake.input[f"{s}_store"], snakemake.input[f"{s}_index"], snakemake.input[f"{s}_table"]) for s in sets},
        dict(zip(sets, snakemake.output.predictions)),
        snakemake.output.metrics,
        n_boot=snakemake.params.bootstrap,
        level=snakemake.params.level,
        seed=snakemake.params.seed,
        batch_size=snakemake.params.batch_size,
        positive=snakemake.params.positive,
        # pure resources come from the config, not params: changing them re-runs nothing
        **job_resources(snakemake.config, "train", ("device",)),
        threads=snakemake.params.threads,
    )
