# Input functions of the analysis stage (rules/analysis.smk): every mask, map and Sobol table
# with its ids, and what prob_CNN and the figures read.


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
        return {"truth": paths.ground_truth(MAIN)}
    return {}


def prob_cnn_models():
    """Per trained model: its files for prob_CNN (model, validation table, main and independent
    group masks of the group class, reference map)."""
    target = SALIENCY["group_class"]
    out = []
    for f, s in MODELS:
        m = {"fold": f, "seed": s, "model": paths.model(f, s),
             "validation": paths.fold_table("validation_baseline", f),
             "mask": f"{GROUP_DIR.format(cohort=MAIN, target=target, fold=f, seed=s)}/{GROUP_FILES['mask']}"}
        if OTHER_COHORTS:
            c = OTHER_COHORTS[0]
            m["independent"] = f"{GROUP_DIR.format(cohort=c, target=target, fold=f, seed=s)}/{GROUP_FILES['mask']}"
        if MASKS["reference"] != "one":
            m["reference"] = paths.reference(f)
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
    return {"other_store": paths.store(c), "other_index": paths.store_index(c),
            "other_table": paths.cohort_test_table("test_baseline", c)}


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
    return {"points": paths.MASKS_SUMMARY} if SWEEP_MODELS and SWEEP_POINTS else {}


def sweep_figure_points():
    """The sweep points of the study's Figures 3-4: per point, the group mask of the first sweep
    model (for the group class, or the first mask target) and that mask's summary, which records
    the point's values (its one-parameter series come from them)."""
    if not SWEEP_MODELS or not MASK_TARGETS:
        return []
    target = SALIENCY["group_class"] if SALIENCY["group_class"] in MASK_TARGETS else MASK_TARGETS[0]
    f, s = SWEEP_MODELS[0]
    return [{"point": p, **{k: f"{SWEEP_DIR.format(point=p, target=target, fold=f, seed=s)}/{GROUP_FILES[k]}"
                            for k in ("mask", "summary")}} for p in SWEEP_POINTS]


# the analysis rules' records (rules/common.smk name_paths): every mask, map and Sobol table for the
# ROI vectors; the group masks and maps the figures draw; what prob_CNN scores
ENTRY_INPUTS, ENTRY_RECORDS = name_paths(analysis_entries(), "entry", ("path", "index"))
VIEW_MASK_INPUTS, VIEW_MASKS = name_paths(group_mask_files(), "view_mask")
SWEEP_POINT_INPUTS, SWEEP_POINT_RECORDS = name_paths(sweep_figure_points(), "sweep_point", ("mask", "summary"))
PROB_MODEL_INPUTS, PROB_MODELS = name_paths(prob_cnn_models(), "prob_model",
                                            ("model", "validation", "mask", "independent", "reference"))
PROB_SESSION_INPUTS, PROB_SESSIONS = name_paths(prob_cnn_sessions(), "prob_sessions", ("masks", "index"))
