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


def nested_variance(values: pd.DataFrame, value: str = "value", outer: str = "fold",
                    inner: str = "seed") -> dict[str, float]:
    """Variance components of a nested random-effects model y = mu + a_outer + e (seeds nested in
    folds; balanced design): method-of-moments (ANOVA) estimates, the outer component clipped at
    0. Returns {mean, outer, inner, total, icc} (icc = outer / total)."""
    groups = [g[value].to_numpy(dtype=float) for _, g in values.groupby(outer)]
    sizes = {len(g) for g in groups}
    if len(sizes) != 1 or len(groups) < 2 or next(iter(sizes)) < 2:
        raise ValueError(f"a balanced design with >= 2 {outer}s x >= 2 {inner}s is needed")
    n = next(iter(sizes))
    means = np.array([g.mean() for g in groups])
    grand = float(np.mean(means))
    ms_between = n * float(np.sum((means - grand) ** 2)) / (len(groups) - 1)
    ms_within = float(sum(np.sum((g - g.mean()) ** 2) for g in groups)) / (len(groups) * (n - 1))
    var_outer = max(0.0, (ms_between - ms_within) / n)
    total = var_outer + ms_within
    return {"mean": grand, outer: var_outer, inner: ms_within, "total": total,
            "icc": var_outer / total if total > 0 else float("nan")}


def bootstrap_nested_variance(values: pd.DataFrame, value: str = "value", outer: str = "fold", inner: str = "seed",
                              n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Percentile CIs of :func:`nested_variance` by a two-stage bootstrap (folds, then seeds
    within each drawn fold). Returns one row per component: estimate, ci_low, ci_high."""
    rng = np.random.default_rng(seed)
    est = nested_variance(values, value, outer, inner)
    groups = [g[value].to_numpy(dtype=float) for _, g in values.groupby(outer)]
    draws = []
    for _ in range(n_boot):
        picked = [groups[i] for i in rng.integers(0, len(groups), len(groups))]
        frame = pd.DataFrame([{outer: k, value: v} for k, g in enumerate(picked)
                              for v in rng.choice(g, len(g), replace=True)])
        draws.append(nested_variance(frame, value, outer, inner))
    alpha = (1 - level) / 2
    rows = []
    for key in ("mean", outer, inner, "total", "icc"):
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
    va, vb = sim[iu][in_a], sim[iu][in_b]
    pooled = np.sqrt(((len(va) - 1) * va.var(ddof=1) + (len(vb) - 1) * vb.var(ddof=1)) / (len(va) + len(vb) - 2)) \
        if len(va) + len(vb) > 2 else np.nan
    return {"difference": float(observed), "p_value": (count + extra) / (total + extra), "n_a": int(in_a.sum()),
            "n_b": int(in_b.sum()), "cohens_d": float(observed / pooled) if pooled and pooled > 0 else float("nan")}
