# robustmaps: robustness of the regions a CNN uses to tell AD from CN on gray-matter maps.
#
#   snakemake --profile slurm --configfile config/paper.yaml   # the study on a cluster (README)
#   snakemake --cores all --configfile config/paper.yaml       # the study on one machine
#   snakemake --cores all                                      # the laptop demo (config/config.yaml)
#
# Stages (one rules/*.smk each): data (cohort, QC, preprocessing, atlas) -> split -> train -> masks -> ...
# The logic lives in the robustmaps/ package; scripts/ holds thin glue, one script per rule.

from snakemake.utils import min_version, validate

min_version("9.0")

# The demo config is the default of a local run; `--configfile X` replaces it (keys missing from
# X take the schema's defaults, not the demo's values). A cluster run (any executor but the local
# one, also its dry run) must name its config: it never starts the synthetic demo by mistake
# (checked when the DAG is built, once the executor is known: see `all`).
CONFIG_NAMED = bool(workflow.overwrite_configfiles)
if not CONFIG_NAMED:

    configfile: os.path.join(workflow.basedir, "config", "config.yaml")


# The library beside this file checks the config first, so that a bad key or value stops with
# one line naming it (it fills the schema's defaults, as Snakemake's validation does); then
# Snakemake's own validation against the same schema.
sys.path.insert(0, workflow.basedir)
from robustmaps.jobs.common import validate as validate_config
from robustmaps.runner import or_exit

or_exit(validate_config, config, deep=workflow.is_main_process)
validate(config, "config/schema.yaml")


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/split.smk"
include: "rules/hpo.smk"
include: "rules/train.smk"
include: "rules/masks.smk"
include: "rules/saliency.smk"
include: "rules/analysis.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        config_named,
        all_outputs(),
        paths.PROVENANCE,
        private_tables(),  # the report's pseudonymised tables (report.pseudonymise)
