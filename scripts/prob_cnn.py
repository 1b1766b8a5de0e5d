"""Rule prob_cnn: see robustmaps.jobs.analysis.prob_cnn_entry."""
from robustmaps.jobs.analysis import prob_cnn_entry
from robustmaps.config import job_resources
from robustmaps.runner import resolve_inputs, script

with script(snakemake):
    prob_cnn_entry(
        resolve_inputs(snakemake.params.models, snakemake.input),
        snakemake.input.store,
        snakemake.input.index,
        dict(snakemake.output.items()),
        target=snakemake.params.target,
        sessions=resolve_inputs(snakemake.params.sessions, snakemake.input),
        other={k: snakemake.input[f"other_{k}"] for k in ("store", "index", "table")}
        if "other_store" in snakemake.input.keys() else None,
        # pure resources come from the config, not params: changing them re-runs nothing
        **job_resources(snakemake.config, "masks", ("device",)),
        threads=snakemake.params.threads,
        seed=snakemake.params.seed,
    )
