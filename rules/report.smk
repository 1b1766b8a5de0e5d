# Report stage: the provenance of the results (the report itself is `snakemake --report`, which
# reads the outputs registered with report() in every stage and report/workflow.rst).


rule provenance:
    """Package versions, the workflow's git commit and per rule a hash of the params Snakemake
    recorded for its jobs, walked back from the study's final files (robustmaps.provenance).
    A `run:` block, not a script: the records are Snakemake's own (workflow.persistence). No
    timestamps, so two runs of the same config and code write the same bytes. Local: a second
    on the submitting node, next to the records."""
    localrule: True
    input:
        all_outputs(),
    output:
        report(
            "results/provenance.json",
            caption="../report/captions/provenance.rst",
            category="Provenance",
        ),
    params:
        commit=WORKFLOW_COMMIT,
        config=config,
    log:
        "results/logs/provenance.log",
    run:
        record_provenance(input, output[0], params, log[0])
