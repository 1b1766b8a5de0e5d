"""Rule preprocess: see robustmaps.jobs.data.build_store."""
from robustmaps.jobs.data import build_store
from robustmaps.runner import script

with script(snakemake):
    build_store(
        snakemake.input.qc,
        snakemake.input.atlas,
        snakemake.output.store,
        snakemake.output.index,
        snakemake.output.mean,
        native=snakemake.params.native,
        working=snakemake.params.working,
        dtype=snakemake.params.dtype,
        baseline_column=snakemake.params.baseline_column,
        threads=snakemake.threads,
    )
