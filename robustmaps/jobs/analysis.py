"""Rule entries of the analysis stage (rules/analysis.smk) (study 2.4 and 3): ROI vectors of every mask and map, the
similarity families, and the regions the masks point at.

ROI vectors (``results/analysis/roi_vectors.tsv``): one row per mask or map, id columns
(robustmaps.roi.ID_COLUMNS) and one column per atlas ROI (its name). Masks: the sum over
the ROI's voxels of the perturbation 1 - m (``roi.masks.reduction: sum``, the study's "1 minus
the sum of the values in the ROI"; ``mean`` weights small ROIs up); saliency maps: the
``roi.maps.reduction`` of the map (each per-session map is min-max
normalised to [0, 1] when it is written; a group map is the mean of those), then, with
``roi.map_normalisation: above_mean`` (default), the brain's mean subtracted and negative values
set to 0 (robustmaps.roi.above_mean: a dense map's offset would otherwise make every pair of maps
similar); Sobol: the total-order index ST of each ROI (one value per ROI already).
"""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import pandas as pd

from ..atlas import load_labels
from ..io import InputError, load_nifti, read_tsv, write_tsv
from ..plots import (
    brain_maps_figure,
    group_mask_views,
    recovery_figure,
    roi_frequency_figure,
    similarity_families_figure,
    similarity_matrices_figure,
    sweep_masks_figure,
)
from ..preprocess import baseline_flags, read_index
from ..roi import (
    ID_COLUMNS,
    MAP_NORMALISATIONS,
    above_mean,
    indicator,
    paint_rois,
    recovery,
    roi_outline,
    roi_vectors,
    top_rois,
    unit_rows,
)
from ..similarity import (
    PUBLISHED,
    prob_cnn_matrices,
    prob_cnn_summary,
    similarities,
    similarity_matrices,
    summary,
    sweep_tables,
)
from ..splits import read_split_rows
from ..stats import TEST_COLUMNS, VARIANCE_COLUMNS, study_tests, variance_components
from ..sweep import POINT_COLUMNS, points_table, series, shown_fixed
from ..trained import class_index, correct_rows, load_model, open_for_model
from ..transfer import PROB_COLUMNS, Scorer, between_cohorts, between_models, between_sessions, torch_mask
from ..volumes import load_reference

log = logging.getLogger(__name__)


def roi_table(entries: list[dict], atlas_nii, labels_tsv, reduction: str = "mean",
              group_class: str = "AD", map_normalisation: str = "above_mean", store_index=None,
              mask_reduction: str = "sum") -> pd.DataFrame:
    """The tidy ROI-vector table of ``entries``: dicts with the id columns and ``path`` (a 3D or 4D
    NIfTI on the working grid; a Sobol ``indices.tsv``), ``source`` (``mask``, ``map`` or
    ``sobol``) and, for 4D files, ``index`` (their index TSV). Masks are reduced with
    ``mask_reduction`` (``sum`` of 1 - m over each ROI: the study's "1 minus the sum of the values
    in the ROI"; ``mean`` weights small ROIs up), maps with ``reduction`` and then
    ``map_normalisation``. ``store_index``: the main cohort's
    store index (its ``baseline`` column marks each per-session row's baseline; needed when an
    entry has an index)."""

    if map_normalisation not in MAP_NORMALISATIONS:
        raise ValueError(f"roi.map_normalisation must be one of {MAP_NORMALISATIONS}, got {map_normalisation!r}")

    atlas, _ = load_nifti(atlas_nii)
    labels = load_labels(labels_tsv)
    names, ids = labels["name"].tolist(), labels["index"].tolist()
    matrices = {"map": indicator(atlas, ids, reduction)}
    matrices["mask"] = matrices["map"] if mask_reduction == reduction else indicator(atlas, ids, mask_reduction)
    rows = []
    for e in entries:
        base = {c: e.get(c, "") for c in ID_COLUMNS}
        if e["source"] == "sobol":
            t = read_tsv(e["path"], ["roi", "ST", "images"], what="Sobol table")
            t = t[t["images"] == group_class].set_index("roi")
            rows.append({**base, **{n: float(t.ST.get(n, 0.0)) for n in names}})
            continue
        data, _ = load_nifti(e["path"], squeeze=False)
        if tuple(data.shape[:3]) != tuple(atlas.shape):
            raise InputError(f"{e['path']}: {data.shape[:3]} is not the atlas's grid {atlas.shape}")
        data = data.reshape(*atlas.shape, -1)
        values = 1.0 - data if e["source"] == "mask" else data
        matrix = matrices[e["source"]]
        vectors = roi_vectors(values, atlas, ids, matrix=matrix)
        if e["source"] == "map" and map_normalisation == "above_mean":
            vectors = above_mean(vectors, matrix)
        if "index" in e:
            idx = read_tsv(e["index"], ["participant_id", "session_id"], what="index",
                           dtype={"participant_id": str, "session_id": str})
            if len(idx) != len(vectors):
                raise InputError(f"{e['path']}: {len(vectors)} volumes but {e['index']} lists {len(idx)}")
            if store_index is None:
                raise ValueError("roi_table: per-session entries need the store index (baseline sessions)")
            if not isinstance(store_index, pd.DataFrame):
                store_index = read_index(store_index)
            flags = baseline_flags(store_index, idx.participant_id, idx.session_id, e["index"])
            for v, p, s, b in zip(vectors, idx.participant_id, idx.session_id, flags):
                rows.append({**base, "participant_id": p, "session_id": s, "baseline": b, **dict(zip(names, v))})
        else:
            rows.append({**base, **dict(zip(names, vectors[0]))})
    return pd.DataFrame(rows, columns=ID_COLUMNS + names)


def roi_vectors_entry(entries: list[dict], atlas_nii, labels_tsv, out_tsv, *, masks: dict, maps: dict,
                      group_class: str = "AD", index_tsv=None) -> None:
    """Rule entry: ``results/analysis/roi_vectors.tsv``. ``masks`` / ``maps``: the ROI settings of
    each kind (``roi.masks``: reduction; ``roi.maps``: reduction, normalisation)."""
    table = roi_table(entries, atlas_nii, labels_tsv, maps["reduction"], group_class, maps["normalisation"],
                      index_tsv, mask_reduction=masks["reduction"])
    write_tsv(table, out_tsv)
    log.info("ROI vectors: %d rows (%s)", len(table),
             ", ".join(f"{k} {v}" for k, v in table.kind.value_counts().sort_index().items()))


def read_points(points_tsv) -> pd.DataFrame | None:
    """The sweep points' recorded values (robustmaps.sweep.points_table) from the masks' summary;
    None without a sweep."""
    if not points_tsv:
        return None
    table = read_tsv(points_tsv, ["kind", *POINT_COLUMNS], what="masks' summary", dtype={"point": str})
    try:
        return points_table(table)
    except ValueError as exc:
        raise InputError(f"{points_tsv}: {exc}") from None


def similarity_entry(roi_tsv, out: dict, *, group_class: str = "AD", n_boot: int = 2000, level: float = 0.95,
                     seed: int = 0, points_tsv=None) -> None:
    """Rule entry: every family's pairs with their cosine, the summary (with CIs from a bootstrap
    over units: ``n_boot`` draws, ``level``, ``seed``) and its figure. ``points_tsv``: the table
    that records the sweep points' values (the masks' summary; needed with a sweep)."""
    table = read_tsv(roi_tsv, ID_COLUMNS, what="ROI-vector table",
                     dtype={"participant_id": str, "session_id": str, "point": str})
    rois = [c for c in table.columns if c not in ID_COLUMNS]
    points = read_points(points_tsv)
    pairs = similarities(table, rois, group_class, points)
    summ = summary(pairs, n_boot=n_boot, level=level, seed=seed)
    write_tsv(pairs, out["pairs"])
    write_tsv(summ, out["summary"])
    similarity_families_figure(pairs, summ, out["figure"], published=PUBLISHED)
    if "sweep_tables" in out:
        write_tsv(sweep_tables(table, rois, points), out["sweep_tables"])
    similarity_matrices_figure(similarity_matrices(table, rois, group_class), out["matrices"])
    for r in summ.itertuples():
        log.info("%-17s %4d pairs of %3d units  cosine %.3f +- %.3f  (%.0f%% CI %.3f-%.3f)", r.family, r.n_pairs,
                 r.n_units, r.mean, r.sd, 100 * level, r.ci_low, r.ci_high)


def regions_entry(roi_tsv, ground_truth_tsv, out: dict, *, group_class: str = "AD", k: int = 5,
                  masks: dict | None = None, cut_coords=(-26, -20, -15)) -> None:
    """Rule entry: top-``k`` ROIs of every group mask (the study's 3.2.1 list) and how often each
    ROI is among them over the main cohort's ``group_class`` masks; recovery of the planted ROIs
    (synthetic main cohort) by every mask and map; views of the group masks per fold and seed
    (``masks``: "fold/seed" -> NIfTI path) cut at ``cut_coords`` (x, y, z mm; y and z drawn)."""
    table = read_tsv(roi_tsv, ID_COLUMNS, what="ROI-vector table",
                     dtype={"participant_id": str, "session_id": str, "point": str})
    rois = [c for c in table.columns if c not in ID_COLUMNS]
    groups = table[(table.kind == "group") & (table.method == "mask")]
    top = top_rois(groups, rois, k)
    main = top[(top.cohort == "main") & (top.target == group_class)]
    n_masks = len(groups[(groups.cohort == "main") & (groups.target == group_class)])
    freq = main.groupby("roi").size().rename("n_masks").reset_index()
    freq["fraction"] = freq.n_masks / max(n_masks, 1)
    freq = freq.sort_values(["n_masks", "roi"], ascending=[False, True])
    planted = []
    if ground_truth_tsv:
        truth = read_tsv(ground_truth_tsv, ["roi_name", "weight"], what="ground truth")
        planted = truth.roi_name[truth.weight > 0].tolist()
    rec = recovery(table, rois, planted) if planted else pd.DataFrame(columns=ID_COLUMNS + ["roc_auc",
                                                                                        "precision_at_k", "k"])
    write_tsv(top, out["top"])
    write_tsv(freq, out["frequency"])
    write_tsv(rec, out["recovery"])
    roi_frequency_figure(freq, n_masks, out["frequency_figure"], k=k)
    recovery_figure(rec, out["recovery_figure"])
    if masks is not None:
        group_mask_views({tuple(int(v) for v in key.split("/")): p for key, p in masks.items()}, out["views"],
                         cut_coords=cut_coords)
    if len(rec):
        g = rec[(rec.kind == "group") & (rec.cohort == "main") & (rec.target == group_class)]
        log.info("planted-ROI recovery of the main %s group masks: ROC AUC %.3f (mean), precision at %d %.3f",
                 group_class, g.roc_auc.mean(), int(rec.k.iloc[0]), g.precision_at_k.mean())


def brain_maps_entry(roi_tsv, atlas_nii, labels_tsv, ground_truth_tsv, out: dict, *, masks: dict, maps: dict,
                     cut_coords, group_class: str = "AD", mask_threshold: float = 0.05) -> dict:
    """Rule entry: brain views over the MNI152 template, the same cuts ``cut_coords`` (x, y, z mm)
    everywhere, of (``out["masks"]``) the main cohort's ``group_class`` group mask of every model
    (``masks``: "fold/seed" -> NIfTI; the perturbation 1 - m, shown above ``mask_threshold``),
    (``out["saliency"]``) every saliency method's group map averaged over its models (``maps``:
    method -> NIfTIs; its top 5% of brain voxels) and (``out["sobol"]``) every model's Sobol ST;
    each beside its ROI-level map (every atlas region painted with its value in ``roi_tsv``, the
    value the similarities compare). On a synthetic cohort (``ground_truth_tsv``) the planted
    ROIs (weight > 0) are outlined in every panel. Returns the nilearn displays of each figure."""
    import nibabel as nib

    table = read_tsv(roi_tsv, ID_COLUMNS, what="ROI-vector table",
                     dtype={"participant_id": str, "session_id": str, "point": str, "fold": str, "seed": str})
    rois = [c for c in table.columns if c not in ID_COLUMNS]
    atlas, affine = load_nifti(atlas_nii)
    labels = load_labels(labels_tsv).set_index("name")
    ids = [int(labels.loc[r, "index"]) for r in rois]
    brain = atlas > 0

    def nii(data):
        return nib.Nifti1Image(np.asarray(data, np.float32), affine)

    def roi_image(rows):
        return nii(paint_rois(atlas, ids, rows[rois].astype(float).mean().to_numpy())) if len(rows) else None

    outline = None
    if ground_truth_tsv:
        truth = read_tsv(ground_truth_tsv, ["roi_name", "weight"], what="ground truth")
        planted = [r for r in truth.roi_name[truth.weight > 0] if r in labels.index]
        if planted:
            outline = nii(roi_outline(atlas, [int(labels.loc[r, "index"]) for r in planted]))

    def select(kind, method, **more):
        t = table[(table.kind == kind) & (table.method == method)]
        for k, v in more.items():
            t = t[t[k].astype(str) == str(v)]
        return t

    mask_rows = []
    for key, path in masks.items():
        fold, seed = key.split("/")
        m, _ = load_nifti(path)
        mask_rows.append({"title": f"mask fold {fold} seed {seed}", "voxel_label": "1 - m",
                          "roi_label": "ROI sum of 1 - m", "voxel": nii(1.0 - m),
                          "voxel_vmax": 1.0, "voxel_threshold": mask_threshold,
                          "roi": roi_image(select("group", "mask", cohort="main", target=group_class, fold=fold,
                                                  seed=seed))})
    drawn = {"masks": brain_maps_figure(mask_rows, out["masks"], cut_coords=cut_coords, outline=outline)}

    sal_rows = []
    for method, paths in maps.items():
        mean = np.mean([load_nifti(p)[0] for p in paths], 0)
        inside = mean[brain] if brain.any() else mean.ravel()
        top = float(inside.max()) if inside.size else 0.0
        sal_rows.append({"title": f"{method} ({len(paths)} model{'s' * (len(paths) > 1)})",
                         "voxel_label": f"{method} (0-1 per session)", "roi_label": f"{method} ROI, above brain mean",
                         "voxel": nii(np.where(brain, mean, 0)), "voxel_vmax": max(top, 1e-12),
                         "voxel_threshold": float(np.percentile(inside, 95)) if inside.size else None,
                         "roi": roi_image(select("saliency", method, cohort="main"))})
    drawn["saliency"] = brain_maps_figure(sal_rows, out["saliency"], cut_coords=cut_coords, outline=outline)

    sobol = table[table.kind == "sobol"]
    sobol_rows = [{"title": f"Sobol ST fold {f} seed {s}", "label": "ST", "voxel": None,
                   "roi": roi_image(sobol[(sobol.fold == f) & (sobol.seed == s)])}
                  for f, s in dict.fromkeys(zip(sobol.fold, sobol.seed))]
    drawn["sobol"] = brain_maps_figure(sobol_rows, out["sobol"], cut_coords=cut_coords, outline=outline,
                                       columns=("roi",))
    log.info("brain maps: %d masks, %d saliency methods, %d Sobol models; planted outline: %s; cuts %s",
             len(mask_rows), len(sal_rows), len(sobol_rows), "yes" if outline is not None else "no",
             list(cut_coords))
    return drawn


def sweep_figures_entry(points: list[dict], out: dict, *, cut_coords) -> dict:
    """Rule entry: the study's Figures 3-4 for this run's sweep: ``out["b"]`` the series along b1
    and b2, ``out["l"]`` those along l1 and l2 (one row per series, its points' masks side by
    side). ``points``: per sweep point, the group mask of one model (``mask``) and that mask's
    ``summary``, whose recorded values (b1, b2, l1, l2, lr) make the series. Returns the displays
    of each figure."""
    masks = {p["point"]: p["mask"] for p in points}
    pts = None
    if points:
        rows = [read_tsv(p["summary"], POINT_COLUMNS[1:], what="sweep mask summary").iloc[0] for p in points]
        pts = points_table(pd.DataFrame([{"point": p["point"], **{k: r[k] for k in POINT_COLUMNS[1:]}}
                                         for p, r in zip(points, rows)]))
    drawn = {}
    for key, params in (("b", ("b1", "b2")), ("l", ("l1", "l2"))):
        rows = []
        for param, fixed, members in (series(pts, sort=False) if pts is not None else []):
            if param not in params:
                continue
            row = ", ".join(f"{k} {v:g}" for k, v in shown_fixed(fixed, pts).items())
            panels = []
            for point, value in zip(members.point, members[param]):
                data, affine = load_nifti(masks[point])
                panels.append((f"{param} = {value:g}", nib.Nifti1Image(1.0 - data, affine)))
            rows.append((f"{param} ({row})", panels))
        drawn[key] = sweep_masks_figure(rows, out[key], cut_coords=cut_coords,
                                        empty=f"no one-parameter series along {' or '.join(params)} in "
                                              "masks.sweep.points")
    return drawn


def stats_entry(training_summary_tsv, roi_tsv, pairs_tsv, out: dict, *, group_class: str = "AD",
                n_boot: int = 1000, n_perm: int = 5000, level: float = 0.95, seed: int = 0) -> None:
    """Rule entry (seed 004).

    ``variance.tsv``: fold and seed components (seeds nested in folds, nested random effects,
    two-stage bootstrap CIs) of test balanced accuracy and of the ROI pattern of each kind of
    per-model map (the main cohort's ``group_class`` group masks, each saliency method's group
    maps, Sobol ST): the summed variance over ROIs of the unit-normalised ROI vectors. The sample
    variance of unit vectors is the mean 1 - cosine over their pairs, so the total is the maps'
    ROI dissimilarity and its fold and seed components say how much of it comes from the data
    split and how much from the seed.

    ``tests.tsv``: inter-fold vs inter-seed similarity of the group masks (models permuted,
    rows and columns of the similarity matrix together); inter-fold and inter-seed vs
    inter-subject similarity (per-unit means, units' labels permuted: models vs subjects);
    intra- vs inter-subject similarity of session masks (per subject, paired sign flips). Every
    test permutes units, never pairs, since pairs that share a member are dependent."""
    summary = read_tsv(training_summary_tsv, ["fold", "seed", "set", "balanced_accuracy"], what="training summary")
    per_model = pd.to_numeric(summary.fold, errors="coerce").notna()  # not the mean / sd rows
    test = summary[(summary["set"] == "test") & per_model].astype({"fold": int, "seed": int})
    table = read_tsv(roi_tsv, ID_COLUMNS, what="ROI-vector table", dtype={"participant_id": str, "point": str})
    rois = [c for c in table.columns if c not in ID_COLUMNS]
    pairs = read_tsv(pairs_tsv, ["family", "unit_a", "unit_b", "cosine"], what="similarity pairs",
                     dtype={"unit_a": str, "unit_b": str})
    g = table[(table.kind == "group") & (table.method == "mask") & (table.cohort == "main")
              & (table.target == group_class)]
    quantities = [("test balanced accuracy", test.rename(columns={"balanced_accuracy": "value"}), "value")]
    per_model_maps = [(f"ROI pattern: {group_class} group masks", g)]
    per_model_maps += [(f"ROI pattern: {m} {'ST' if k == 'sobol' else 'group maps'}", t)
                       for (k, m), t in table[table.kind.isin(["saliency", "sobol"])].groupby(["kind", "method"])]
    for name, t in per_model_maps:
        frame = pd.DataFrame(unit_rows(t[rois].to_numpy(float)), columns=rois)
        frame["fold"], frame["seed"] = t.fold.to_numpy(), t.seed.to_numpy()
        quantities.append((name, frame, rois))
    variance = variance_components(quantities, n_boot=n_boot, level=level, seed=seed)
    tests = study_tests(g[rois].to_numpy(float), g.fold.to_numpy(), g.seed.to_numpy(), pairs, n_perm=n_perm,
                        seed=seed)
    write_tsv(variance[VARIANCE_COLUMNS], out["variance"])
    write_tsv(pd.DataFrame(tests, columns=TEST_COLUMNS), out["tests"])
    for r in tests:
        if not r["note"]:
            log.info("%s: difference %.3f, p = %.4f, d = %.2f (%d vs %d %s)", r["test"], r["difference"],
                     r["p_value"], r["cohens_d"], r["n_a"], r["n_b"], r["unit"])


def prob_cnn_entry(models: list[dict], store_npy, index_tsv, out: dict, *, target: str = "AD",
                   sessions: dict | None = None, other: dict | None = None, device: str = "auto",
                   threads: int = 1, seed: int = 0) -> None:
    """Rule entry: prob_CNN (study 2.4), the mean probability of the true class of images masked
    with a mask optimised in another context, scored by this context's model.

    ``models``: one dict per model with fold, seed, ``model`` (model.pt), ``validation`` (its
    validation table), ``mask`` (its main-cohort ``target`` group mask), ``independent`` (its
    independent-cohort group mask, optional) and ``reference`` (mu of eq. (1), optional).
    Families: ``folds`` / ``seeds`` (model B's correctly classified validation ``target``
    images, masked with model A's group mask: other fold same seed / same fold other seed),
    ``own`` (A = B); between cohorts both ways, as the study compared them: ``cohorts_other_on_main``
    (a model's independent-cohort mask on its own main validation images) and
    ``cohorts_main_on_other`` (its main-cohort mask on its correctly classified ``target`` images
    of the independent cohort: ``other`` = {"store", "index", "table"}, that cohort's store and
    test table); ``intra_subject`` / ``inter_subject`` (``sessions``: one model's session masks,
    session A's mask on session B's image; sessions of one subject / baseline sessions of two)."""
    scorers, store, index = {}, None, None
    for m in models:
        model, meta = load_model(m["model"], device, threads, seed)
        if store is None:  # one store (the main cohort's) for every model
            store, index = open_for_model(store_npy, index_tsv, meta, m["model"])
        label = class_index(meta, target, m["model"])
        val = read_split_rows(m["validation"], index)
        scorers[(m["fold"], m["seed"])] = Scorer(model, correct_rows(model, store, val, label), label,
                                                 load_reference(m.get("reference"), store.shape[1:],
                                                                next(model.parameters()).device))
    dev = next(next(iter(scorers.values())).model.parameters()).device
    masks = {(m["fold"], m["seed"]): torch_mask(load_nifti(m["mask"])[0], dev) for m in models}
    rows = between_models(scorers, masks, store)
    other_store = other_table = None
    if other:
        other_store, other_index = open_for_model(other["store"], other["index"], meta, models[0]["model"])
        other_table = read_split_rows(other["table"], other_index)
    for m in models:
        if m.get("independent"):
            key = (m["fold"], m["seed"])
            rows += between_cohorts(key, scorers[key], store, torch_mask(load_nifti(m["independent"])[0], dev),
                                    masks[key], other_store, other_table)
    if sessions:
        key = (sessions["fold"], sessions["seed"])
        data, _ = load_nifti(sessions["masks"], squeeze=False)
        idx = read_tsv(sessions["index"], ["participant_id", "session_id"], what="session mask index",
                       dtype={"participant_id": str, "session_id": str})
        position = pd.Series(np.arange(len(index)), index=pd.MultiIndex.from_frame(index[["participant_id",
                                                                                           "session_id"]]))
        rows += between_sessions(key, scorers[key], store, data.reshape(*data.shape[:3], -1), idx,
                                 position.loc[list(zip(idx.participant_id, idx.session_id))].to_numpy(),
                                 baseline_flags(index, idx.participant_id, idx.session_id, sessions["index"]))
    pairs = pd.DataFrame(rows, columns=PROB_COLUMNS)
    summary = prob_cnn_summary(pairs)
    write_tsv(pairs, out["pairs"])
    write_tsv(summary, out["summary"])
    similarity_matrices_figure(prob_cnn_matrices(pairs), out["matrices"], label="prob_CNN (true class)")
    for r in summary.itertuples():
        log.info("prob_CNN %-14s %4d pairs  %.3f +- %.3f", r.family, r.n_pairs, r.mean, r.sd)
