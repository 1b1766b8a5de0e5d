"""Statistics of learning procedures (robustmaps.stats) against hand computations and scipy."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from robustmaps.stats import (bootstrap_nested_variance, corrected_resampled_ttest, nested_variance,
                              permutation_test_models)


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
