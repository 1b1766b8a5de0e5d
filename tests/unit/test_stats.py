"""Statistics of learning procedures (robustmaps.stats) against hand computations and scipy."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from robustmaps.stats import (bootstrap_nested_variance, cluster_bootstrap_ci, corrected_resampled_ttest,
                              nested_variance, permutation_test_models, permutation_test_units, unit_means)


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


def fake_results(root, scores, n_train=30, n_test=20):
    from robustmaps.io import write_tsv

    rows = [{"fold": f, "seed": s, "set": "test", "balanced_accuracy": v, "n": n_test} for (f, s), v in scores.items()]
    rows += [{"fold": k, "seed": "all", "set": "test", "balanced_accuracy": 0.0, "n": n_test} for k in ("mean", "sd")]
    (root / "training").mkdir(parents=True)
    write_tsv(pd.DataFrame(rows), root / "training" / "summary.tsv")
    for f in {f for f, _ in scores}:
        (root / "splits" / f"split-{f}").mkdir(parents=True)
        write_tsv(pd.DataFrame({"participant_id": [f"sub-{i}" for i in range(n_train)]}),
                  root / "splits" / f"split-{f}" / "train_baseline.tsv")


def test_compare_two_result_folders(tmp_path, capsys):
    from robustmaps.compare import compare, main

    a = {(0, 0): 0.9, (0, 1): 0.8, (1, 0): 0.85, (1, 1): 0.95}
    b = {(0, 0): 0.85, (0, 1): 0.8, (1, 0): 0.8, (1, 1): 0.9, (2, 0): 0.5}  # (2, 0) is not paired
    fake_results(tmp_path / "A", a)
    fake_results(tmp_path / "B", b)
    t = compare(tmp_path / "A", tmp_path / "B").iloc[0]
    ref = corrected_resampled_ttest(np.array(list(a.values())), np.array([0.85, 0.8, 0.8, 0.9]), 30, 20)
    assert t.n_models == 4 and t.t == pytest.approx(ref["t"]) and t.p_value == pytest.approx(ref["p_value"])
    assert t.ci_low <= t.mean_difference <= t.ci_high
    assert main([str(tmp_path / "A"), str(tmp_path / "B"), "--out", str(tmp_path / "c.tsv")]) == 0
    assert pd.read_csv(tmp_path / "c.tsv", sep="\t").p_value[0] == pytest.approx(ref["p_value"])
    assert "p_value" in capsys.readouterr().out
    assert main([str(tmp_path / "A"), str(tmp_path / "nowhere")]) == 1
    assert "ERROR:" in capsys.readouterr().err
