"""What the workflow reads of its pinned packages beyond their documented interfaces, checked
against the installed versions: when an upgrade moves or renames one of them, this fails here,
naming it, instead of a plan or a provenance record going wrong on a cluster.

- Snakemake: the Snakefile reads ``workflow.is_main_process`` (deep config checks once),
  ``workflow.remote_exec`` / ``local_exec`` / ``dryrun`` / ``execution_settings.use_threads``
  (GPU placement, rules/common.smk ``local_execution``) and ``workflow.persistence.metadata``
  (the provenance rule walks Snakemake's own job records: rule, params, input).
- PyTorch: ``torch._C._set_deterministic_algorithms`` (tests/unit/test_devices.py).
- Optuna: none (a trial of another process is ended through the storage's public interface,
  robustmaps.hpo.interrupt).
"""

import dataclasses
import inspect

import snakemake.api  # noqa: F401  (snakemake.workflow can only be imported after it)
from snakemake.persistence import MetadataRecord, PersistenceBase
from snakemake.settings.types import ExecutionSettings
from snakemake.workflow import Workflow


def test_the_workflow_attributes_the_snakefile_reads_exist():
    for name in ("is_main_process", "remote_exec", "local_exec", "dryrun", "persistence", "basedir"):
        assert isinstance(inspect.getattr_static(Workflow, name, None), property), f"Workflow.{name}"
    assert "execution_settings" in {f.name for f in dataclasses.fields(Workflow)}
    assert "use_threads" in {f.name for f in dataclasses.fields(ExecutionSettings)}


def test_a_job_record_still_holds_rule_params_and_input():
    """rules/common.smk record_provenance: persistence.metadata(IOFile(path)) -> .rule, .params, .input."""
    assert list(inspect.signature(PersistenceBase.metadata).parameters) == ["self", "target"]
    assert {"rule", "params", "input"} <= set(MetadataRecord.model_fields)
