# Shared by every stage: the library's import path, GPU placement, the cohorts and grids, the
# wildcard constraints, what goes into the report, and the workflow's final files. Each stage's
# own paths, settings and input functions live beside its rules, in rules/<stage>.inputs.smk,
# which rules/<stage>.smk includes first.
import os
import re
import sys

# The library package lives beside this workflow (the Snakefile put it on sys.path): make it
# importable in every job too, also inside --sdm conda environments, which inherit PYTHONPATH.
# (Set here for the jobs, not required from the user: hence no envvars directive.)
os.environ.update(
    PYTHONPATH=os.pathsep.join(p for p in (workflow.basedir, os.environ.get("PYTHONPATH")) if p)
)

from robustmaps import config as rmconfig
from robustmaps.grid import native_grid, working_grid
from robustmaps.jobs import paths
from robustmaps.sweep import sweep_points
from robustmaps.runner import GPU_FORM_ENV, gpu_form, gpu_request, gpu_resources, or_exit, visible_gpus

# GPU placement: each network rule asks for one GPU (`gpu` resource) unless its device is cpu or
# the workflow runs here (local executor) on a machine without a GPU, where the job runs on CPU and asks for none
# (robustmaps.runner.gpu_request). The local profile's `resources: gpu=N` caps the GPU jobs run
# at once; on a cluster the executor places them on GPU nodes. A callable: the executor is only
# known when the DAG is built, after this file is read.
def local_execution():
    """True when jobs run on this machine. A dry run (-n) swaps the intended executor for
    Snakemake's dryrun executor, which is local; Snakemake then forces use_threads when the
    intended one is remote (snakemake.api), so that a plan made with the Slurm profile shows the
    GPUs the submission will ask for (tested)."""
    if workflow.remote_exec or not workflow.local_exec:
        return False
    return not (workflow.dryrun and workflow.execution_settings.use_threads)


# A cluster run without --configfile (CONFIG_NAMED, Snakefile) stops in `all`'s input.
def config_named(wildcards):
    """Stop a cluster run (or its plan) that gave no --configfile, before anything is submitted."""
    if not CONFIG_NAMED and not local_execution():
        print("ERROR: no --configfile given: a cluster run uses no default config (the default, "
              "config/config.yaml, is the synthetic laptop demo). Add --configfile config/paper.yaml "
              "(the study, with your data paths) or --configfile config/config.yaml (the demo).",
              file=sys.stderr)
        sys.exit(1)
    return []


# The form of the GPU request on a cluster (ROBUSTMAPS_SLURM_GPU; README "On a cluster"): `gpu`
# (--gpus=1) by default, or gres, a GPU model, a constraint (robustmaps.runner.gpu_resources).
GPU_FORM = or_exit(gpu_form, os.environ.get(GPU_FORM_ENV))


def gpus_for(device):
    """A network rule's GPU resources (`**gpus_for(device)` in its resources): one callable per key."""
    def resources(wildcards):
        local = local_execution()
        return gpu_resources(gpu_request(device, local, visible_gpus() if local else None), GPU_FORM, local)

    return {key: (lambda wildcards, key=key: resources(wildcards)[key])
            for key in ("gpu", "gres", "gpu_model", "constraint")}

COHORTS = list(config["data"]["cohorts"])
MAIN = paths.MAIN
FOLDS = list(range(config["split"]["n_folds"]))
OTHER_COHORTS = [c for c in COHORTS if c != MAIN]
NATIVE_GRID = native_grid(config).to_config()
WORKING_GRID = working_grid(config).to_config()
# On the native grid (config/paper.yaml: 1.5 mm, uncropped) a native-grid copy of a mask or map
# would repeat its working-grid file: the rules then have no native outputs and write none.
NATIVE_COPIES = NATIVE_GRID != WORKING_GRID


def with_native_copies(files):
    """``files`` (output name -> path) without the native-grid copies when there are none."""
    return files if NATIVE_COPIES else {k: v for k, v in files.items() if k not in ("native", "group_native")}

# the rules' conda env (--sdm conda): torch's CUDA build when ROBUSTMAPS_TORCH=cuda (GPU nodes)
ENV = "../envs/robustmaps-cuda.yaml" if os.environ.get("ROBUSTMAPS_TORCH") == "cuda" else "../envs/robustmaps.yaml"

# Per-session stacks (session masks, saliency maps): 4D NIfTIs that only the ROI vectors and
# prob_CNN read. Unless storage.keep_session_maps, they are temp() (deleted once read) and have no
# native-grid copy; the script writes the native copy only when it is an output.
KEEP_SESSION_MAPS = config["storage"]["keep_session_maps"]


def session_stack(files, stack):
    """``files`` (output name -> path, with a "native" copy of ``files[stack]``) as the rule's outputs."""
    files = with_native_copies(files)
    if KEEP_SESSION_MAPS:
        return files
    return {k: temp(v) if k == stack else v for k, v in files.items() if k != "native"}

wildcard_constraints:
    cohort="|".join(COHORTS),
    fold=r"\d+",
    seed=r"\d+",
    target="|".join(config["masks"]["targets"]),
    point="|".join(re.escape(p) for p in sweep_points(config)) or "no-sweep-point",
    method="|".join(config["saliency"]["methods"]) or "no-saliency-method",
    worker=r"\d+",


# A rule that reads many files of one kind (one per model, mask or map) takes them as named inputs,
# and in its params the records of their ids with each file replaced by its input's name; the
# script gets the files back by name (robustmaps.runner.resolve_inputs). A file's ids travel with
# it in one record: nothing is paired by position with a parallel list.
def name_paths(obj, prefix, keys=None):
    """(named inputs, ``obj`` with names): every path in ``obj`` (records, a dict, a list) replaced
    by an input name ``{prefix}_{n}``; with ``keys``, only the values of those keys are paths."""
    inputs = {}

    def walk(x, key=None):
        if isinstance(x, dict):
            return {k: walk(v, k) for k, v in x.items()}
        if isinstance(x, list):
            return [walk(v, key) for v in x]
        if isinstance(x, str) and (keys is None or key in keys):
            name = f"{prefix}_{len(inputs)}"
            inputs[name] = x
            return name
        return x

    return inputs, walk(obj)


def all_outputs():
    """Every final product of the study: the last outputs of each stage, named where their rules
    write them (the `all` and provenance rules are defined after every stage)."""
    r = rules
    out = split_tables() + [r.split.output.summary, r.atlas.output.image, r.cohort_table.output[0]]
    out += expand(r.test_cohort.output.sessions, cohort=OTHER_COHORTS)
    out += [r.training_summary.output.summary, r.training_summary.output.curves]
    out += [r.masks_summary.output[k] for k in ("summary", "flagged", "figure", "sweep")]
    if SAL_METHODS:
        out += [r.saliency_summary.output.table, r.saliency_summary.output.maps_figure]
    if "actmax" in SALIENCY["methods"]:  # not summarised when it is the only method
        out += [f"{SAL_DIR.format(method='actmax', fold=f, seed=s)}/{MAP_FILES['group']}" for f, s in SAL_MODELS]
    if SOBOL_MODELS:
        out += [r.sobol_summary.output.indices, r.sobol_summary.output.figure]
    out += [r.similarity.output.summary, r.similarity.output.figure, r.regions.output.frequency_figure,
            r.regions.output.recovery_figure, r.stats.output.variance, r.stats.output.tests,
            r.prob_cnn.output.summary, r.brain_maps.output.masks, r.sweep_figures.output.b]
    if HPO["enabled"]:
        out += [r.hpo_summary.output.trials, r.hpo_summary.output.best]
    return [str(f) for f in out]


# Report privacy (report.pseudonymise; robustmaps.privacy): the report registers pseudonymised
# copies of its tables, one pseudonymise_<table> rule each (rules/report.smk); results/ keeps the
# real ids. The key lives outside the report.
PSEUDONYMISE = config["report"]["pseudonymise"]
PSEUDONYM_KEY = config["report"]["pseudonym_key"] or "results/private/pseudonym.key"
PRIVATE_TABLES = {}  # a registered table's path -> its report() settings
if PSEUDONYMISE and config["report"]["pseudonym_key"]:
    from robustmaps.privacy import read_key

    or_exit(read_key, PSEUDONYM_KEY)


def reported(path, **settings):
    """``report(path, **settings)``: an output registered in the report. With report.pseudonymise
    a table (TSV, JSON) is registered through its pseudonymised copy instead (rules/report.smk)."""
    if PSEUDONYMISE and path.endswith((".tsv", ".json")):
        PRIVATE_TABLES[path] = settings
        return path
    return report(path, **settings)


def pseudonymised(path):
    """Where the report's pseudonymised copy of the table ``path`` lives."""
    return f"results/pseudonymised/{path.removeprefix('results/')}"


def pseudonymise_rule(path):
    """pseudonymise_<the table's path>, the name of the job that pseudonymises ``path``."""
    stem = re.sub(r"\W+", "_", re.sub(r"\{\w+\}/?", "", path.removeprefix("results/")))
    return f"pseudonymise_{stem.removesuffix('_tsv').removesuffix('_json').strip('_')}"


def private_tables():
    """Every pseudonymised copy the report registers (none unless report.pseudonymise)."""
    return [f for p in PRIVATE_TABLES for f in expand(pseudonymised(p), cohort=COHORTS)]

def report_views(views, caption, category, subcategory):
    """The outputs of ``views`` registered in the report, with their labels (as strings: the
    report's label table fails to render numbers; caught by the Chromium test)."""
    return {
        name: report(
            path,
            caption=caption,
            category=category,
            subcategory=subcategory,
            labels={k: str(v) for k, v in labels.items()},
        )
        for name, (path, labels) in views.items()
    }
