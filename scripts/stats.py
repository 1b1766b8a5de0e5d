"""Rule stats: see robustmaps.jobs.analysis.stats_entry."""
from robustmaps.jobs.analysis import stats_entry
from robustmaps.runner import script

with script(snakemake):
    stats_entry(
        snakemake.input.training,
        snakemake.input.roi,
        snakemake.input.pairs,
        dict(snakemake.output.items()),
        group_class=snakemake.params.group_class,
        n_boot=snakemake.params.n_boot,
        n_perm=snakemake.params.n_perm,
        level=snakemake.params.level,
        seed=snakemake.params.seed,
    )
