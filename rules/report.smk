# Report stage: the provenance of the results (the report itself is `snakemake --report`, which
# reads the outputs registered with report() in every stage and report/workflow.rst).

include: "report.inputs.smk"


rule provenance:
    """Package versions, the workflow's git commit and per rule a hash of the params Snakemake
    recorded for its jobs, walked back from the study's final files (robustmaps.jobs.report.provenance).
    A `run:` block, not a script: the records are Snakemake's own (workflow.persistence). No
    timestamps, so two runs of the same config and code write the same bytes. Local: a second
    on the submitting node, next to the records."""
    localrule: True
    input:
        all_outputs(),
    output:
        reported(
            paths.PROVENANCE,
            caption="../report/captions/provenance.rst",
            category="Provenance",
        ),
    params:
        commit=WORKFLOW_COMMIT,
        config=rmconfig.without_resources(config),  # pure resources change no result
    benchmark:
        "results/benchmarks/provenance/provenance.tsv",
    log:
        "results/logs/provenance.log",
    run:
        record_provenance(input, output[0], params, log[0])


# Report privacy (report.pseudonymise): the key, then one local rule per table the report
# registers, writing its pseudonymised copy (robustmaps.jobs.report.pseudonymise_file); the report shows the copies.
if PSEUDONYMISE and not config["report"]["pseudonym_key"]:

    rule pseudonym_key:
        """The secret key of the pseudonyms, created once and write-protected (a re-run never
        replaces it: Snakemake refuses to overwrite a protected output)."""
        localrule: True
        output:
            protected(PSEUDONYM_KEY),
        benchmark:
            "results/benchmarks/pseudonym_key/job.tsv",
        run:
            from robustmaps.privacy import new_key

            new_key(output[0])


for _table, _settings in PRIVATE_TABLES.items():

    rule:
        name:
            pseudonymise_rule(_table)
        localrule: True
        input:
            table=_table,
            key=PSEUDONYM_KEY,
        output:
            reported_copy=report(pseudonymised(_table), **_settings),
        benchmark:
            f"results/benchmarks/{pseudonymise_rule(_table)}/{_table.removeprefix('results/')}.tsv",
        log:
            f"results/logs/pseudonymise/{_table.removeprefix('results/')}.log",
        conda:
            ENV
        script:
            "../scripts/pseudonymise.py"
