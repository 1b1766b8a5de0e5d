"""Rule similarity: see robustmaps.jobs.analysis.similarity_entry."""
from robustmaps.jobs.analysis import similarity_entry
from robustmaps.runner import script

with script(snakemake):
    similarity_entry(
        snakemake.input.roi,
        dict(snakemake.output.items()),
        group_class=snakemake.params.group_class,
        n_boot=snakemake.params.n_boot,
        level=snakemake.params.level,
        seed=snakemake.params.seed,
        points_tsv=snakemake.input.get("points"),
    )
