"""Families of ROI-cosine similarities (study 2.4 and 3): which pairs of masks or maps each
family compares, their cosine, and a summary in the order the study reports them.

The input is the tidy ROI-vector table (``results/analysis/roi_vectors.tsv``): id columns
(:data:`ID_COLUMNS`) and one column per ROI. Pairs are unordered; each pair is listed once.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from .roi import cosine_matrix

ID_COLUMNS = ["kind", "method", "cohort", "target", "fold", "seed", "point", "participant_id", "session_id",
              "baseline"]
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


def parse_point(point: str) -> dict[str, float]:
    """``b1-0.1_b2-1_l1-1e-04_l2-1e-03[_lr-0.01]`` -> {"b1": 0.1, ...} (inverse of config.point_id)."""
    out = {}
    for part in point.split("_"):
        key, value = part.split("-", 1)
        out[key] = float(value)
    return out


def sweep_neighbours(points: list[str]) -> list[tuple[str, str, str]]:
    """Pairs of sweep points that differ in one parameter and are adjacent along it (among the
    points that share the other values) -> (a, b, parameter)."""
    parsed = {p: parse_point(p) for p in points}
    out = []
    keys = sorted({k for v in parsed.values() for k in v})
    for param in keys:
        groups: dict[tuple, list[str]] = {}
        for p, v in parsed.items():
            rest = tuple((k, v.get(k)) for k in keys if k != param)
            groups.setdefault(rest, []).append(p)
        for members in groups.values():
            ordered = sorted(members, key=lambda p: parsed[p].get(param, np.nan))
            out += [(a, b, param) for a, b in zip(ordered, ordered[1:])]
    return out


def point_series(points: list[str]) -> list[tuple[str, dict, list[str]]]:
    """The one-parameter series among sweep point ids (the study's Figures 3-4 and Tables 2-3):
    points that share every other value, two or more of them, sorted by the varied parameter ->
    (parameter, the fixed values, points). A point without ``lr`` has the masks' default lr."""
    parsed = {p: parse_point(p) for p in points}
    keys = [k for k in ("b1", "b2", "l1", "l2", "lr") if any(k in v for v in parsed.values())]
    out = []
    for param in keys:
        groups: dict[tuple, list[str]] = {}
        for p, v in parsed.items():
            groups.setdefault(tuple((k, v.get(k)) for k in keys if k != param), []).append(p)
        for rest, members in groups.items():
            if len({parsed[m].get(param) for m in members}) >= 2:
                ordered = sorted(members, key=lambda m: parsed[m].get(param, np.nan))
                out.append((param, {k: v for k, v in rest if v is not None}, ordered))
    return out


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


def sweep_tables(table: pd.DataFrame, roi_columns: list[str]) -> pd.DataFrame:
    """The study's Tables 2-3 for this run: for every one-parameter series of the sweep and target,
    every pair of its points with their masks' ROI cosine (mean over the sweep's models), whether
    they are neighbours along the series, and the study's printed value for the same pair of
    values (``study_cosine``, NaN where it has none; its fixed values in ``study_fixed``)."""
    from .roi import cosine

    sweep = table[table.kind == "sweep"]
    rows = []
    for target, t in sweep.groupby("target", sort=True):
        for param, fixed, points in point_series(list(dict.fromkeys(t.point))):
            values = [parse_point(p)[param] for p in points]
            pub = PUBLISHED_TABLES.get(param, {})
            for (i, a), (j, b) in itertools.combinations(enumerate(points), 2):
                ta, tb = t[t.point == a], t[t.point == b]
                both = ta.merge(tb, on=["fold", "seed"], suffixes=("_a", "_b"))
                cos = [cosine(r[[f"{c}_a" for c in roi_columns]].to_numpy(float),
                              r[[f"{c}_b" for c in roi_columns]].to_numpy(float)) for _, r in both.iterrows()]
                rows.append({"table": pub.get("table", ""), "target": target, "parameter": param,
                             "fixed": ", ".join(f"{k} = {v:g}" for k, v in fixed.items()),
                             "a": values[i], "b": values[j], "neighbours": j == i + 1,
                             "cosine": float(np.mean(cos)) if cos else float("nan"), "n_models": len(cos),
                             "study_fixed": pub.get("fixed", ""), "study_cosine": published_cosine(param, values[i],
                                                                                                   values[j])})
    return pd.DataFrame(rows, columns=SWEEP_TABLE_COLUMNS)


def _ids(table: pd.DataFrame) -> pd.Series:
    cols = [c for c in ID_COLUMNS if c in table]
    vals = table[cols].astype(object).where(table[cols].notna(), "")
    return pd.Series(["/".join(str(v) for v in r if str(v) not in ("", "nan", "None"))
                      for r in vals.itertuples(index=False)], index=table.index)


def _model(row) -> str:
    return f"fold-{row.fold}/seed-{row.seed}"


def family_pairs(table: pd.DataFrame, group_class: str = "AD") -> list[tuple[str, int, int, str, str, str]]:
    """(family, row a, row b, detail, unit a, unit b) for every pair of every family (rows of
    ``table``). The units are what a pair's two members are draws of, the level at which
    statistics resample (pairs that share a unit are dependent): models
    (``fold-F/seed-S``) for folds, seeds, cohorts and methods (one model for the last two),
    sweep points for the sweep, participants for intra- (one) and inter-subject pairs. Families:
    folds / seeds (main-cohort group masks of one target: same seed, other fold / same fold,
    other seed), cohorts (main vs independent group mask of one model), sweep_all and
    sweep_neighbours (sweep points of one model), intra_subject (sessions of one subject) and
    inter_subject (baseline sessions of two subjects) of the session masks, and methods (one
    model's ``group_class`` group mask, saliency group maps and Sobol ST, two by two)."""
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
                  for a, b, p in sweep_neighbours(list(by_point))]
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


def similarities(table: pd.DataFrame, roi_columns: list[str], group_class: str = "AD") -> pd.DataFrame:
    """Every pair of every family with its ROI cosine (:data:`PAIR_COLUMNS`)."""
    t = table.reset_index(drop=True)
    sim = cosine_matrix(t[roi_columns].to_numpy(dtype=np.float64))
    ids = _ids(t)
    rows = [{"family": f, "a": ids[a], "b": ids[b], "target": t.loc[a, "target"], "fold_a": t.loc[a, "fold"],
             "seed_a": t.loc[a, "seed"], "fold_b": t.loc[b, "fold"], "seed_b": t.loc[b, "seed"], "detail": d,
             "unit_a": ua, "unit_b": ub, "cosine": sim[a, b]}
            for f, a, b, d, ua, ub in family_pairs(t, group_class)]
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
    from .stats import cluster_bootstrap_ci

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
