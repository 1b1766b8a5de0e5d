"""Rule sweep_figures: see robustmaps.jobs.analysis.sweep_figures_entry."""
from robustmaps.jobs.analysis import sweep_figures_entry
from robustmaps.runner import script

with script(snakemake):
    sweep_figures_entry(snakemake.params.points, snakemake.input.get("points"), dict(snakemake.output.items()),
                        cut_coords=snakemake.params.cut_coords)
