"""Statistics of learning procedures (seed 004): where the variability comes from (folds vs
seeds), whether two families of similarities differ (permutation tests that permute models, not
pairs), and the comparison of two learning procedures: over training sets, the Nadeau-Bengio
corrected resampled t-test of held-out fold scores (:func:`corrected_resampled_ttest`); on one
fixed test set, a paired sign-flip test over its subjects (:func:`paired_subject_test`).
"""

from __future__ import annotations

import itertools
import logging
import math

import numpy as np
import pandas as pd
from scipy import stats as sps

from .roi import cosine_matrix

log = logging.getLogger(__name__)


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


def _scalar(x):
    """0-d arrays -> Python floats (results of 1-D inputs); other arrays as they are."""
    return float(x) if np.ndim(x) == 0 else x


def corrected_resampled_ttest(a, b, n_train: float, n_test: float, *, groups=None,
                              level: float = 0.95) -> dict:
    """Nadeau & Bengio's (2003) corrected resampled t-test of paired scores of two procedures on
    the same J resamples, scored on each resample's HELD-OUT part (the complement of its training
    set: cross-validation folds): t = mean(d) / sqrt((1/J + n_test/n_train) var(d)), J - 1
    degrees of freedom (var with ddof 1). The term n_test/n_train stands for the correlation of
    the resamples' scores that their overlapping training sets cause; it does NOT apply to a
    fixed test set shared by all models (see :func:`paired_subject_test` for that one).

    ``groups``: a label per score (the fold of each (fold, seed) model); scores that share one
    (seeds of one fold: the same training and held-out sets, not new resamples) are averaged
    first, and J is the number of groups. Vectorised: ``a`` and ``b`` may be (..., n) arrays
    (e.g. simulated repetitions x scores). Returns {mean_difference, t, df, p_value, ci_low,
    ci_high} (the CI of the mean difference at ``level`` from the same t distribution)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != d.shape[-1:]:
            raise ValueError(f"groups: {groups.shape[0] if groups.ndim else 0} labels for {d.shape[-1]} scores")
        d = np.stack([d[..., groups == g].mean(-1) for g in dict.fromkeys(groups.tolist())], -1)
    j = d.shape[-1]
    if j < 2:
        what = "groups" if groups is not None else "paired resamples"
        raise ValueError(f"the corrected resampled t-test needs at least 2 {what} (got {j})")
    var = np.var(d, axis=-1, ddof=1)
    se = np.sqrt((1 / j + n_test / n_train) * var)
    mean = d.mean(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, mean / np.where(se > 0, se, 1.0), np.where(mean == 0, 0.0, np.sign(mean) * np.inf))
    p = 2 * sps.t.sf(np.abs(t), j - 1)
    half = sps.t.ppf((1 + level) / 2, j - 1) * se
    return {"mean_difference": _scalar(mean), "t": _scalar(t), "df": j - 1, "p_value": _scalar(p),
            "ci_low": _scalar(mean - half), "ci_high": _scalar(mean + half)}


def class_weights(labels) -> np.ndarray:
    """Weights 1 / (n_classes x n_class) per unit: their weighted mean of per-unit correctness is
    the balanced accuracy (a plain mean when the classes are balanced)."""
    labels = np.asarray(labels)
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return 1.0 / (len(classes) * counts[inverse])


def sign_flip_test(d, weights=None, *, n_perm: int = 9999, seed: int = 0) -> dict:
    """Paired randomisation test: is the (weighted) mean of per-unit differences ``d`` zero? Under
    the null the two members of each unit's pair are exchangeable, so each difference is as
    likely with either sign; the statistic's null distribution flips the signs. Two-sided; exact
    over all 2^n sign patterns when they are at most ``n_perm``, else ``n_perm`` Monte Carlo
    patterns with the +1 correction (p = (1 + hits) / (1 + n_perm), valid at every level).
    Vectorised: ``d`` may be (..., n) (the same patterns serve every row). Returns
    {difference, p_value, n}."""
    d = np.asarray(d, dtype=float)
    n = d.shape[-1]
    if n < 1:
        raise ValueError("the sign-flip test needs at least 1 paired unit")
    w = np.full(n, 1.0 / n) if weights is None else np.asarray(weights, dtype=float) / np.sum(weights)
    wd = d * w
    observed = wd.sum(-1)
    if 2 ** n <= n_perm:
        signs = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1).astype(float)
        extra = 0
    else:
        signs = np.where(np.random.default_rng(seed).random((n_perm, n)) < 0.5, -1.0, 1.0)
        extra = 1
    rows = int(np.prod(d.shape[:-1], dtype=int))
    flat, obs = wd.reshape(rows, n), np.abs(observed).reshape(rows)
    tol = 1e-12 * np.maximum(1.0, obs)
    hits = np.zeros(rows)
    step = max(1, 4_000_000 // max(rows, 1))  # (rows x patterns) statistics stay ~32 MB
    for start in range(0, len(signs), step):
        hits += (np.abs(flat @ signs[start:start + step].T) >= (obs - tol)[:, None]).sum(1)
    p = ((hits + extra) / (len(signs) + extra)).reshape(d.shape[:-1])
    return {"difference": _scalar(observed), "p_value": _scalar(p), "n": n}


def paired_subject_test(a, b, labels=None, *, n_perm: int = 9999, n_boot: int = 10000, level: float = 0.95,
                        seed: int = 0) -> dict:
    """Two procedures on ONE fixed test set that every model of both scored: a paired test over
    the test subjects, the models combined within each subject. Seed 004's "trained model" case:
    the test set's sampling is the only variance left once the models are trained, assessed by
    resampling the test set; the models' variability over training sets is not part of it (it
    is what :func:`corrected_resampled_ttest` on held-out folds answers). ``a`` / ``b``:
    per subject, the procedure's score averaged over its models (correctness: the fraction of
    its models that classify the subject correctly; or the probability of the true class);
    ``labels``: each subject's class, which weights subjects 1 / (n_classes x n_class) so that
    the weighted mean correctness is the mean balanced accuracy of the models (None: equal
    weights). The p-value is the sign-flip randomisation test of the per-subject differences
    (:func:`sign_flip_test`, exact in finite samples under exchangeability of the two
    procedures' models within each subject); the CI a percentile bootstrap of the test subjects
    (stratified by class, seed 004's "bootstrapping on the testing set"). Returns {mean_a,
    mean_b, difference, p_value, ci_low, ci_high, n}."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired per-subject scores of one shape are needed, got {a.shape} and {b.shape}")
    if len(a) < 2:
        raise ValueError(f"{len(a)} paired test subject(s): at least 2 are needed")
    strata = np.zeros(len(a), int) if labels is None else np.unique(np.asarray(labels), return_inverse=True)[1]
    w = np.full(len(a), 1.0 / len(a)) if labels is None else class_weights(labels)
    res = sign_flip_test(a - b, w, n_perm=n_perm, seed=seed)
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.choice(np.flatnonzero(strata == s), (n_boot, int((strata == s).sum())))
                          for s in np.unique(strata)], 1)
    boot = ((a - b)[idx] * w[idx]).sum(1) / w[idx].sum(1)
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return {"mean_a": float(w @ a), "mean_b": float(w @ b), "difference": res["difference"],
            "p_value": res["p_value"], "ci_low": float(lo), "ci_high": float(hi), "n": len(a)}


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


# ------------------------------------------------------------------ the study's tables (seed 004)
VARIANCE_COLUMNS = ["quantity", "component", "estimate", "ci_low", "ci_high"]
TEST_COLUMNS = ["test", "unit", "difference", "p_value", "n_a", "n_b", "cohens_d", "note"]


def variance_components(quantities: list[tuple], *, n_boot: int, level: float, seed: int) -> pd.DataFrame:
    """Fold and seed components (:func:`bootstrap_nested_variance`) of each ``(name, frame,
    value column(s))`` of ``quantities`` (frames with fold and seed columns); a quantity the
    design cannot support is left out, said in the log."""
    variance = []
    for name, frame, value in quantities:
        try:
            variance.append(bootstrap_nested_variance(frame, value, n_boot=n_boot, level=level, seed=seed)
                            .assign(quantity=name))
        except ValueError as exc:
            log.warning("variance components of %s: %s", name, exc)
    return pd.concat(variance)[VARIANCE_COLUMNS] if variance else pd.DataFrame(columns=VARIANCE_COLUMNS)


def study_tests(group_rois: np.ndarray, folds: np.ndarray, seeds: np.ndarray, pairs: pd.DataFrame, *,
                n_perm: int, seed: int) -> list[dict]:
    """The study's permutation tests, one row each (TEST_COLUMNS): inter-fold vs inter-seed
    similarity of the group masks (``group_rois``: one ROI vector per model, of fold ``folds`` and
    seed ``seeds``; models permuted); inter-fold and inter-seed vs inter-subject similarity
    (per-unit means of the similarity ``pairs``, units' labels permuted: models vs subjects);
    intra- vs inter-subject similarity of session masks (per subject, paired sign flips). A test
    the design cannot support is listed with the reason."""
    tests = []

    def attempt(name, unit, fn):
        try:
            tests.append({"test": name, "unit": unit, **fn(), "note": ""})
        except ValueError as exc:
            log.warning("%s: not tested: %s", name, exc)
            tests.append({"test": name, "unit": unit, "note": f"not tested: {exc}"})

    attempt("inter-fold vs inter-seed similarity (group masks)", "model",
            lambda: permutation_test_models(cosine_matrix(group_rois), folds, seeds, n_perm=n_perm, seed=seed))
    fam = {f: unit_means(p) for f, p in pairs.groupby("family")}
    empty = pd.Series(dtype=float)
    for family in ("folds", "seeds"):
        attempt(f"inter-{family[:-1]} (group masks) vs inter-subject (session masks) similarity", "model vs subject",
                lambda f=family: permutation_test_units(fam.get(f, empty), fam.get("inter_subject", empty),
                                                        n_perm=n_perm, seed=seed))
    attempt("intra- vs inter-subject similarity (session masks)", "subject (paired)",
            lambda: permutation_test_units(fam.get("intra_subject", empty), fam.get("inter_subject", empty),
                                           paired=True, n_perm=n_perm, seed=seed))
    return tests
