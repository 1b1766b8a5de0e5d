"""Families of ROI-cosine similarities (study 2.4 and 3): which pairs of masks or maps each
family compares, their cosine, and a summary in the order the study reports them.

The input is the tidy ROI-vector table (``results/analysis/roi_vectors.tsv``): id columns
(:data:`ID_COLUMNS`) and one column per ROI. Pairs are unordered; each pair is listed once.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from .roi import ID_COLUMNS, cosine, cosine_matrix
from .stats import cluster_bootstrap_ci
from .sweep import neighbours, series, shown_fixed

#: The study's order: Tables 2-3, 3.2.1, 3.2.2, 3.3; then this workflow's method comparison.
FAMILIES = ("sweep_neighbours", "sweep_all", "cohorts", "intra_subject", "inter_subject", "folds", "seeds",
            "methods")
#: The study's published ROI similarities per family (Thibeau-Sutre et al. 2020, ADNI; sections
#: 3.1-3.3): (low, high) of a value (low == high), a range (cohorts: the five models' 0.89-0.99) or
#: a bound (sweep neighbours: every pair of neighbouring values > 0.90, drawn up to 1).
PUBLISHED = {
    "sweep_neighbours": (0.90, 1.0),
    "cohorts": (0.89, 0.99),
    "intra_subject": (0.94, 0.94),
    "inter_subject": (0.80, 0.80),
    "folds": (0.65, 0.65),
    "seeds": (0.69, 0.69),
}
PAIR_COLUMNS = ["family", "a", "b", "target", "fold_a", "seed_a", "fold_b", "seed_b", "detail", "unit_a", "unit_b",
                "cosine"]


#: The study's Tables 2-3 (Thibeau-Sutre et al. 2020, 3.2.3): ROI similarity between the group
#: masks of the points of one series, as printed (rows and columns in the printed order; the
#: diagonal is blank; Table 2A's second row reads "0.2" in print, the 0.5 of its columns; Table
#: 3B is not symmetric in print: 0.96 above the diagonal, 0.91 below, for l2 = 0.001 vs 0.0001).
PUBLISHED_TABLES = {
    "b1": {"table": "Table 2A", "fixed": "b2 = 1, l1 = 1e-4, l2 = 1e-3", "values": [0.1, 0.5, 1, 2],
           "matrix": [[None, 0.98, 0.97, 0.32], [0.98, None, 1.00, 0.36], [0.97, 1.00, None, 0.37],
                      [0.32, 0.36, 0.37, None]]},
    "b2": {"table": "Table 2B", "fixed": "b1 = 0.1, l1 = 1e-4, l2 = 1e-3", "values": [1, 2, 3],
           "matrix": [[None, 0.90, 0.70], [0.90, None, 0.91], [0.70, 0.91, None]]},
    "l1": {"table": "Table 3A", "fixed": "b1 = 0.1, b2 = 1, l2 = 0.01", "values": [0.1, 0.01, 0.001, 0.0001],
           "matrix": [[None, 0.93, 0.84, 0.83], [0.93, None, 0.95, 0.91], [0.84, 0.95, None, 0.91],
                      [0.83, 0.91, 0.91, None]]},
    "l2": {"table": "Table 3B", "fixed": "b1 = 0.1, b2 = 1, l1 = 1e-4", "values": [0.1, 0.01, 0.001, 0.0001],
           "matrix": [[None, 0.98, 0.85, 0.72], [0.98, None, 0.92, 0.82], [0.85, 0.92, None, 0.96],
                      [0.72, 0.82, 0.91, None]]},
}
SWEEP_TABLE_COLUMNS = ["table", "target", "parameter", "fixed", "a", "b", "neighbours", "cosine", "n_models",
                       "study_fixed", "study_cosine"]


def published_cosine(param: str, a: float, b: float) -> float:
    """The study's printed similarity of the masks at ``a`` and ``b`` along ``param`` (the cell
    above the diagonal of its table); NaN where the study has no such pair."""
    t = PUBLISHED_TABLES.get(param)
    if t is None:
        return float("nan")
    idx = [next((i for i, v in enumerate(t["values"]) if np.isclose(v, x)), None) for x in (a, b)]
    if None in idx or idx[0] == idx[1]:
        return float("nan")
    i, j = sorted(idx)
    return float(t["matrix"][i][j])


def sweep_tables(table: pd.DataFrame, roi_columns: list[str], points: pd.DataFrame) -> pd.DataFrame:
    """The study's Tables 2-3 for this run: for every one-parameter series of the sweep and target,
    every pair of its points with their masks' ROI cosine (mean over the sweep's models), whether
    they are neighbours along the series, and the study's printed value for the same pair of
    values (``study_cosine``, NaN where it has none; its fixed values in ``study_fixed``).
    ``points``: the sweep points' values (robustmaps.sweep.points_table)."""
    sweep = table[table.kind == "sweep"]
    rows = []
    for target, t in sweep.groupby("target", sort=True):
        pts = _points_of(points, t.point)
        for param, fixed, members in series(pts, sort=False):
            points_, values = members.point.tolist(), members[param].tolist()
            pub = PUBLISHED_TABLES.get(param, {})
            for (i, a), (j, b) in itertools.combinations(enumerate(points_), 2):
                ta, tb = t[t.point == a], t[t.point == b]
                both = ta.merge(tb, on=["fold", "seed"], suffixes=("_a", "_b"))
                cos = [cosine(r[[f"{c}_a" for c in roi_columns]].to_numpy(float),
                              r[[f"{c}_b" for c in roi_columns]].to_numpy(float)) for _, r in both.iterrows()]
                rows.append({"table": pub.get("table", ""), "target": target, "parameter": param,
                             "fixed": ", ".join(f"{k} = {v:g}" for k, v in shown_fixed(fixed, pts).items()),
                             "a": values[i], "b": values[j], "neighbours": j == i + 1,
                             "cosine": float(np.mean(cos)) if cos else float("nan"), "n_models": len(cos),
                             "study_fixed": pub.get("fixed", ""), "study_cosine": published_cosine(param, values[i],
                                                                                                   values[j])})
    return pd.DataFrame(rows, columns=SWEEP_TABLE_COLUMNS)


def _points_of(points: pd.DataFrame | None, ids) -> pd.DataFrame:
    """The recorded values of the sweep points ``ids`` (in that order, each once)."""
    ids = list(dict.fromkeys(ids))
    known = set(points.point) if points is not None else set()
    missing = [p for p in ids if p not in known]
    if missing:
        raise ValueError(f"sweep points {missing[:3]} have no recorded values (the masks' summary)")
    return points.set_index("point").loc[ids].reset_index()


def _ids(table: pd.DataFrame) -> pd.Series:
    cols = [c for c in ID_COLUMNS if c in table]
    vals = table[cols].astype(object).where(table[cols].notna(), "")
    return pd.Series(["/".join(str(v) for v in r if str(v) not in ("", "nan", "None"))
                      for r in vals.itertuples(index=False)], index=table.index)


def _model(row) -> str:
    return f"fold-{row.fold}/seed-{row.seed}"


def family_pairs(table: pd.DataFrame, group_class: str = "AD",
                 points: pd.DataFrame | None = None) -> list[tuple[str, int, int, str, str, str]]:
    """(family, row a, row b, detail, unit a, unit b) for every pair of every family (rows of
    ``table``). The units are what a pair's two members are draws of, the level at which
    statistics resample (pairs that share a unit are dependent): models
    (``fold-F/seed-S``) for folds, seeds, cohorts and methods (one model for the last two),
    sweep points for the sweep, participants for intra- (one) and inter-subject pairs. Families:
    folds / seeds (main-cohort group masks of one target: same seed, other fold / same fold,
    other seed), cohorts (main vs independent group mask of one model), sweep_all and
    sweep_neighbours (sweep points of one model), intra_subject (sessions of one subject) and
    inter_subject (baseline sessions of two subjects) of the session masks, and methods (one
    model's ``group_class`` group mask, saliency group maps and Sobol ST, two by two). ``points``:
    the sweep points' values (robustmaps.sweep.points_table), which say which points neighbour."""
    t = table.reset_index(drop=True).fillna({"point": "", "participant_id": "", "session_id": ""})
    pairs = []
    group = t[(t.kind == "group") & (t.method == "mask")]
    main = group[group.cohort == "main"]
    for (target,), g in main.groupby(["target"]):
        for a, b in itertools.combinations(g.index, 2):
            ra, rb = t.loc[a], t.loc[b]
            if ra.seed == rb.seed and ra.fold != rb.fold:
                pairs.append(("folds", a, b, f"seed {ra.seed}", _model(ra), _model(rb)))
            if ra.fold == rb.fold and ra.seed != rb.seed:
                pairs.append(("seeds", a, b, f"fold {ra.fold}", _model(ra), _model(rb)))
    for (target, fold, seed), g in group.groupby(["target", "fold", "seed"]):
        mains, others = g[g.cohort == "main"].index, g[g.cohort != "main"].index
        unit = _model(t.loc[g.index[0]])
        pairs += [("cohorts", a, b, str(t.loc[b, "cohort"]), unit, unit) for a in mains for b in others]
    sweep = t[t.kind == "sweep"]
    for _, g in sweep.groupby(["target", "fold", "seed"]):
        by_point = dict(zip(g.point, g.index))
        pairs += [("sweep_all", a, b, "", t.loc[a, "point"], t.loc[b, "point"])
                  for a, b in itertools.combinations(g.index, 2)]
        pairs += [("sweep_neighbours", by_point[a], by_point[b], p, a, b)
                  for a, b, p in neighbours(_points_of(points, by_point))]
    sessions = t[t.kind == "session"]
    for _, g in sessions.groupby(["target", "fold", "seed"]):
        for a, b in itertools.combinations(g.index, 2):
            ra, rb = t.loc[a], t.loc[b]
            if ra.participant_id == rb.participant_id:
                pairs.append(("intra_subject", a, b, ra.participant_id, ra.participant_id, rb.participant_id))
            elif str(ra.baseline) == "True" and str(rb.baseline) == "True":
                pairs.append(("inter_subject", a, b, "", ra.participant_id, rb.participant_id))
    masks = main[main.target == group_class]
    model_level = pd.concat([masks, t[t.kind.isin(["saliency", "sobol"])]])
    for _, g in model_level.groupby(["fold", "seed"]):
        for a, b in itertools.combinations(g.index, 2):
            ma, mb = t.loc[a, "method"], t.loc[b, "method"]
            if ma != mb:
                unit = _model(t.loc[a])
                pairs.append(("methods", a, b, f"{ma} vs {mb}", unit, unit))
    return pairs


def similarities(table: pd.DataFrame, roi_columns: list[str], group_class: str = "AD",
                 points: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every pair of every family with its ROI cosine (:data:`PAIR_COLUMNS`); ``points``: as
    :func:`family_pairs`."""
    t = table.reset_index(drop=True)
    sim = cosine_matrix(t[roi_columns].to_numpy(dtype=np.float64))
    ids = _ids(t)
    rows = [{"family": f, "a": ids[a], "b": ids[b], "target": t.loc[a, "target"], "fold_a": t.loc[a, "fold"],
             "seed_a": t.loc[a, "seed"], "fold_b": t.loc[b, "fold"], "seed_b": t.loc[b, "seed"], "detail": d,
             "unit_a": ua, "unit_b": ub, "cosine": sim[a, b]}
            for f, a, b, d, ua, ub in family_pairs(t, group_class, points)]
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


SUMMARY_COLUMNS = ["family", "n_pairs", "n_units", "mean", "sd", "ci_low", "ci_high", "min", "max"]
#: Families whose point estimate is a mean over units of each unit's mean pair value, not the
#: mean over pairs (study 2.3.4: a subject's intra-subject similarity is the mean over its
#: session pairs, the family's the mean over subjects; a subject with 3 sessions, 3 pairs, must
#: not weigh 3 times one with 2 sessions). Their pairs lie within one unit.
PER_UNIT_FAMILIES = ("intra_subject",)


def per_unit_means(values, units) -> tuple[np.ndarray, np.ndarray]:
    """(units, each unit's mean of ``values``), units in sorted order."""
    frame = pd.DataFrame({"unit": np.asarray(units).astype(str), "value": np.asarray(values, dtype=float)})
    means = frame.groupby("unit").value.mean()
    return means.index.to_numpy(), means.to_numpy()


def summary(pairs: pd.DataFrame, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Mean and SD of each family's cosines, in the study's order (families without pairs omitted),
    with a CI of the mean from a bootstrap over the family's units (models, points or subjects:
    :func:`robustmaps.stats.cluster_bootstrap_ci`), not over its pairs, which share members.
    ``intra_subject`` (:data:`PER_UNIT_FAMILIES`): mean, SD and CI are those of the per-subject
    means (the study's definition, 2.3.4; the CI a bootstrap over subjects of the mean of their
    means); ``min`` / ``max`` stay those of the pairs."""
    rows = []
    for family in [f for f in FAMILIES if f in set(pairs.family)]:
        p = pairs[pairs.family == family]
        c = p.cosine.to_numpy(dtype=float)
        ua, ub = p.unit_a.astype(str).to_numpy(), p.unit_b.astype(str).to_numpy()
        if family in PER_UNIT_FAMILIES:
            if (ua != ub).any():
                raise ValueError(f"{family}: a pair spans two units; its mean per unit is undefined")
            units, v = per_unit_means(c, ua)
            lo, hi = cluster_bootstrap_ci(v, units, units, n_boot=n_boot, level=level, seed=seed)
        else:
            v = c
            lo, hi = cluster_bootstrap_ci(c, ua, ub, n_boot=n_boot, level=level, seed=seed)
        rows.append({"family": family, "n_pairs": len(c), "n_units": len(set(ua) | set(ub)),
                     "mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                     "ci_low": lo, "ci_high": hi, "min": float(c.min()), "max": float(c.max())})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def similarity_matrices(table: pd.DataFrame, rois: list[str], group_class: str = "AD") -> dict:
    """Labelled cosine matrices, one per family that has a natural matrix: the main cohort's
    ``group_class`` group masks of every model (fold x seed), main vs independent cohort group
    masks (rows main, columns independent), the sweep points of each swept model (Tables 2-3),
    the session masks of each model (sessions grouped by subject: intra-subject blocks on the
    diagonal), and the methods (group mask, saliency group maps, Sobol ST) averaged over models."""

    def labelled(rows, labels, cols=None, col_labels=None):
        a = rows[rois].to_numpy(float)
        if cols is None:
            return pd.DataFrame(cosine_matrix(a), index=labels, columns=labels)
        b = cols[rois].to_numpy(float)
        both = cosine_matrix(np.vstack([a, b]))[: len(a), len(a):]
        return pd.DataFrame(both, index=labels, columns=col_labels)

    out = {}
    masks = table[(table.kind == "group") & (table.method == "mask") & (table.target == group_class)]
    g = masks[masks.cohort == "main"].sort_values(["fold", "seed"])
    if len(g) > 1:
        out[f"{group_class} group masks (fold, seed)"] = labelled(g, [f"f{f} s{s}" for f, s in zip(g.fold, g.seed)])
    other = masks[masks.cohort != "main"].sort_values(["cohort", "fold", "seed"])
    if len(g) and len(other):
        out["main (rows) vs other cohort (columns) group masks"] = labelled(
            g, [f"main f{f} s{s}" for f, s in zip(g.fold, g.seed)], other,
            [f"{c} f{f} s{s}" for c, f, s in zip(other.cohort, other.fold, other.seed)])
    for (target, fold, seed), sw in table[table.kind == "sweep"].groupby(["target", "fold", "seed"]):
        if len(sw) > 1:
            out[f"sweep points, {target} fold {fold} seed {seed}"] = labelled(sw, list(sw.point))
    sessions = table[table.kind == "session"]
    for (target, fold, seed), se in sessions.groupby(["target", "fold", "seed"]):
        se = se.sort_values(["participant_id", "session_id"])
        if len(se) > 1:
            # subjects numbered in the order of their ids: a figure never names a participant
            # (report.pseudonymise; the pairs table holds the ids)
            number = {p: i + 1 for i, p in enumerate(dict.fromkeys(se.participant_id))}
            out[f"session masks, {target} fold {fold} seed {seed}"] = labelled(
                se, [f"subject {number[p]} {s.removeprefix('ses-')}" for p, s in zip(se.participant_id,
                                                                                     se.session_id)])
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


def prob_cnn_summary(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per family (alphabetical): the number of pairs and the mean and SD of their prob_CNN. The
    ``intra_subject`` family as the study defines it (2.3.4, as
    robustmaps.similarity.PER_UNIT_FAMILIES): each subject's mean over its (ordered) session
    pairs, then the mean and SD over subjects, so that a subject with more sessions does not
    weigh more; every other family over its pairs."""
    rows = []
    for family, p in pairs.groupby("family"):
        v = p.probability.astype(float)
        if family == "intra_subject":
            v = v.groupby(p.participant_a.astype(str).to_numpy()).mean()
        rows.append({"family": family, "n_pairs": len(p), "mean": v.mean(), "sd": v.std()})
    return pd.DataFrame(rows, columns=["family", "n_pairs", "mean", "sd"])


def prob_cnn_matrices(pairs: pd.DataFrame) -> dict:
    """prob_CNN as matrices: rows = whose mask (A), columns = whose model and images (B); the
    models' group masks (fold, seed), and each model's session masks (sessions of one subject
    side by side; pairs of two follow-up sessions of different subjects are not scored)."""
    out = {}
    models = pairs[pairs.family.isin(["own", "folds", "seeds", "other"])]
    if len(models):
        m = models.assign(a=[f"f{f} s{s}" for f, s in zip(models.fold_a, models.seed_a)],
                          b=[f"f{f} s{s}" for f, s in zip(models.fold_b, models.seed_b)])
        out["group masks: mask of (rows) on model of (columns)"] = m.pivot_table(index="a", columns="b",
                                                                                values="probability")
    sessions = pairs[pairs.family.isin(["own_session", "intra_subject", "inter_subject"])]
    for (f, s), se in sessions.groupby(["fold_a", "seed_a"]):
        se = se.assign(a=[f"{p.removeprefix('sub-')} {x.removeprefix('ses-')}" for p, x in
                          zip(se.participant_a, se.session_a)],
                       b=[f"{p.removeprefix('sub-')} {x.removeprefix('ses-')}" for p, x in
                          zip(se.participant_b, se.session_b)])
        out[f"session masks of f{f} s{s}: mask of (rows) on session (columns)"] = se.pivot_table(
            index="a", columns="b", values="probability")
    return out
