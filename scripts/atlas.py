"""Rule atlas: see robustmaps.atlas.write_atlas."""
from robustmaps.atlas import write_atlas
from robustmaps.runner import script

with script(snakemake):
    write_atlas(
        snakemake.output.image,
        snakemake.output.labels,
        grid=snakemake.params.working,
        atlas=snakemake.params.atlas,
    )
