"""Rule faithfulness: see robustmaps.saliency.maps.faithfulness_entry."""
from robustmaps.runner import script
from robustmaps.saliency.maps import faithfulness_entry

with script(snakemake):
    faithfulness_entry(
        snakemake.input.model,
        snakemake.input.store,
        snakemake.input.index,
        snakemake.input.maps,
        snakemake.input.maps_index,
        snakemake.output[0],
        method=snakemake.params.method,
        params=snakemake.params.settings,
        faith=snakemake.params.faithfulness,
        grids=snakemake.params.grids,
        device=snakemake.params.device,
        threads=snakemake.params.threads,
    )
