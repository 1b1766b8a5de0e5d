"""Rule entries of the analysis stage (study 2.4 and 3): ROI vectors of every mask and map, the
similarity families, and the regions the masks point at.

ROI vectors (``results/analysis/roi_vectors.tsv``): one row per mask or map, id columns
(robustmaps.similarity.ID_COLUMNS) and one column per atlas ROI (its name). Masks: the ROI
reduction (``mean`` or ``sum`` over the ROI's voxels) of the perturbation 1 - m (the study's
density); saliency maps: the same reduction of the map, each per-session map min-max normalised
to [0, 1] when it was written (a group map is the mean of those); Sobol: the total-order index
ST of each ROI (one value per ROI already).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .similarity import ID_COLUMNS

log = logging.getLogger(__name__)


def _baseline_flags(pids, sessions) -> list[bool]:
    """True for each subject's earliest session (natural order of the session ids)."""
    from .io import natural_key

    first = {}
    for p, s in zip(pids, sessions):
        if p not in first or natural_key(s) < natural_key(first[p]):
            first[p] = s
    return [first[p] == s for p, s in zip(pids, sessions)]


def roi_table(entries: list[dict], atlas_nii, labels_tsv, reduction: str = "mean",
              group_class: str = "AD") -> pd.DataFrame:
    """The tidy ROI-vector table of ``entries``: dicts with the id columns and ``path`` (a 3D or 4D
    NIfTI on the working grid; a Sobol ``indices.tsv``), ``source`` (``mask``, ``map`` or
    ``sobol``) and, for 4D files, ``index`` (their index TSV)."""
    from .atlas import load_labels
    from .io import InputError, load_nifti, read_tsv
    from .roi import indicator, roi_vectors

    atlas, _ = load_nifti(atlas_nii)
    labels = load_labels(labels_tsv)
    names, ids = labels["name"].tolist(), labels["index"].tolist()
    matrix = indicator(atlas, ids, reduction)
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
        vectors = roi_vectors(values, atlas, ids, reduction, matrix=matrix)
        if "index" in e:
            idx = read_tsv(e["index"], ["participant_id", "session_id"], what="index",
                           dtype={"participant_id": str, "session_id": str})
            if len(idx) != len(vectors):
                raise InputError(f"{e['path']}: {len(vectors)} volumes but {e['index']} lists {len(idx)}")
            flags = _baseline_flags(idx.participant_id, idx.session_id)
            for v, p, s, b in zip(vectors, idx.participant_id, idx.session_id, flags):
                rows.append({**base, "participant_id": p, "session_id": s, "baseline": b, **dict(zip(names, v))})
        else:
            rows.append({**base, **dict(zip(names, vectors[0]))})
    return pd.DataFrame(rows, columns=ID_COLUMNS + names)


def roi_vectors_entry(entries: list[dict], atlas_nii, labels_tsv, out_tsv, *, reduction: str = "mean",
                      group_class: str = "AD") -> None:
    """Rule entry: ``results/analysis/roi_vectors.tsv``."""
    from .io import write_tsv

    table = roi_table(entries, atlas_nii, labels_tsv, reduction, group_class)
    write_tsv(table, out_tsv)
    log.info("ROI vectors: %d rows (%s)", len(table),
             ", ".join(f"{k} {v}" for k, v in table.kind.value_counts().sort_index().items()))


def similarity_matrices(table: pd.DataFrame, rois: list[str], group_class: str = "AD") -> dict:
    """Labelled cosine matrices: the main cohort's ``group_class`` group masks of every model
    (fold x seed), and the methods (group mask, saliency group maps, Sobol ST) averaged over models."""
    from .roi import cosine_matrix

    out = {}
    g = table[(table.kind == "group") & (table.method == "mask") & (table.cohort == "main")
              & (table.target == group_class)].sort_values(["fold", "seed"])
    if len(g) > 1:
        labels = [f"f{f} s{s}" for f, s in zip(g.fold, g.seed)]
        out[f"{group_class} group masks (fold, seed)"] = pd.DataFrame(
            cosine_matrix(g[rois].to_numpy(float)), index=labels, columns=labels)
    level = pd.concat([g, table[table.kind.isin(["saliency", "sobol"])]])
    methods = list(dict.fromkeys(level.method))
    if len(methods) > 1:
        acc, n = np.zeros((len(methods), len(methods))), 0
        for _, m in level.groupby(["fold", "seed"]):
            if set(m.method) != set(methods):
                continue
            m = m.drop_duplicates("method").set_index("method").loc[methods]
            acc += cosine_matrix(m[rois].to_numpy(float))
            n += 1
        if n:
            out[f"methods (mean over {n} models)"] = pd.DataFrame(acc / n, index=methods, columns=methods)
    return out


def similarity_entry(roi_tsv, out: dict, *, group_class: str = "AD") -> None:
    """Rule entry: every family's pairs with their cosine, the summary and its figure."""
    from .io import read_tsv, write_tsv
    from .plots import similarity_families_figure, similarity_matrices_figure
    from .similarity import similarities, summary

    table = read_tsv(roi_tsv, ID_COLUMNS, what="ROI-vector table",
                     dtype={"participant_id": str, "session_id": str, "point": str})
    rois = [c for c in table.columns if c not in ID_COLUMNS]
    pairs = similarities(table, rois, group_class)
    summ = summary(pairs)
    write_tsv(pairs, out["pairs"])
    write_tsv(summ, out["summary"])
    similarity_families_figure(pairs, out["figure"])
    similarity_matrices_figure(similarity_matrices(table, rois, group_class), out["matrices"])
    for r in summ.itertuples():
        log.info("%-17s %4d pairs  cosine %.3f +- %.3f", r.family, r.n_pairs, r.mean, r.sd)


def top_rois(table: pd.DataFrame, rois: list[str], k: int = 5) -> pd.DataFrame:
    """The ``k`` ROIs of highest value (mask density, map mean, ST) of every row -> tidy
    (ids..., rank, roi, value); ROIs of value 0 are not ranked."""
    rows = []
    values = table[rois].to_numpy(dtype=np.float64)
    ids = table[ID_COLUMNS].to_dict("records")
    for i, v in enumerate(values):
        order = np.argsort(-v, kind="stable")[:k]
        rows += [{**ids[i], "rank": r + 1, "roi": rois[j], "value": v[j]} for r, j in enumerate(order) if v[j] > 0]
    return pd.DataFrame(rows, columns=ID_COLUMNS + ["rank", "roi", "value"])


def recovery(table: pd.DataFrame, rois: list[str], planted: list[str]) -> pd.DataFrame:
    """How well each row's ROI ranking finds the planted ROIs: ROC AUC (planted = positives,
    ties count half; 0.5 for a zero vector) and precision at k = number of planted ROIs."""
    from sklearn.metrics import roc_auc_score

    positive = np.isin(rois, planted)
    k = int(positive.sum())
    values = table[rois].to_numpy(dtype=np.float64)
    out = table[ID_COLUMNS].copy()
    out["roc_auc"] = [roc_auc_score(positive, v) if positive.any() and not positive.all() else np.nan
                      for v in values]
    out["precision_at_k"] = [positive[np.argsort(-v, kind="stable")[:k]].mean() if k else np.nan for v in values]
    out["k"] = k
    return out


def regions_entry(roi_tsv, ground_truth_tsv, out: dict, *, group_class: str = "AD", k: int = 5,
                  masks: dict | None = None) -> None:
    """Rule entry: top-``k`` ROIs of every group mask (the study's 3.2.1 list) and how often each
    ROI is among them over the main cohort's ``group_class`` masks; recovery of the planted ROIs
    (synthetic main cohort) by every mask and map; views of the group masks per fold and seed
    (``masks``: "fold/seed" -> NIfTI path)."""
    from .io import read_tsv, write_tsv
    from .plots import recovery_figure, roi_frequency_figure

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
    roi_frequency_figure(freq, n_masks, out["frequency_figure"])
    recovery_figure(rec, out["recovery_figure"])
    if masks is not None:
        from .plots import group_mask_views

        group_mask_views({tuple(int(v) for v in key.split("/")): p for key, p in masks.items()}, out["views"])
    if len(rec):
        g = rec[(rec.kind == "group") & (rec.cohort == "main") & (rec.target == group_class)]
        log.info("planted-ROI recovery of the main %s group masks: ROC AUC %.3f (mean), precision at %d %.3f",
                 group_class, g.roc_auc.mean(), int(rec.k.iloc[0]), g.precision_at_k.mean())


def stats_entry(training_summary_tsv, roi_tsv, out: dict, *, group_class: str = "AD", n_boot: int = 1000,
                n_perm: int = 5000, seed: int = 0) -> None:
    """Rule entry (seed 004): fold and seed components of the variance of test balanced accuracy
    (nested random effects, bootstrap CIs), and a permutation test over models of inter-fold vs
    inter-seed ROI similarity of the main cohort's ``group_class`` group masks."""
    from .io import read_tsv, write_tsv
    from .roi import cosine_matrix
    from .stats import bootstrap_nested_variance, permutation_test_models

    summary = read_tsv(training_summary_tsv, ["fold", "seed", "set", "balanced_accuracy"], what="training summary")
    per_model = pd.to_numeric(summary.fold, errors="coerce").notna()  # not the mean / sd rows
    test = summary[(summary["set"] == "test") & per_model].astype({"fold": int, "seed": int})
    test = test.rename(columns={"balanced_accuracy": "value"})
    try:
        variance = bootstrap_nested_variance(test, n_boot=n_boot, seed=seed).assign(quantity="test balanced accuracy")
    except ValueError as exc:
        log.warning("variance components of test balanced accuracy: %s", exc)
        variance = pd.DataFrame(columns=["component", "estimate", "ci_low", "ci_high", "quantity"])
    table = read_tsv(roi_tsv, ID_COLUMNS, what="ROI-vector table", dtype={"participant_id": str, "point": str})
    rois = [c for c in table.columns if c not in ID_COLUMNS]
    g = table[(table.kind == "group") & (table.method == "mask") & (table.cohort == "main")
              & (table.target == group_class)]
    tests = []
    try:
        r = permutation_test_models(cosine_matrix(g[rois].to_numpy(float)), g.fold.to_numpy(), g.seed.to_numpy(),
                                    n_perm=n_perm, seed=seed)
        tests.append({"test": "inter-fold vs inter-seed ROI similarity (group masks)", "unit": "model", **r})
    except ValueError as exc:
        log.warning("inter-fold vs inter-seed permutation test: %s", exc)
    write_tsv(variance[["quantity", "component", "estimate", "ci_low", "ci_high"]], out["variance"])
    write_tsv(pd.DataFrame(tests, columns=["test", "unit", "difference", "p_value", "n_a", "n_b", "cohens_d"]),
              out["tests"])
    for r in tests:
        log.info("%s: difference %.3f, p = %.4f, d = %.2f", r["test"], r["difference"], r["p_value"], r["cohens_d"])


PROB_COLUMNS = ["family", "fold_a", "seed_a", "fold_b", "seed_b", "participant_a", "session_a", "participant_b",
                "session_b", "probability", "n_images"]


def prob_cnn_entry(models: list[dict], store_npy, index_tsv, out: dict, *, target: str = "AD",
                   sessions: dict | None = None, device: str = "auto", threads: int = 1, seed: int = 0) -> None:
    """Rule entry: prob_CNN (study 2.4), the mean probability of the true class of images masked
    with a mask optimised in another context, scored by this context's model.

    ``models``: one dict per model with fold, seed, ``model`` (model.pt), ``validation`` (its
    validation table), ``mask`` (its main-cohort ``target`` group mask), ``independent`` (its
    independent-cohort group mask, optional) and ``reference`` (mu of eq. (1), optional).
    Families: ``folds`` / ``seeds`` (model B's correctly classified validation ``target``
    images, masked with model A's group mask: other fold same seed / same fold other seed),
    ``own`` (A = B), ``cohorts`` (a model's independent-cohort mask on its own main validation
    images), ``intra_subject`` / ``inter_subject`` (``sessions``: one model's session masks,
    session A's mask on session B's image; sessions of one subject / baseline sessions of two)."""
    from .io import load_nifti, read_tsv, write_tsv
    from .masks import MaskSettings, correct_rows, load_reference, masked_scores
    from .training import class_index, load_model, open_for_model, read_split_rows

    rows = []
    loaded = {}
    store = index = None
    for m in models:
        model, meta = load_model(m["model"], device, threads, seed)
        if store is None:  # one store (the main cohort's) for every model
            store, index = open_for_model(store_npy, index_tsv, meta, m["model"])
        label = class_index(meta, target, m["model"])
        val = read_split_rows(m["validation"], index)
        loaded[(m["fold"], m["seed"])] = (model, correct_rows(model, store, val, label), label,
                                          load_reference(m.get("reference"), store.shape[1:],
                                                         next(model.parameters()).device))
    dev = next(next(iter(loaded.values()))[0].parameters()).device
    masks = {(m["fold"], m["seed"]): torch_mask(load_nifti(m["mask"])[0], dev) for m in models}
    for (fa, sa), mask in masks.items():
        for (fb, sb), (model, val_rows, label, mu) in loaded.items():
            family = ("own" if (fa, sa) == (fb, sb) else "folds" if sa == sb and fa != fb
                      else "seeds" if fa == fb else "other")
            p = masked_scores(model, store, val_rows, mask, MaskSettings(target=label), mu)
            rows.append({"family": family, "fold_a": fa, "seed_a": sa, "fold_b": fb, "seed_b": sb,
                         "probability": float(np.mean(p)) if len(p) else np.nan, "n_images": len(p)})
    for m in models:
        if m.get("independent"):
            model, val_rows, label, mu = loaded[(m["fold"], m["seed"])]
            p = masked_scores(model, store, val_rows, torch_mask(load_nifti(m["independent"])[0], dev),
                              MaskSettings(target=label), mu)
            rows.append({"family": "cohorts", "fold_a": m["fold"], "seed_a": m["seed"], "fold_b": m["fold"],
                         "seed_b": m["seed"], "probability": float(np.mean(p)) if len(p) else np.nan,
                         "n_images": len(p)})
    if sessions:
        model, _, label, mu = loaded[(sessions["fold"], sessions["seed"])]
        data, _ = load_nifti(sessions["masks"], squeeze=False)
        data = data.reshape(*data.shape[:3], -1)
        idx = read_tsv(sessions["index"], ["participant_id", "session_id"], what="session mask index",
                       dtype={"participant_id": str, "session_id": str})
        position = pd.Series(np.arange(len(index)), index=pd.MultiIndex.from_frame(index[["participant_id",
                                                                                           "session_id"]]))
        image_rows = position.loc[list(zip(idx.participant_id, idx.session_id))].to_numpy()
        base = _baseline_flags(idx.participant_id, idx.session_id)
        for a in range(len(idx)):
            mask = torch_mask(data[..., a], dev)
            p = masked_scores(model, store, image_rows, mask, MaskSettings(target=label), mu)
            for b in range(len(idx)):
                same = idx.participant_id[a] == idx.participant_id[b]
                if a == b:
                    family = "own_session"
                elif same:
                    family = "intra_subject"
                elif base[a] and base[b]:
                    family = "inter_subject"
                else:
                    continue
                rows.append({"family": family, "fold_a": sessions["fold"], "seed_a": sessions["seed"],
                             "fold_b": sessions["fold"], "seed_b": sessions["seed"],
                             "participant_a": idx.participant_id[a], "session_a": idx.session_id[a],
                             "participant_b": idx.participant_id[b], "session_b": idx.session_id[b],
                             "probability": float(p[b]), "n_images": 1})
    pairs = pd.DataFrame(rows, columns=PROB_COLUMNS)
    summary = pairs.groupby("family").probability.agg(["size", "mean", "std"]).reset_index()
    summary.columns = ["family", "n_pairs", "mean", "sd"]
    write_tsv(pairs, out["pairs"])
    write_tsv(summary, out["summary"])
    for r in summary.itertuples():
        log.info("prob_CNN %-14s %4d pairs  %.3f +- %.3f", r.family, r.n_pairs, r.mean, r.sd)


def torch_mask(volume: np.ndarray, device):
    import torch

    return torch.from_numpy(np.asarray(volume, np.float32))[None, None].to(device)
