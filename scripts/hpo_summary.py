"""Rule hpo_summary: see robustmaps.jobs.hpo.hpo_summary."""
from robustmaps.jobs.hpo import hpo_summary
from robustmaps.runner import script

with script(snakemake):
    hpo_summary(
        snakemake.params.journal,
        snakemake.input.workers,
        dict(snakemake.output.items()),
        params=snakemake.params.settings,
        index_tsv=snakemake.input.index,
        train_tsv=snakemake.input.train,
        validation_tsv=snakemake.input.validation,
    )
