"""Statistics of learning procedures (robustmaps.stats) against hand computations and scipy."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from robustmaps.stats import (bootstrap_nested_variance, class_weights, cluster_bootstrap_ci,
                              corrected_resampled_ttest, nested_variance, paired_subject_test, permutation_test_models,
                              permutation_test_units, sign_flip_test, unit_means)


def grid_values():
    return pd.DataFrame({"fold": [0, 0, 1, 1, 2, 2], "seed": [0, 1] * 3, "value": [1.0, 3.0, 2.0, 4.0, 6.0, 8.0]})


def test_nested_variance_against_a_hand_computation():
    # fold means 2, 3, 7 (grand 4); MS between = 2 * (4 + 1 + 9) / 2 = 14; MS within = 6 / 3 = 2
    v = nested_variance(grid_values())
    assert v == pytest.approx({"mean": 4.0, "fold": 6.0, "seed": 2.0, "total": 8.0, "icc": 0.75})
    # no fold effect: the fold component is clipped at 0, not negative
    flat = pd.DataFrame({"fold": [0, 0, 1, 1], "seed": [0, 1, 0, 1], "value": [1.0, 3.0, 3.0, 1.0]})
    assert nested_variance(flat)["fold"] == 0.0
    with pytest.raises(ValueError, match="balanced"):
        nested_variance(grid_values().iloc[:5])


def test_bootstrap_intervals_contain_the_estimates():
    t = bootstrap_nested_variance(grid_values(), n_boot=300, seed=1).set_index("component")
    assert (t.ci_low <= t.estimate + 1e-12).all() and (t.estimate <= t.ci_high + 1e-12).all()
    assert t.loc["mean", "estimate"] == 4.0


def test_nested_variance_of_several_columns_sums_the_components():
    g = grid_values()
    g["other"] = [0.0, 2.0, 0.0, 2.0, 0.0, 2.0]  # no fold effect: seed component 2, fold 0
    v = nested_variance(g, ["value", "other"])
    # mean squares add over columns: between 14 + 0, within 2 + 2; the fold component is clipped
    # after the sum ((14 - 4) / 2 = 5), not per column (6 + max(0, -1) would be 6)
    assert v["fold"] == pytest.approx(5.0) and v["seed"] == pytest.approx(4.0)
    # unit vectors: the total is the mean (1 - cosine) over the pairs (the sample variance)
    rng = np.random.default_rng(0)
    u = rng.random((6, 5))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    frame = pd.DataFrame(u, columns=list("abcde")).assign(fold=[0, 0, 0, 1, 1, 1], seed=[0, 1, 2] * 2)
    cos = u @ u.T
    mean_dissimilarity = (1 - cos[np.triu_indices(6, 1)]).mean()
    # exact for the pooled (one-way, no fold) variance of the 6 vectors
    pooled = u.var(0, ddof=1).sum()
    assert pooled == pytest.approx(mean_dissimilarity)
    comps = nested_variance(frame, list("abcde"))
    assert comps["total"] == pytest.approx(pooled, rel=0.5)
    t = bootstrap_nested_variance(frame, list("abcde"), n_boot=50).set_index("component")
    assert "mean" not in t.index and {"fold", "seed", "total", "icc"} <= set(t.index)


def test_cluster_bootstrap_resamples_units_not_pairs():
    rng = np.random.default_rng(0)
    # 6 units, every pair; one unit is an outlier with low similarity to every other unit
    units = [f"u{i}" for i in range(6)]
    a, b, v = [], [], []
    for i in range(6):
        for j in range(i + 1, 6):
            a.append(units[i]), b.append(units[j])
            v.append(0.2 if 0 in (i, j) else 0.9 + 0.01 * rng.standard_normal())
    v = np.array(v)
    lo, hi = cluster_bootstrap_ci(v, a, b, n_boot=2000, seed=0)
    assert lo < v.mean() < hi
    # resampling the 15 pairs as if independent gives a narrower interval than the units do
    draws = np.random.default_rng(1).choice(v, (2000, len(v))).mean(1)
    naive = np.quantile(draws, [0.025, 0.975])
    assert hi - lo > naive[1] - naive[0]
    # deterministic with the seed; one unit -> the point estimate
    assert cluster_bootstrap_ci(v, a, b, n_boot=500, seed=3) == cluster_bootstrap_ci(v, a, b, n_boot=500, seed=3)
    assert cluster_bootstrap_ci([0.5, 0.7], ["x", "x"], ["x", "x"]) == (0.6, 0.6)


def test_unit_means_count_each_pair_for_both_members():
    pairs = pd.DataFrame({"unit_a": ["a", "a", "b", "c"], "unit_b": ["b", "c", "c", "c"],
                          "cosine": [1.0, 0.0, 0.5, 0.3]})
    m = unit_means(pairs)
    # a: (1 + 0) / 2; b: (1 + .5) / 2; c: (0 + .5 + .3) / 3 (the within-unit pair counts once)
    assert m.to_dict() == pytest.approx({"a": 0.5, "b": 0.75, "c": 0.8 / 3})


def test_unit_permutation_tests_against_scipy_and_by_hand():
    x = pd.Series([0.9, 0.8, 0.85], index=["m1", "m2", "m3"])
    y = pd.Series([0.3, 0.4, 0.35, 0.5], index=["s1", "s2", "s3", "s4"])
    r = permutation_test_units(x, y, n_perm=10000)
    # 7 units, C(7, 3) = 35 labellings, exact; only the observed one reaches the difference: the
    # one-sided p is 1 / 35 and scipy's two-sided p doubles it
    assert r["difference"] == pytest.approx(x.mean() - y.mean()) and r["p_value"] == pytest.approx(2 / 35)
    assert r["n_a"] == 3 and r["n_b"] == 4 and r["cohens_d"] > 2
    # paired: sign flips of the per-subject differences, 2^5 = 32 of them; all positive -> 2 / 32
    intra = pd.Series([0.9, 0.8, 0.7, 0.95, 0.85], index=list("abcde"))
    inter = pd.Series([0.5, 0.6, 0.4, 0.7, 0.6, 0.1], index=list("abcdef"))  # f has no intra pair
    p = permutation_test_units(intra, inter, paired=True)
    assert p["n_a"] == p["n_b"] == 5 and p["p_value"] == pytest.approx(2 / 32)
    d = intra.to_numpy() - inter.iloc[:5].to_numpy()
    assert p["cohens_d"] == pytest.approx(d.mean() / d.std(ddof=1))
    with pytest.raises(ValueError, match="at least 2"):
        permutation_test_units(x.iloc[:1], y)


def test_corrected_resampled_ttest_against_a_hand_computation_and_scipy():
    a = np.array([0.9, 0.8, 0.85, 0.95])
    b = np.array([0.85, 0.8, 0.8, 0.9])
    r = corrected_resampled_ttest(a, b, n_train=400, n_test=100)
    # d = (.05, 0, .05, .05): mean .0375, var .000625; sqrt((1/4 + 1/4) * .000625) = .0176777
    assert r["mean_difference"] == pytest.approx(0.0375)
    assert r["t"] == pytest.approx(0.0375 / np.sqrt(0.5 * 0.000625))
    assert r["df"] == 3 and r["p_value"] == pytest.approx(2 * sps.t.sf(r["t"], 3))
    # without the correction term it is the ordinary paired t-test
    plain = corrected_resampled_ttest(a, b, n_train=10**12, n_test=0)
    ref = sps.ttest_rel(a, b)
    assert plain["t"] == pytest.approx(ref.statistic) and plain["p_value"] == pytest.approx(ref.pvalue)
    # the correction makes the test more conservative
    assert r["p_value"] > plain["p_value"]


def test_permutation_test_permutes_models_and_finds_a_planted_structure():
    folds = np.array([0, 0, 0, 1, 1, 1])
    seeds = np.array([0, 1, 2, 0, 1, 2])
    sim = np.where(folds[:, None] == folds[None], 0.3, 0.0) + np.where(seeds[:, None] == seeds[None], 0.9, 0.0)
    np.fill_diagonal(sim, 1.0)
    r = permutation_test_models(sim, folds, seeds, n_perm=1000, seed=0)  # 6! = 720 <= 1000: exact
    # pairs differing in fold only (same seed) 0.9; in seed only (same fold) 0.3
    assert r["difference"] == pytest.approx(0.6) and r["n_a"] == 3 and r["n_b"] == 6
    # counted once over all 720 relabellings of the 6 models: 48 reach |difference| >= 0.6
    assert r["p_value"] == pytest.approx(48 / 720)
    # Monte Carlo with fewer draws than permutations agrees
    assert permutation_test_models(sim, folds, seeds, n_perm=500, seed=1)["p_value"] == pytest.approx(48 / 720,
                                                                                                     abs=0.04)
    noise = np.random.default_rng(3).random((6, 6))
    noise = (noise + noise.T) / 2
    assert permutation_test_models(noise, folds, seeds, n_perm=500)["p_value"] > 0.05


def test_corrected_ttest_averages_the_seeds_of_a_fold_and_is_vectorised():
    a = np.array([0.9, 0.8, 0.85, 0.95, 0.7, 0.75])
    b = np.array([0.85, 0.8, 0.8, 0.9, 0.7, 0.7])
    folds = np.array([0, 0, 1, 1, 2, 2])  # two seeds per fold: J = 3 folds, not 6 resamples
    r = corrected_resampled_ttest(a, b, n_train=80, n_test=20, groups=folds)
    per_fold = np.array([0.025, 0.05, 0.025])
    ref = corrected_resampled_ttest(per_fold, np.zeros(3), n_train=80, n_test=20)
    assert r["df"] == 2 and r["t"] == pytest.approx(ref["t"]) and r["p_value"] == pytest.approx(ref["p_value"])
    se = np.sqrt((1 / 3 + 0.25) * per_fold.var(ddof=1))
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((per_fold.mean() - sps.t.ppf(0.975, 2) * se,
                                                        per_fold.mean() + sps.t.ppf(0.975, 2) * se))
    # rows of a 2-D array are tested one by one
    many = corrected_resampled_ttest(np.stack([a, b]), np.stack([b, a]), 80, 20, groups=folds)
    assert many["t"] == pytest.approx([r["t"], -r["t"]]) and many["p_value"] == pytest.approx([r["p_value"]] * 2)
    with pytest.raises(ValueError, match="at least 2 groups"):
        corrected_resampled_ttest(a, b, 80, 20, groups=np.zeros(6))


def test_sign_flip_test_exact_and_monte_carlo():
    d = np.array([0.5, 0.2, 0.1, 0.3, -0.05])
    r = sign_flip_test(d)  # 2^5 = 32 sign patterns <= n_perm: exact, every pattern counted
    signs = 1 - 2 * ((np.arange(32)[:, None] >> np.arange(5)) & 1)
    stats_ = np.abs(signs @ d) / 5
    assert r["difference"] == pytest.approx(d.mean())
    assert r["p_value"] == pytest.approx(np.mean(stats_ >= abs(d.mean()) - 1e-12))
    ref = sps.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf,
                               alternative="two-sided")
    assert r["p_value"] == pytest.approx(ref.pvalue)
    # weights: the class-balanced weighted mean
    labels = np.array([0, 0, 0, 1, 1])
    w = class_weights(labels)
    assert w == pytest.approx([1 / 6] * 3 + [1 / 4] * 2) and w.sum() == pytest.approx(1.0)
    assert sign_flip_test(d, w)["difference"] == pytest.approx(d[:3].mean() / 2 + d[3:].mean() / 2)
    # Monte Carlo (2^20 patterns > n_perm): p = (1 + hits) / (1 + n_perm), never 0
    big = np.full(20, 0.1)
    assert sign_flip_test(big, n_perm=999)["p_value"] == pytest.approx(1 / 1000, abs=2 / 1000)


def test_paired_subject_test_weights_classes_and_brackets_its_difference():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], [30, 10])
    a = np.clip(rng.normal(0.8, 0.2, 40), 0, 1)
    b = np.clip(a - 0.1 * labels + rng.normal(0, 0.05, 40), 0, 1)
    r = paired_subject_test(a, b, labels, n_perm=999, n_boot=2000)
    w = class_weights(labels)
    assert r["mean_a"] == pytest.approx(w @ a) and r["difference"] == pytest.approx(w @ (a - b))
    assert r["ci_low"] < r["difference"] < r["ci_high"] and r["n"] == 40 and r["p_value"] < 0.05
    with pytest.raises(ValueError, match="at least 2"):
        paired_subject_test(a[:1], b[:1])


N_REP = 2000  # seeded repetitions of each simulated comparison


def simulate_folds(rng, delta, n_folds=5, n_seeds=3, n_train=160, n_val=40, sigma=0.02, tau=0.01):
    """(N_REP, folds x seeds) validation scores of A and B, folds-major. Simulation model: the
    difference of the two procedures' validation balanced accuracies, model (fold k, seed s) of
    one repetition (one data set), is d_ks = delta + sigma (sqrt(rho) z + sqrt(1 - rho) z_k) +
    tau e_ks with z, z_k, e_ks independent N(0, 1): z is what the data set shares over its folds,
    rho = n_val / (n_train + n_val) the correlation of two folds' scores that Nadeau and Bengio
    attribute to overlapping training sets (rho / (1 - rho) = n_val / n_train), z_k the fold's own
    training / validation draw and tau e_ks the seed."""
    rho = n_val / (n_train + n_val)
    z = rng.standard_normal((N_REP, 1, 1))
    zk = rng.standard_normal((N_REP, n_folds, 1))
    e = rng.standard_normal((N_REP, n_folds, n_seeds))
    d = delta + sigma * (np.sqrt(rho) * z + np.sqrt(1 - rho) * zk) + tau * e
    b = 0.8 + 0.02 * rng.standard_normal(d.shape)
    return (b + d).reshape(N_REP, -1), b.reshape(N_REP, -1), np.repeat(np.arange(n_folds), n_seeds)


def test_corrected_ttest_on_held_out_folds_is_calibrated_and_finds_a_real_difference():
    """Simulation model: :func:`simulate_folds` (5 folds x 3 seeds, 160 training and 40 validation
    subjects per fold, fold-level SD of the difference 0.02, seed SD 0.01), 2,000 repetitions.
    Equal procedures (delta 0): p < 0.05 in at most 6.5% of them. Treating the 15 models as 15
    resamples (what the old command did) is anti-conservative: seeds of one fold are not new
    resamples. A real difference of delta = 0.06 balanced accuracy (3 fold-level SDs) is found
    (p < 0.05) in at least 80%."""
    rng = np.random.default_rng(2024)
    a, b, folds = simulate_folds(rng, 0.0)
    p = corrected_resampled_ttest(a, b, n_train=160, n_test=40, groups=folds)["p_value"]
    assert p.shape == (N_REP,) and np.mean(p < 0.05) <= 0.065
    models_as_resamples = corrected_resampled_ttest(a, b, n_train=160, n_test=40)["p_value"]
    assert np.mean(models_as_resamples < 0.05) > 0.065
    a, b, folds = simulate_folds(rng, 0.06)
    assert np.mean(corrected_resampled_ttest(a, b, n_train=160, n_test=40, groups=folds)["p_value"] < 0.05) >= 0.8


def simulate_test_set(rng, delta, n_subjects=100, n_models=5):
    """(N_REP, subjects) per-subject fraction of correct models of A and B on one fixed test set,
    and the subjects' classes. Simulation model: 100 test subjects (50 per class); subject i of a
    repetition is classified correctly by each model of B independently with probability
    p_i ~ U(0.5, 0.85) (subjects differ in difficulty, shared by both procedures), by each model of
    A with probability p_i + delta; 5 models per procedure."""
    p = rng.uniform(0.5, 0.85, (N_REP, n_subjects))
    a = rng.binomial(n_models, p + delta) / n_models
    b = rng.binomial(n_models, p) / n_models
    return a, b, np.repeat([0, 1], n_subjects // 2)


def test_paired_subject_test_on_a_fixed_test_set_is_calibrated_and_finds_a_real_difference():
    """Simulation model: :func:`simulate_test_set`, 2,000 repetitions; the sign-flip test of the
    class-weighted per-subject differences (what :func:`paired_subject_test` runs; vectorised over
    the repetitions). Equally good models (delta 0): p < 0.05 in at most 6.5% of them. A real
    difference of delta = 0.1 in every subject's chance of being classified correctly (0.1
    balanced accuracy) is found (p < 0.05) in at least 80%."""
    rng = np.random.default_rng(7)
    a, b, labels = simulate_test_set(rng, 0.0)
    w = class_weights(labels)
    p = sign_flip_test(a - b, w, n_perm=999, seed=1)["p_value"]
    assert p.shape == (N_REP,) and np.mean(p < 0.05) <= 0.065
    a, b, labels = simulate_test_set(rng, 0.1)
    res = sign_flip_test(a - b, w, n_perm=999, seed=1)
    assert np.mean(res["p_value"] < 0.05) >= 0.8 and np.mean(res["difference"]) == pytest.approx(0.1, abs=0.005)
    # one repetition through the public function gives the same p-value
    one = paired_subject_test(a[0], b[0], labels, n_perm=999, n_boot=200, seed=1)
    assert one["p_value"] == pytest.approx(res["p_value"][0])
