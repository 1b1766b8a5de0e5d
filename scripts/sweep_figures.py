"""Rule sweep_figures: see robustmaps.jobs.analysis.sweep_figures_entry."""
from robustmaps.jobs.analysis import sweep_figures_entry
from robustmaps.runner import resolve_inputs, script

with script(snakemake):
    sweep_figures_entry(resolve_inputs(snakemake.params.points, snakemake.input), dict(snakemake.output.items()),
                        cut_coords=snakemake.params.cut_coords)
