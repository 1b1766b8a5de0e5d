"""Statistics of learning procedures (seed 004): where the variability comes from (folds vs
seeds), whether two families of similarities differ (permutation tests that permute models, not
pairs), and the comparison of two learning procedures (Nadeau-Bengio corrected resampled t-test).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from scipy import stats as sps


def _nested_components(groups: list[np.ndarray]) -> tuple[float, float, float]:
    """(grand mean of the first column, outer, inner) variance components of balanced groups
    (each an (n, p) array: n inner units x p variables); with p > 1 the components are summed
    over the variables (the trace of the covariance), the outer one clipped at 0 after summing."""
    n, k = groups[0].shape[0], len(groups)
    means = np.stack([g.mean(0) for g in groups])  # (k, p)
    grand = means.mean(0)
    ms_between = n * float(np.sum((means - grand) ** 2)) / (k - 1)
    ms_within = float(sum(np.sum((g - g.mean(0)) ** 2) for g in groups)) / (k * (n - 1))
    return float(grand[0]), max(0.0, (ms_between - ms_within) / n), ms_within


def _groups(values: pd.DataFrame, value, outer: str) -> list[np.ndarray]:
    cols = [value] if isinstance(value, str) else list(value)
    groups = [g[cols].to_numpy(dtype=float) for _, g in values.groupby(outer)]
    sizes = {len(g) for g in groups}
    if len(sizes) != 1 or len(groups) < 2 or next(iter(sizes)) < 2:
        raise ValueError(f"a balanced design with >= 2 {outer}s x >= 2 inner units each is needed")
    return groups


def _components(groups, outer: str, inner: str) -> dict[str, float]:
    mean, var_outer, var_inner = _nested_components(groups)
    total = var_outer + var_inner
    return {"mean": mean, outer: var_outer, inner: var_inner, "total": total,
            "icc": var_outer / total if total > 0 else float("nan")}


def nested_variance(values: pd.DataFrame, value: str | list[str] = "value", outer: str = "fold",
                    inner: str = "seed") -> dict[str, float]:
    """Variance components of a nested random-effects model y = mu + a_outer + e (seeds nested in
    folds; balanced design): method-of-moments (ANOVA) estimates, the outer component clipped at
    0. Returns {mean, outer, inner, total, icc} (icc = outer / total). ``value``: a column, or
    several (e.g. the ROIs of unit-normalised ROI vectors): the components of their summed
    variance (``mean`` is then the first column's)."""
    return _components(_groups(values, value, outer), outer, inner)


def bootstrap_nested_variance(values: pd.DataFrame, value: str | list[str] = "value", outer: str = "fold",
                              inner: str = "seed", n_boot: int = 1000, level: float = 0.95,
                              seed: int = 0) -> pd.DataFrame:
    """Percentile CIs of :func:`nested_variance` by a two-stage bootstrap (folds, then seeds
    within each drawn fold). Returns one row per component: estimate, ci_low, ci_high."""
    rng = np.random.default_rng(seed)
    groups = _groups(values, value, outer)
    est = _components(groups, outer, inner)
    draws = []
    for _ in range(n_boot):
        picked = [groups[i] for i in rng.integers(0, len(groups), len(groups))]
        draws.append(_components([g[rng.integers(0, len(g), len(g))] for g in picked], outer, inner))
    alpha = (1 - level) / 2
    rows = []
    keys = ("mean", outer, inner, "total", "icc") if groups[0].shape[1] == 1 else (outer, inner, "total", "icc")
    for key in keys:  # several variables: no single mean to report
        d = np.array([x[key] for x in draws], dtype=float)
        d = d[np.isfinite(d)]
        lo, hi = (np.quantile(d, [alpha, 1 - alpha]) if len(d) else (np.nan, np.nan))
        rows.append({"component": key, "estimate": est[key], "ci_low": float(lo), "ci_high": float(hi)})
    return pd.DataFrame(rows)


def corrected_resampled_ttest(a: np.ndarray, b: np.ndarray, n_train: int, n_test: int) -> dict[str, float]:
    """Nadeau & Bengio's corrected resampled t-test of paired scores of two procedures over the
    same J resamples (folds x seeds): t = mean(d) / sqrt((1/J + n_test/n_train) var(d)), J - 1
    degrees of freedom (var with ddof 1). Returns {mean_difference, t, df, p_value}."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    j = len(d)
    if j < 2:
        raise ValueError("the corrected resampled t-test needs at least 2 paired resamples")
    var = float(np.var(d, ddof=1))
    denom = np.sqrt((1 / j + n_test / n_train) * var)
    mean = float(d.mean())
    if denom == 0:
        t = 0.0 if mean == 0 else float(np.sign(mean) * np.inf)
    else:
        t = mean / denom
    p = float(2 * sps.t.sf(abs(t), j - 1))
    return {"mean_difference": mean, "t": float(t), "df": j - 1, "p_value": p}


def permutation_test_models(sim: np.ndarray, labels_a: np.ndarray, labels_b: np.ndarray, *, n_perm: int = 2000,
                            seed: int = 0) -> dict[str, float]:
    """Do pairs that differ in factor A (e.g. fold, same seed) have another mean similarity than
    pairs that differ in factor B (seed, same fold)? ``sim``: the models' similarity matrix;
    ``labels_a`` / ``labels_b``: each model's level of A and B. The statistic is mean(A-pairs) -
    mean(B-pairs); its null distribution permutes the MODELS (rows and columns of ``sim``
    together), not the pairs, since pairs sharing a model are dependent. Two-sided p-value: exact
    over every permutation when there are at most ``n_perm`` of them, else Monte Carlo with the
    +1 correction; and Cohen's d of the two groups of pairs."""
    sim = np.asarray(sim, dtype=float)
    la, lb = np.asarray(labels_a), np.asarray(labels_b)
    iu = np.triu_indices(len(sim), 1)
    same_a = la[iu[0]] == la[iu[1]]
    same_b = lb[iu[0]] == lb[iu[1]]
    in_a = ~same_a & same_b  # differ in A only
    in_b = same_a & ~same_b  # differ in B only
    if not in_a.any() or not in_b.any():
        raise ValueError("no pair differs in one factor only")

    def statistic(m):
        v = m[iu]
        return v[in_a].mean() - v[in_b].mean()

    observed = statistic(sim)
    n = len(sim)
    if math.factorial(n) <= n_perm:  # few models: every permutation, an exact p-value
        perms, extra = itertools.permutations(range(n)), 0
    else:
        rng = np.random.default_rng(seed)
        perms, extra = (rng.permutation(n) for _ in range(n_perm)), 1
    count, total = 0, 0
    for p in perms:
        p = list(p)
        count += abs(statistic(sim[np.ix_(p, p)])) >= abs(observed) - 1e-12
        total += 1
    return {"difference": float(observed), "p_value": (count + extra) / (total + extra), "n_a": int(in_a.sum()),
            "n_b": int(in_b.sum()), "cohens_d": _cohens_d(sim[iu][in_a], sim[iu][in_b])}


def cluster_bootstrap_ci(values, unit_a, unit_b, *, n_boot: int = 2000, level: float = 0.95,
                         seed: int = 0) -> tuple[float, float]:
    """Percentile CI of the mean of pairwise ``values`` (e.g. cosines of pairs of masks) by a
    bootstrap over the pairs' UNITS (models, subjects), not over the pairs: each draw resamples
    the units with replacement and a pair counts as many times as its members were drawn
    (c_a * c_b; c_a for a pair within one unit), as in the bootstrap of dyadic data. Draws that
    keep no pair are left out. With a single unit the CI is the point estimate."""
    v = np.asarray(values, dtype=float)
    if not len(v):
        return float("nan"), float("nan")
    units, inv = np.unique(np.concatenate([np.asarray(unit_a), np.asarray(unit_b)]), return_inverse=True)
    ia, ib = inv[: len(v)], inv[len(v):]
    if len(units) < 2:
        return float(v.mean()), float(v.mean())
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(units), np.full(len(units), 1.0 / len(units)), size=n_boot).astype(float)
    means = []
    step = max(1, 4_000_000 // len(v))  # draws per chunk: (draws x pairs) weights stay ~32 MB
    for start in range(0, n_boot, step):
        c = counts[start:start + step]
        weights = np.where(ia == ib, c[:, ia], c[:, ia] * c[:, ib])  # (draws, pairs)
        total = weights.sum(1)
        keep = total > 0
        means.append((weights[keep] @ v) / total[keep])
    means = np.concatenate(means)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def unit_means(pairs: pd.DataFrame, value: str = "cosine") -> pd.Series:
    """Each unit's mean ``value`` over the pairs it belongs to (a pair within one unit counts
    once): the per-unit summaries on which families are compared, since units, not pairs, are
    the independent draws. ``pairs`` has ``unit_a``, ``unit_b`` and ``value``."""
    a = pairs[["unit_a", value]].rename(columns={"unit_a": "unit"})
    b = pairs.loc[pairs.unit_a != pairs.unit_b, ["unit_b", value]].rename(columns={"unit_b": "unit"})
    return pd.concat([a, b]).astype({"unit": str}).groupby("unit")[value].mean()


def _cohens_d(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) + len(y) <= 2:
        return float("nan")
    pooled = np.sqrt(((len(x) - 1) * np.var(x, ddof=1 if len(x) > 1 else 0)
                      + (len(y) - 1) * np.var(y, ddof=1 if len(y) > 1 else 0)) / (len(x) + len(y) - 2))
    return float((x.mean() - y.mean()) / pooled) if pooled > 0 else float("nan")


def permutation_test_units(a: pd.Series, b: pd.Series, *, paired: bool = False, n_perm: int = 5000,
                           seed: int = 0) -> dict[str, float]:
    """Do two families differ? ``a``, ``b``: per-unit means (:func:`unit_means`). Independent
    units (e.g. models vs subjects): the units' family labels are permuted
    (``scipy.stats.permutation_test``, statistic = difference of means, two-sided; exact when the
    permutations are at most ``n_perm``), effect size Cohen's d. ``paired`` (the same units in both
    families, e.g. intra- vs inter-subject per subject): the signs of the per-unit differences
    are permuted, effect size d_z = mean / SD of the differences."""
    if paired:
        both = a.index.intersection(b.index)
        x, y = a.loc[both].to_numpy(float), b.loc[both].to_numpy(float)
    else:
        x, y = a.to_numpy(float), b.to_numpy(float)
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"{'paired units' if paired else 'units'}: {len(x)} and {len(y)}, at least 2 each needed")
    res = sps.permutation_test((x, y), lambda u, v, axis: np.mean(u, axis=axis) - np.mean(v, axis=axis),
                               permutation_type="samples" if paired else "independent", vectorized=True,
                               n_resamples=n_perm, alternative="two-sided", random_state=seed)
    if paired:
        d = x - y
        sd = d.std(ddof=1)
        effect = float(d.mean() / sd) if sd > 0 else float("nan")
    else:
        effect = _cohens_d(x, y)
    return {"difference": float(x.mean() - y.mean()), "p_value": float(res.pvalue), "n_a": len(x), "n_b": len(y),
            "cohens_d": effect}
