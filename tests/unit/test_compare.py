"""``python -m robustmaps.compare`` on hand-made result folders: the procedure test on held-out
folds (corrected resampled t-test, seeds averaged per fold) and the test-set test over subjects."""

import numpy as np
import pandas as pd
import pytest

from robustmaps.compare import MODELS, PROCEDURE, compare, main
from robustmaps.io import write_tsv
from robustmaps.stats import class_weights, corrected_resampled_ttest, paired_subject_test

TEST_LABELS = np.repeat([0, 1], [6, 4])  # 10 test subjects, unbalanced classes
TEST_IDS = [f"sub-T{i}" for i in range(10)]


def fake_results(root, validation, correct, n_train=30, n_val=8, proba=None):
    """A results folder: ``validation`` (fold, seed) -> validation balanced accuracy; ``correct``
    (fold, seed) -> 0/1 per test subject (whether the model classifies it correctly)."""
    rows = []
    for (f, s), v in validation.items():
        c = np.asarray(correct[(f, s)])
        bacc = np.mean([c[TEST_LABELS == k].mean() for k in (0, 1)])
        rows += [{"fold": f, "seed": s, "set": "validation", "balanced_accuracy": v, "n": n_val},
                 {"fold": f, "seed": s, "set": "test", "balanced_accuracy": bacc, "n": len(c)}]
        pred = np.where(c == 1, TEST_LABELS, 1 - TEST_LABELS)
        p_ad = np.where(pred == 1, 0.9, 0.2) if proba is None else proba[(f, s)]
        d = root / "models" / f"fold-{f}" / f"seed-{s}"
        d.mkdir(parents=True)
        write_tsv(pd.DataFrame({"participant_id": TEST_IDS, "session_id": "ses-M000", "diagnosis": "x",
                                "label": TEST_LABELS, "proba_CN": 1 - p_ad, "proba_AD": p_ad, "predicted": pred}),
                  d / "predictions-test.tsv")
    rows += [{"fold": k, "seed": "all", "set": "test", "balanced_accuracy": 0.0, "n": 10} for k in ("mean", "sd")]
    (root / "training").mkdir(parents=True)
    write_tsv(pd.DataFrame(rows), root / "training" / "summary.tsv")
    for f in {f for f, _ in validation}:
        d = root / "splits" / f"split-{f}"
        d.mkdir(parents=True)
        write_tsv(pd.DataFrame({"participant_id": [f"sub-{f}-{i}" for i in range(n_train)]}), d / "train_baseline.tsv")
        write_tsv(pd.DataFrame({"participant_id": [f"sub-v{f}-{i}" for i in range(n_val)]}),
                  d / "validation_baseline.tsv")


def two_folders(tmp_path):
    rng = np.random.default_rng(0)
    models = [(f, s) for f in range(3) for s in range(2)]
    val_a = dict(zip(models, [0.9, 0.8, 0.85, 0.95, 0.75, 0.8]))
    val_b = dict(zip(models, [0.85, 0.8, 0.8, 0.9, 0.75, 0.7]))
    val_b[(3, 0)] = 0.5  # a model A does not have: not paired
    cor_a = {m: (rng.random(10) < 0.85).astype(int) for m in models}
    cor_b = {m: (rng.random(10) < 0.6).astype(int) for m in [*models, (3, 0)]}
    fake_results(tmp_path / "A", val_a, cor_a)
    fake_results(tmp_path / "B", val_b, cor_b)
    return models, val_a, val_b, cor_a, cor_b


def test_compare_answers_both_questions_with_the_right_test(tmp_path, capsys):
    models, val_a, val_b, cor_a, cor_b = two_folders(tmp_path)
    t = compare(tmp_path / "A", tmp_path / "B", n_perm=999, n_boot=500).set_index("question")
    assert list(t.index) == [PROCEDURE, MODELS] and (t.note == "").all()
    # 1. the procedure: validation scores, the two seeds of a fold averaged (J = 3 folds), n_val / n_train
    proc = t.loc[PROCEDURE]
    ref = corrected_resampled_ttest(np.array([val_a[m] for m in models]), np.array([val_b[m] for m in models]),
                                    n_train=30, n_test=8, groups=[f for f, _ in models])
    assert proc["set"] == "validation" and proc.unit == "fold" and proc.n_units == 3 and proc.n_models == 6
    assert proc.df == 2 and proc.t == pytest.approx(ref["t"]) and proc.p_value == pytest.approx(ref["p_value"])
    assert (proc.n_train, proc.n_test) == (30, 8) and proc.ci_low <= proc.mean_difference <= proc.ci_high
    # 2. these models on the test set: per subject the fraction of the 6 paired models classifying it correctly
    frac_a = np.mean([cor_a[m] for m in models], 0)
    frac_b = np.mean([cor_b[m] for m in models], 0)
    ref = paired_subject_test(frac_a, frac_b, TEST_LABELS, n_perm=999, n_boot=500)
    fixed = t.loc[MODELS]
    assert fixed["set"] == "test" and fixed.unit == "subject" and fixed.n_units == 10 and fixed.n_models == 6
    assert fixed.p_value == pytest.approx(ref["p_value"]) and fixed.mean_difference == pytest.approx(ref["difference"])
    # class-weighted correctness: the models' mean test balanced accuracy
    bacc = np.mean([np.mean([cor_a[m][TEST_LABELS == k].mean() for k in (0, 1)]) for m in models])
    assert fixed.mean_a == pytest.approx(bacc) and np.isnan(fixed.t)
    # the probability of the true class instead
    prob = compare(tmp_path / "A", tmp_path / "B", score="probability", n_perm=999, n_boot=500).iloc[1]
    p_true = lambda c: np.where(c == 1, np.where(TEST_LABELS == 1, 0.9, 0.8), np.where(TEST_LABELS == 1, 0.2, 0.1))
    w = class_weights(TEST_LABELS)
    assert prob.mean_a == pytest.approx(w @ np.mean([p_true(cor_a[m]) for m in models], 0))
    # the command names both numbers
    assert main([str(tmp_path / "A"), str(tmp_path / "B"), "--out", str(tmp_path / "c.tsv")]) == 0
    out = capsys.readouterr().out
    assert PROCEDURE in out and MODELS in out and "p_value" in out
    written = pd.read_csv(tmp_path / "c.tsv", sep="\t")
    assert list(written.question) == [PROCEDURE, MODELS]
    assert written.p_value[0] == pytest.approx(proc.p_value)


def test_compare_refuses_what_it_cannot_pair_and_notes_what_it_cannot_test(tmp_path, capsys):
    two_folders(tmp_path)
    assert main([str(tmp_path / "A"), str(tmp_path / "nowhere")]) == 1
    assert "ERROR:" in capsys.readouterr().err
    assert main([str(tmp_path / "A"), str(tmp_path / "B"), "--set", "validation"]) == 1
    assert "fixed evaluation set" in capsys.readouterr().err
    # a model that scored other subjects: not one fixed test set
    pred = tmp_path / "B" / "models" / "fold-0" / "seed-0" / "predictions-test.tsv"
    t = pd.read_csv(pred, sep="\t")
    t.iloc[1:].to_csv(pred, sep="\t", index=False)
    assert main([str(tmp_path / "A"), str(tmp_path / "B")]) == 1
    assert "not one fixed set" in capsys.readouterr().err
    # another test set in B (every model): not a paired comparison
    for f, s in [(f, s) for f in range(3) for s in range(2)][1:]:  # fold-0/seed-0 lacks it already
        pred = tmp_path / "B" / "models" / f"fold-{f}" / f"seed-{s}" / "predictions-test.tsv"
        t = pd.read_csv(pred, sep="\t")
        t.iloc[1:].to_csv(pred, sep="\t", index=False)
    assert main([str(tmp_path / "A"), str(tmp_path / "B")]) == 1
    assert "not the same subjects" in capsys.readouterr().err
    # one fold (two seeds): no variability over training sets to estimate; the test-set test still runs
    one = {(0, 0): 0.9, (0, 1): 0.8}
    cor = {m: np.ones(10, int) for m in one}
    fake_results(tmp_path / "C", one, cor)
    fake_results(tmp_path / "D", {(0, 0): 0.8, (0, 1): 0.7}, {m: np.zeros(10, int) for m in one})
    t = compare(tmp_path / "C", tmp_path / "D", n_perm=999, n_boot=200).set_index("question")
    assert t.loc[PROCEDURE, "note"].startswith("not tested") and np.isnan(t.loc[PROCEDURE, "p_value"])
    assert t.loc[MODELS, "note"] == "" and t.loc[MODELS, "mean_difference"] == pytest.approx(1.0)
    assert t.loc[MODELS, "p_value"] == pytest.approx(2 / 1000)  # all 10 subjects favour C; Monte Carlo floor
