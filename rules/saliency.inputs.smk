# Paths, settings and input functions of the saliency stage (rules/saliency.smk).


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


# Saliency (rules/saliency.smk)
def saliency_params(method):
    """Exactly the settings the maps of ``method`` depend on (a change re-runs that method only)."""
    return rmconfig.saliency_params(config, method)


def saliency_extra_inputs(method):
    """Inputs a method's maps job reads beyond the model and the test set: the masks' mu (the
    mean-CN reference) when faithfulness perturbs as the masks do, and the fold's training table
    for LOTS targets made from training images (class, mean)."""

    def inputs(wildcards):
        files = {}
        if SALIENCY["faithfulness"]["baseline"] == "mask":
            files |= reference_input(wildcards)
        if method == "lots" and SALIENCY["lots"]["target"] in ("class", "mean"):
            files["train"] = paths.fold_table("train", wildcards.fold)
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


def group_maps_by_method():
    return {
        m: [f"{SAL_DIR.format(method=m, fold=f, seed=s)}/{MAP_FILES['group']}" for f, s in SAL_MODELS]
        for m in SALIENCY["methods"]
    }


def saliency_views():
    """output name -> (path, labels): a view of every model's group map of every method."""
    return {
        f"view_{m}_{f}_{s}": (f"results/saliency/views/{m}_fold-{f}_seed-{s}.png", {"method": m, "fold": f, "seed": s})
        for m in SALIENCY["methods"]
        for f, s in SAL_MODELS
    }


# the summaries' records: every (method, model)'s faithfulness table, every model's Sobol tables,
# every method's group maps (rules/common.smk name_paths)
FAITHFULNESS_INPUTS, FAITHFULNESS_RECORDS = name_paths(
    [{"method": m, "fold": f, "seed": s, "faithfulness": f"{SAL_DIR.format(method=m, fold=f, seed=s)}/faithfulness.tsv"}
     for m in SAL_METHODS for f, s in SAL_MODELS], "faithfulness", ("faithfulness",))
SOBOL_INPUTS, SOBOL_RECORDS = name_paths(
    [{"fold": f, "seed": s, **{k: f"{SOBOL_DIR.format(fold=f, seed=s)}/{k}.tsv" for k in ("indices", "convergence")}}
     for f, s in SOBOL_MODELS], "sobol", ("indices", "convergence"))
GROUP_MAP_INPUTS, GROUP_MAPS = name_paths(group_maps_by_method(), "group_map")
