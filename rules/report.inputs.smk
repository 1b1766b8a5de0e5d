# The provenance record (rules/report.smk); the report's privacy and views are shared by every
# stage (rules/common.smk).

from robustmaps.provenance import git_commit


# the workflow's git commit, a param of the provenance rule (results/provenance.json)
WORKFLOW_COMMIT = git_commit(workflow.basedir)


def record_provenance(targets, out_json, params, log_file):
    """The provenance rule's body (rules/report.smk): robustmaps.jobs.report.provenance over
    Snakemake's own records of the jobs that wrote ``targets`` and their inputs."""
    from snakemake.io import IOFile
    from robustmaps.jobs.report import provenance

    def record(path):
        m = workflow.persistence.metadata(IOFile(path))
        return m and {"rule": m.rule, "params": m.params, "input": m.input}

    provenance(targets, out_json, record, commit=params.commit, config=params.config, log_file=log_file)
