# Paths, settings and input functions of the masks stage (rules/masks.smk).


# Masks: targets, sweep points and models from the config (see rules/masks.smk).
MASKS = config["masks"]
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
    return {"reference": paths.reference(wildcards.fold)}


def group_mask_inputs(wildcards, screen=False):
    """A group or sweep mask's inputs; with masks.group.jump_action: exclude, a group mask also reads
    its cohort's exclusion list and its own screening pass (``screen``: the screening job itself)."""
    cohort = wildcards.get("cohort", MAIN)
    files = {
        "model": paths.model(wildcards.fold, wildcards.seed),
        "store": paths.store(cohort),
        "index": paths.store_index(cohort),
        **reference_input(wildcards),
    }
    if cohort == MAIN:
        files["images"] = paths.fold_table("train", wildcards.fold)
        files["validation"] = paths.fold_table("validation_baseline", wildcards.fold)
    else:
        files["images"] = paths.cohort_test_table("test", cohort)
    if EXCLUDE and not screen:
        files["excluded"] = EXCLUDED_TSV.format(cohort=cohort, target=wildcards.target)
        if "point" not in wildcards.keys():
            folder = SCREEN_DIR.format(cohort=cohort, target=wildcards.target, fold=wildcards.fold, seed=wildcards.seed)
            files |= {f"screen_{k}": f"{folder}/{v}" for k, v in GROUP_FILES.items()}
    return files


def mask_records():
    """Every group, sweep and session mask: its ids and the files the masks' summary reads (its
    summary, or a session model's index; a group mask's flagged images and mask)."""
    records = []
    for c in COHORTS:
        for t in MASK_TARGETS:
            for f, s in MODELS:
                folder = GROUP_DIR.format(cohort=c, target=t, fold=f, seed=s)
                records.append({"kind": "group", "cohort": c, "target": t, "fold": f, "seed": s, "point": "",
                                **{k: f"{folder}/{GROUP_FILES[k]}" for k in ("summary", "flagged", "mask")}})
    for p in SWEEP_POINTS:
        for t in MASK_TARGETS:
            for f, s in SWEEP_MODELS:
                folder = SWEEP_DIR.format(point=p, target=t, fold=f, seed=s)
                records.append({"kind": "sweep", "cohort": MAIN, "target": t, "fold": f, "seed": s, "point": p,
                                "summary": f"{folder}/{GROUP_FILES['summary']}"})
    for t in MASK_TARGETS:
        for f, s in SESSION_MODELS:
            folder = SESSION_DIR.format(target=t, fold=f, seed=s)
            records.append({"kind": "session", "cohort": MAIN, "target": t, "fold": f, "seed": s, "point": "",
                            "summary": f"{folder}/index.tsv"})
    return records


MASK_INPUTS, MASK_RECORDS = name_paths(mask_records(), "mask", ("summary", "flagged", "mask"))
# the screening pass's flagged tables of a cohort's group masks (second QC step, jump_action: exclude)
SCREEN_INPUTS, SCREEN_RECORDS = name_paths(
    [{"model": f"fold-{f}/seed-{s}",
      "flagged": f"{SCREEN_DIR}/{GROUP_FILES['flagged']}".format(cohort="{cohort}", target="{target}", fold=f, seed=s)}
     for f, s in MODELS], "screen", ("flagged",))


# The report's per-model brain views, labelled so that a reader can filter by target, fold and seed.
def mask_views():
    """output name -> (path, labels): a view of every main-cohort group mask."""
    return {
        f"view_{t}_{f}_{s}": (f"results/masks/views/{t}_fold-{f}_seed-{s}.png", {"target": t, "fold": f, "seed": s})
        for t in MASK_TARGETS
        for f, s in MODELS
    }
