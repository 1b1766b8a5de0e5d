# Shared by every stage: library import path, semantic config checks, wildcard constraints,
# and the input functions that turn config into paths.
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
from robustmaps.io import gm_path, read_sessions
from robustmaps.provenance import git_commit
from robustmaps.sweep import sweep_points
from robustmaps.runner import GPU_FORM_ENV, gpu_form, gpu_request, gpu_resources, or_exit, visible_gpus

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


# A caps cohort's folder and session table must exist: a missing one stops the plan naming it.
or_exit(rmconfig.check_caps_inputs, config)
# Real cohorts' session tables are checked once, up front: a malformed table stops the plan.
# Diagnoses pass through data.diagnoses (case-insensitive) to the class names of data.labels.
SESSION_TABLES = {
    name: or_exit(read_sessions, spec["caps"]["tsv"], config["data"]["labels"], config["data"]["diagnoses"],
                  spec["caps"]["blank_demographics"])
    for name, spec in config["data"]["cohorts"].items()
    if spec["source"] == "caps"
}
or_exit(rmconfig.check_independent, config, SESSION_TABLES)
# an existing results or log folder that cannot be written stops the plan (read-only mount ...)
or_exit(rmconfig.check_writable, ["results", "results/logs"])


def kept_maps(name):
    """The GM maps of a caps cohort's sessions whose diagnosis data.labels keeps, as planned."""
    spec = config["data"]["cohorts"][name]
    sessions = SESSION_TABLES[name]
    sessions = sessions[sessions.diagnosis.isin(config["data"]["labels"])]
    gm = rmconfig.gm_settings(config, name)
    return [
        str(gm_path(spec["caps"]["caps_dir"], p, s, gm["pattern"], gm["space"], gm["modulated"]))
        for p, s in zip(sessions.participant_id, sessions.session_id)
    ]


# The maps that exist: a session whose map is missing (Clinica failed on it) is left out and QC
# excludes it, saying why (caps.missing: exclude); too many missing maps stop the plan.
KEPT_MAPS = {name: kept_maps(name) for name in SESSION_TABLES}
PRESENT_MAPS = {
    name: or_exit(rmconfig.present_maps, KEPT_MAPS[name], config["data"]["cohorts"][name]["caps"]["tsv"],
                  missing=config["data"]["cohorts"][name]["caps"]["missing"],
                  max_fraction=config["data"]["cohorts"][name]["caps"]["max_missing_fraction"],
                  key=f"data.cohorts.{name}.caps")
    for name in SESSION_TABLES
}
if workflow.is_main_process:
    for name, table in SESSION_TABLES.items():
        for line in rmconfig.excluded_diagnoses(table, config["data"]["labels"], config["data"]["cohorts"][name]["caps"]["tsv"]):
            print(f"NOTE: {line}", file=sys.stderr)
        n_absent = len(KEPT_MAPS[name]) - len(PRESENT_MAPS[name])
        if n_absent:
            print(f"NOTE: cohort '{name}': {n_absent} session(s) have no GM map and are excluded "
                  f"(listed in results/cohort/{name}/qc.tsv)", file=sys.stderr)
# the main cohort must have enough subjects per class for the test set and the folds
_main = config["data"]["cohorts"]["main"]
_found = None
if config["split"]["import_dir"]:
    _counts, _source = {}, None  # imported splits: their own test set and folds
elif _main["source"] == "caps":
    _t = SESSION_TABLES["main"]
    _counts = _t[_t.diagnosis.isin(config["data"]["labels"])].groupby("diagnosis").participant_id.nunique()
    _source, _found = _main["caps"]["tsv"], list(_t.diagnosis.unique())
else:
    _counts = {dx: _main["synthetic"][f"n_{dx.lower()}"] for dx in ("CN", "AD")}
    _source = "data.cohorts.main.synthetic"
if _source:
    or_exit(rmconfig.check_class_sizes, {dx: int(_counts.get(dx, 0)) for dx in config["data"]["labels"]},
            config["split"]["n_folds"], config["split"]["test_per_class"], _source, _found, config["data"]["diagnoses"])

COHORTS = list(config["data"]["cohorts"])
MAIN = "main"
FOLDS = list(range(config["split"]["n_folds"]))
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
TRAIN_FOLDS = config["train"]["folds"] if config["train"]["folds"] is not None else FOLDS
SEEDS = config["train"]["seeds"]
OTHER_COHORTS = [c for c in COHORTS if c != MAIN]
EVAL_SETS = ["validation", "test", *OTHER_COHORTS]
MODEL_DIR = "results/models/fold-{fold}/seed-{seed}"


# Masks: targets, sweep points and models from the config (see rules/masks.smk).
MASKS = config["masks"]
MODELS = rmconfig.trained_models(config)
MASK_TARGETS = MASKS["targets"]
SWEEP_POINTS = sweep_points(config)
SESSION_MODELS = rmconfig.mask_models(config, "session")
SWEEP_MODELS = rmconfig.mask_models(config, "sweep")
GROUP_DIR = "results/masks/group/{cohort}/{target}/fold-{fold}/seed-{seed}"
SESSION_DIR = "results/masks/session/{target}/fold-{fold}/seed-{seed}"
SWEEP_DIR = "results/masks/sweep/{point}/{target}/fold-{fold}/seed-{seed}"
# Second QC step (2.3.1) with masks.group.jump_action: exclude: a screening pass of every group
# mask, the cohort's exclusion list, then the group and sweep masks without those sessions.
EXCLUDE = MASKS["group"]["jump_action"] == "exclude"
SCREEN_DIR = "results/masks/screen/{cohort}/{target}/fold-{fold}/seed-{seed}"
EXCLUDED_TSV = "results/masks/qc/{cohort}/{target}/excluded.tsv"
GROUP_FILES = with_native_copies({
    "mask": "mask.nii.gz",
    "native": "mask_native.nii.gz",
    "history": "history.tsv",
    "summary": "summary.tsv",
    "flagged": "flagged.tsv",
})
MASK_GPU = gpus_for(MASKS["device"])
PENALTIES = ("l1", "l2", "b1", "b2", "lr", "score", "norm", "threshold", "eps", "batch_size", "seed")


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


# Saliency and Sobol (rules/saliency.smk): methods, models, where their files live.
SALIENCY = config["saliency"]
SOBOL = config["sobol"]
ANALYSIS = config["analysis"]
SAL_METHODS = [m for m in SALIENCY["methods"] if m != "actmax"]  # per-session methods (one rule each)
SAL_MODELS = rmconfig.saliency_models(config, "saliency")
SOBOL_MODELS = rmconfig.saliency_models(config, "sobol")
SAL_DIR = "results/saliency/{method}/fold-{fold}/seed-{seed}"
SOBOL_DIR = "results/sobol/fold-{fold}/seed-{seed}"
MAP_FILES = with_native_copies({
    "maps": "maps.nii.gz",
    "native": "maps_native.nii.gz",
    "index": "index.tsv",
    "group": "group.nii.gz",
    "group_native": "group_native.nii.gz",
})
CAM_METHODS = rmconfig.CAM_METHODS
SAL_GPU = gpus_for(SALIENCY["device"])
SOBOL_GPU = gpus_for(SOBOL["device"])
SAL_COMMON = ("batch_size", "seed")


wildcard_constraints:
    cohort="|".join(COHORTS),
    fold=r"\d+",
    seed=r"\d+",
    target="|".join(MASK_TARGETS),
    point="|".join(re.escape(p) for p in SWEEP_POINTS) or "no-sweep-point",
    method="|".join(SALIENCY["methods"]) or "no-saliency-method",
    worker=r"\d+",


def cohort_spec(wildcards):
    return config["data"]["cohorts"][wildcards.cohort]


def cohort_sessions(wildcards):
    return rmconfig.cohort_sessions_tsv(config, wildcards.cohort)


def cohort_images(wildcards):
    """A synthetic cohort's generated CAPS folder, or every present GM map of a real cohort whose
    diagnosis is kept by data.labels (so that a changed or new map is seen by Snakemake; maps of
    excluded diagnoses are never read and need not exist; see PRESENT_MAPS for missing ones)."""
    spec = cohort_spec(wildcards)
    if spec["source"] == "synthetic":
        return rmconfig.cohort_caps_dir(config, wildcards.cohort)
    return PRESENT_MAPS[wildcards.cohort]


def table_settings(wildcards):
    """How the qc rule reads a cohort's session table and its missing maps (caps settings;
    a synthetic cohort's own table is strict)."""
    caps = cohort_spec(wildcards).get("caps") or {}
    return {
        "diagnoses": config["data"]["diagnoses"],
        "blank_demographics": caps.get("blank_demographics", "error"),
        "missing": caps.get("missing", "error"),
    }


def split_tables():
    """Every split TSV of the main cohort (ClinicaDL names, folds from 0)."""
    files = ["results/splits/test_baseline.tsv", "results/splits/test.tsv"]
    for k in FOLDS:
        files += [
            f"results/splits/split-{k}/{name}.tsv"
            for name in ("train", "train_baseline", "validation_baseline")
        ]
    return files


def imported_split_files():
    """The split TSVs of split.import_dir, ClinicaDL's layout or the project's own (inputs, so
    that editing them re-runs); planning stops when the config asks for a test set and none is
    there, naming where it looked."""
    from robustmaps.splits import split_files  # here: splits imports scipy and scikit-learn

    root = config["split"]["import_dir"]
    if not root:
        return []
    found = or_exit(split_files, root, config["split"]["n_folds"], need_test=config["split"]["test_per_class"] > 0)
    files = [str(f[k]) for f in found["folds"] for k in ("train", "validation_baseline")]
    return files + [str(found[k]) for k in ("test_baseline", "test") if found.get(k)]


def models(pattern):
    """``pattern`` (a path with {fold} and {seed}) for every trained (fold, seed)."""
    return [pattern.format(fold=f, seed=s) for f in TRAIN_FOLDS for s in SEEDS]


def evaluation_inputs(wildcards):
    """Per evaluation set (its validation set, the test set, every independent cohort) the
    store, its index and the set's table, named {set}_store, {set}_index, {set}_table."""
    cohorts = {"validation": MAIN, "test": MAIN, **{c: c for c in OTHER_COHORTS}}
    tables = {
        "validation": f"results/splits/split-{wildcards.fold}/validation_baseline.tsv",
        "test": "results/splits/test_baseline.tsv",
        **{c: f"results/splits/{c}/test_baseline.tsv" for c in OTHER_COHORTS},
    }
    files = {}
    for name in EVAL_SETS:
        files[f"{name}_store"] = f"results/cohort/{cohorts[name]}/store.npy"
        files[f"{name}_index"] = f"results/cohort/{cohorts[name]}/index.tsv"
        files[f"{name}_table"] = tables[name]
    return files


# Masks (rules/masks.smk): where each kind of mask lives, and the exact settings it depends on.
def group_params(wildcards):
    """Exactly the values a group or sweep mask depends on (so that a change re-runs only those)."""
    p = {k: MASKS[k] for k in PENALTIES}
    group = MASKS["group"]
    if wildcards.get("cohort", MAIN) != MAIN:
        p |= {k: group[k] for k in ("include_validation", "jump_factor", "jump_action")}
        return p | MASKS["independent"]
    p |= group | {"validation_fraction": None}
    if "point" in wildcards.keys():
        p |= SWEEP_POINTS[wildcards.point]
        for key in ("max_images", "batch_size", "max_epochs", "patience"):  # null: the group's
            if MASKS["sweep"][key] is not None:
                p[key] = MASKS["sweep"][key]
    return p


def reference_input(wildcards):
    """mu of equation (1): a per-fold mean CN map, or nothing (mu = 1)."""
    if MASKS["reference"] == "one":
        return {}
    return {"reference": f"results/masks/reference/fold-{wildcards.fold}/mean_cn.nii.gz"}


def group_mask_inputs(wildcards, screen=False):
    """A group or sweep mask's inputs; with masks.group.jump_action: exclude, a group mask also reads
    its cohort's exclusion list and its own screening pass (``screen``: the screening job itself)."""
    cohort = wildcards.get("cohort", MAIN)
    files = {
        "model": f"results/models/fold-{wildcards.fold}/seed-{wildcards.seed}/model.pt",
        "store": f"results/cohort/{cohort}/store.npy",
        "index": f"results/cohort/{cohort}/index.tsv",
        **reference_input(wildcards),
    }
    if cohort == MAIN:
        files["images"] = f"results/splits/split-{wildcards.fold}/train.tsv"
        files["validation"] = f"results/splits/split-{wildcards.fold}/validation_baseline.tsv"
    else:
        files["images"] = f"results/splits/{cohort}/test.tsv"
    if EXCLUDE and not screen:
        files["excluded"] = EXCLUDED_TSV.format(cohort=cohort, target=wildcards.target)
        if "point" not in wildcards.keys():
            folder = SCREEN_DIR.format(cohort=cohort, target=wildcards.target, fold=wildcards.fold, seed=wildcards.seed)
            files |= {f"screen_{k}": f"{folder}/{v}" for k, v in GROUP_FILES.items()}
    return files


def group_masks(filename="summary"):
    """Every group mask's file ``filename`` (main and independent cohorts, every target, every model)."""
    return [
        f"{GROUP_DIR.format(cohort=c, target=t, fold=f, seed=s)}/{GROUP_FILES[filename]}"
        for c in COHORTS
        for t in MASK_TARGETS
        for f, s in MODELS
    ]


def session_masks(filename="index.tsv"):
    return [f"{SESSION_DIR.format(target=t, fold=f, seed=s)}/{filename}" for t in MASK_TARGETS for f, s in SESSION_MODELS]


def sweep_masks(filename="summary"):
    return [
        f"{SWEEP_DIR.format(point=p, target=t, fold=f, seed=s)}/{GROUP_FILES[filename]}"
        for p in SWEEP_POINTS
        for t in MASK_TARGETS
        for f, s in SWEEP_MODELS
    ]


def mask_entries():
    """Ids of every group, sweep and session mask, in the order of the summary's inputs."""
    entries = [
        {"kind": "group", "cohort": c, "target": t, "fold": f, "seed": s, "point": ""}
        for c in COHORTS
        for t in MASK_TARGETS
        for f, s in MODELS
    ]
    entries += [
        {"kind": "sweep", "cohort": MAIN, "target": t, "fold": f, "seed": s, "point": p}
        for p in SWEEP_POINTS
        for t in MASK_TARGETS
        for f, s in SWEEP_MODELS
    ]
    entries += [
        {"kind": "session", "cohort": MAIN, "target": t, "fold": f, "seed": s, "point": ""}
        for t in MASK_TARGETS
        for f, s in SESSION_MODELS
    ]
    return entries


# Saliency (rules/saliency.smk)
def saliency_params(method):
    """Exactly the settings the maps of ``method`` depend on (a change re-runs that method only)."""
    p = {k: SALIENCY[k] for k in SAL_COMMON}
    if method != "actmax":  # actmax explains classes: no per-session target
        p["target"] = SALIENCY["target"]
    if method in CAM_METHODS:
        p["layer"] = SALIENCY["layer"]
    if method in SALIENCY and isinstance(SALIENCY[method], dict):
        p[method] = SALIENCY[method]
    return p


def saliency_extra_inputs(method):
    """Inputs a method's maps job reads beyond the model and the test set: the masks' mu (the
    mean-CN reference) when faithfulness perturbs as the masks do, and the fold's training table
    for LOTS targets made from training images (class, mean)."""

    def inputs(wildcards):
        files = {}
        if SALIENCY["faithfulness"]["baseline"] == "mask":
            files |= reference_input(wildcards)
        if method == "lots" and SALIENCY["lots"]["target"] in ("class", "mean"):
            files["train"] = f"results/splits/split-{wildcards.fold}/train.tsv"
        return files

    return inputs


def map_files(method):
    """Output files of one method's per-session maps rule (wildcards fold, seed). The stack of
    per-session maps is a session stack (see session_stack); actmax's maps, one per class, are kept."""
    files = {k: f"{SAL_DIR.replace('{method}', method)}/{v}" for k, v in MAP_FILES.items()}
    if method == "actmax":
        return files
    return session_stack(files, "maps")


def saliency_maps(filename="index"):
    return [
        f"{SAL_DIR.format(method=m, fold=f, seed=s)}/{MAP_FILES[filename]}"
        for m in SALIENCY["methods"]
        for f, s in SAL_MODELS
    ]


def faithfulness_files():
    return [f"{SAL_DIR.format(method=m, fold=f, seed=s)}/faithfulness.tsv" for m in SAL_METHODS for f, s in SAL_MODELS]


def faithfulness_entries():
    return [{"method": m, "fold": f, "seed": s} for m in SAL_METHODS for f, s in SAL_MODELS]


def group_maps_by_method():
    return {
        m: [f"{SAL_DIR.format(method=m, fold=f, seed=s)}/{MAP_FILES['group']}" for f, s in SAL_MODELS]
        for m in SALIENCY["methods"]
    }


def sobol_files(filename):
    return [f"{SOBOL_DIR.format(fold=f, seed=s)}/{filename}.tsv" for f, s in SOBOL_MODELS]


# Analysis (rules/analysis.smk)
def analysis_entries():
    """Every mask, map and Sobol table with its ids, for the ROI-vector table."""
    entries = []
    for c in COHORTS:
        for t in MASK_TARGETS:
            for f, s in MODELS:
                path = f"{GROUP_DIR.format(cohort=c, target=t, fold=f, seed=s)}/{GROUP_FILES['mask']}"
                entries.append({"kind": "group", "method": "mask", "cohort": c, "target": t, "fold": f, "seed": s,
                                "source": "mask", "path": path})
    for p in SWEEP_POINTS:
        for t in MASK_TARGETS:
            for f, s in SWEEP_MODELS:
                path = f"{SWEEP_DIR.format(point=p, target=t, fold=f, seed=s)}/{GROUP_FILES['mask']}"
                entries.append({"kind": "sweep", "method": "mask", "cohort": MAIN, "target": t, "fold": f, "seed": s,
                                "point": p, "source": "mask", "path": path})
    for t in MASK_TARGETS:
        for f, s in SESSION_MODELS:
            folder = SESSION_DIR.format(target=t, fold=f, seed=s)
            entries.append({"kind": "session", "method": "mask", "cohort": MAIN, "target": t, "fold": f, "seed": s,
                            "source": "mask", "path": f"{folder}/masks.nii.gz", "index": f"{folder}/index.tsv"})
    for m in SALIENCY["methods"]:
        for f, s in SAL_MODELS:
            folder = SAL_DIR.format(method=m, fold=f, seed=s)
            common = {"method": m, "cohort": MAIN, "target": SALIENCY["group_class"], "fold": f, "seed": s,
                      "source": "map"}
            entries.append({"kind": "saliency", **common, "path": f"{folder}/{MAP_FILES['group']}"})
            if m != "actmax":
                entries.append({"kind": "saliency_session", **common, "path": f"{folder}/{MAP_FILES['maps']}",
                                "index": f"{folder}/{MAP_FILES['index']}"})
    for f, s in SOBOL_MODELS:
        entries.append({"kind": "sobol", "method": "sobol", "cohort": MAIN, "target": SOBOL["target"], "fold": f,
                        "seed": s, "source": "sobol", "path": f"{SOBOL_DIR.format(fold=f, seed=s)}/indices.tsv"})
    return entries


def ground_truth_input(wildcards):
    """The planted ROIs of a synthetic main cohort (nothing for a real cohort)."""
    if config["data"]["cohorts"][MAIN]["source"] == "synthetic":
        return {"truth": f"results/cohort/{MAIN}/ground_truth.tsv"}
    return {}


def prob_cnn_models():
    """Per trained model: its files for prob_CNN (model, validation table, main and independent
    group masks of the group class, reference map)."""
    target = SALIENCY["group_class"]
    out = []
    for f, s in MODELS:
        m = {"fold": f, "seed": s, "model": f"results/models/fold-{f}/seed-{s}/model.pt",
             "validation": f"results/splits/split-{f}/validation_baseline.tsv",
             "mask": f"{GROUP_DIR.format(cohort=MAIN, target=target, fold=f, seed=s)}/{GROUP_FILES['mask']}"}
        if OTHER_COHORTS:
            c = OTHER_COHORTS[0]
            m["independent"] = f"{GROUP_DIR.format(cohort=c, target=target, fold=f, seed=s)}/{GROUP_FILES['mask']}"
        if MASKS["reference"] != "one":
            m["reference"] = f"results/masks/reference/fold-{f}/mean_cn.nii.gz"
        out.append(m)
    return out


def prob_cnn_sessions():
    """The session masks of the first session-mask model (target: the group class), or None."""
    target = SALIENCY["group_class"]
    if not SESSION_MODELS or target not in MASK_TARGETS:
        return None
    f, s = SESSION_MODELS[0]
    folder = SESSION_DIR.format(target=target, fold=f, seed=s)
    return {"fold": f, "seed": s, "masks": f"{folder}/masks.nii.gz", "index": f"{folder}/index.tsv"}


def prob_cnn_other():
    """The independent cohort's store, index and test table (its baselines), where the main
    cohort's masks are scored on its images (prob_CNN between cohorts, the other way)."""
    if not OTHER_COHORTS:
        return {}
    c = OTHER_COHORTS[0]
    return {"other_store": f"results/cohort/{c}/store.npy", "other_index": f"results/cohort/{c}/index.tsv",
            "other_table": f"results/splits/{c}/test_baseline.tsv"}


def prob_cnn_inputs():
    files = [v for m in prob_cnn_models() for k, v in m.items() if k not in ("fold", "seed")]
    sessions = prob_cnn_sessions()
    return files + ([sessions["masks"], sessions["index"]] if sessions else [])


def group_mask_files():
    """"fold/seed" -> the main cohort's group mask of the group class, for the views figure."""
    target = SALIENCY["group_class"]
    if target not in MASK_TARGETS:
        return {}
    return {
        f"{f}/{s}": f"{GROUP_DIR.format(cohort=MAIN, target=target, fold=f, seed=s)}/{GROUP_FILES['mask']}"
        for f, s in MODELS
    }


def sweep_values():
    """The table that records the sweep points' values (the masks' summary), where there is a
    sweep: its one-parameter series and neighbours come from those values, never from the ids."""
    return {"points": "results/masks/summary.tsv"} if SWEEP_MODELS and SWEEP_POINTS else {}


def sweep_figure_masks():
    """Sweep point -> the group mask of the first sweep model at that point, for the group class
    (or the first mask target), for the study's Figures 3-4."""
    if not SWEEP_MODELS or not MASK_TARGETS:
        return {}
    target = SALIENCY["group_class"] if SALIENCY["group_class"] in MASK_TARGETS else MASK_TARGETS[0]
    f, s = SWEEP_MODELS[0]
    return {p: f"{SWEEP_DIR.format(point=p, target=target, fold=f, seed=s)}/{GROUP_FILES['mask']}" for p in SWEEP_POINTS}


def analysis_inputs():
    files = []
    for e in analysis_entries():
        files += [e["path"]] + ([e["index"]] if "index" in e else [])
    return files


def all_outputs():
    """Every final product of the stages implemented so far."""
    out = split_tables() + ["results/splits/summary.tsv", "results/atlas/atlas.nii.gz", "results/cohort/summary.tsv"]
    out += [f"results/splits/{c}/test.tsv" for c in OTHER_COHORTS]
    out += ["results/training/summary.tsv", "results/training/learning_curves.png"]
    out += ["results/masks/summary.tsv", "results/masks/qc_flagged.tsv", "results/masks/group_masks.png",
            "results/masks/sweep.png"]
    if SAL_METHODS:
        out += ["results/saliency/faithfulness_summary.tsv", "results/saliency/group_maps.png"]
    if "actmax" in SALIENCY["methods"]:  # not summarised when it is the only method
        out += [f"{SAL_DIR.format(method='actmax', fold=f, seed=s)}/{MAP_FILES['group']}" for f, s in SAL_MODELS]
    if SOBOL_MODELS:
        out += ["results/sobol/indices.tsv", "results/sobol/convergence.png"]
    out += ["results/analysis/similarity/summary.tsv", "results/analysis/similarity/families.png",
            "results/analysis/regions/roi_frequency.png", "results/analysis/regions/recovery.png",
            "results/analysis/stats/variance.tsv", "results/analysis/stats/tests.tsv",
            "results/analysis/prob_cnn/summary.tsv", "results/analysis/brain/masks.png",
            "results/analysis/sweep/figure3_b1_b2.png"]
    if HPO["enabled"]:
        out += [f"{HPO_DIR}/trials.tsv", f"{HPO_DIR}/best.yaml"]
    return out


# Hyperparameter search (rules/hpo.smk)
HPO = config["hpo"]
HPO_DIR = "results/hpo"
# the shared optuna study: appended to by every worker, never an output (a re-run continues it)
HPO_JOURNAL = f"{HPO_DIR}/study/journal.log"
HPO_INPUTS = {
    "store": f"results/cohort/{MAIN}/store.npy",
    "index": f"results/cohort/{MAIN}/index.tsv",
    "train": f"results/splits/split-{HPO['fold']}/train.tsv",
    "validation": f"results/splits/split-{HPO['fold']}/validation_baseline.tsv",
}


def hpo_params():
    """The search's settings: the hpo section only (never train.*), so that changing training
    settings does not re-run the search."""
    keys = ("n_trials", "sampler", "pruner", "hyperband", "seed", "space", "baseline", "max_parameters")
    train = {k: HPO[k] for k in ("max_epochs", "patience", "min_epochs", "amp")}  # cache_size: a resource
    return {**{k: HPO[k] for k in keys}, "train": train}


def train_settings():
    """train.* values the train rule uses; with train.architecture_from_hpo the searched ones
    come from best.yaml (an input) instead, so that they do not re-run training for nothing."""
    keys = ["architecture", "lr", "weight_decay", "batch_size", "max_epochs", "patience", "min_epochs",
            "normalisation", "amp", "augmentation"]  # not the pure resources (rmconfig.RESOURCES)
    if config["train"]["architecture_from_hpo"]:
        keys = [k for k in keys if k not in ("architecture", "lr", "weight_decay", "batch_size", "normalisation")]
    return {k: config["train"][k] for k in keys}


def hpo_best_input(wildcards):
    """best.yaml of the search, an input of training when train.architecture_from_hpo."""
    return {"best": f"{HPO_DIR}/best.yaml"} if config["train"]["architecture_from_hpo"] else {}


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


# Report (report/workflow.rst; the stages register their figures and tables with report()):
# per-model brain views, labelled so that a reader can filter by method / target, fold and seed.
def mask_views():
    """output name -> (path, labels): a view of every main-cohort group mask."""
    return {
        f"view_{t}_{f}_{s}": (f"results/masks/views/{t}_fold-{f}_seed-{s}.png", {"target": t, "fold": f, "seed": s})
        for t in MASK_TARGETS
        for f, s in MODELS
    }


def saliency_views():
    """output name -> (path, labels): a view of every model's group map of every method."""
    return {
        f"view_{m}_{f}_{s}": (f"results/saliency/views/{m}_fold-{f}_seed-{s}.png", {"method": m, "fold": f, "seed": s})
        for m in SALIENCY["methods"]
        for f, s in SAL_MODELS
    }


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
