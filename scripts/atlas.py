"""Rule atlas: see robustmaps.jobs.data.write_atlas."""
from robustmaps.jobs.data import write_atlas
from robustmaps.runner import script

with script(snakemake):
    write_atlas(
        snakemake.output.image,
        snakemake.output.labels,
        grid=snakemake.params.working,
        atlas=snakemake.params.atlas,
    )
