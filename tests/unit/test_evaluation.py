import numpy as np
import pandas as pd
import pytest

from robustmaps.jobs.train import evaluate_model, summarise_training
from robustmaps.io import InputError, write_tsv
from robustmaps.metrics import binary_metrics


def test_evaluate_writes_predictions_and_metrics_with_intervals(trained_model, tmp_path):
    tm = trained_model
    sets = {"validation": (tm["store"], tm["index"], tm["validation"]), "train": (tm["store"], tm["index"], tm["train"])}
    preds = {k: tmp_path / f"predictions-{k}.tsv" for k in sets}
    evaluate_model(tm["model"], sets, preds, tmp_path / "metrics.tsv", n_boot=200, device="cpu")
    p = pd.read_csv(preds["validation"], sep="\t")
    assert list(p.columns) == ["participant_id", "session_id", "diagnosis", "label", "proba_CN", "proba_AD", "predicted"]
    assert len(p) == 12 and np.allclose(p.proba_CN + p.proba_AD, 1, atol=1e-6)
    assert (p.label == (p.diagnosis == "AD")).all()
    m = pd.read_csv(tmp_path / "metrics.tsv", sep="\t")
    assert set(m.set) == {"validation", "train"} and len(m) == 8
    for name in sets:
        pp = pd.read_csv(preds[name], sep="\t")
        point = binary_metrics(pp.label, pp.proba_AD)
        for metric, value in point.items():
            row = m[(m.set == name) & (m.metric == metric)].iloc[0]
            assert row.value == pytest.approx(value)
            assert row.ci_low <= value + 1e-9 and value <= row.ci_high + 1e-9
    # the validation baselines the model kept its best epoch on
    hist = pd.read_csv(tm["history"], sep="\t")
    ba = m[(m.set == "validation") & (m.metric == "balanced_accuracy")].value.iloc[0]
    assert ba == pytest.approx(hist[hist.best].validation_balanced_accuracy.iloc[0])


def test_evaluate_refuses_a_store_on_another_grid(trained_model, tmp_path):
    tm = trained_model
    np.save(tmp_path / "store.npy", np.zeros((48, 8, 8, 8), np.float16))
    with pytest.raises(InputError, match="store.npy: images"):
        evaluate_model(tm["model"], {"x": (tmp_path / "store.npy", tm["index"], tm["validation"])},
                       {"x": tmp_path / "p.tsv"}, tmp_path / "m.tsv", n_boot=10, device="cpu")
    assert not (tmp_path / "p.tsv").exists() and not (tmp_path / "m.tsv").exists()


def _model_files(tmp_path, fold, seed, test_ba, best_epoch):
    d = tmp_path / f"f{fold}s{seed}"
    rows = []
    for name, ba in (("validation", 0.9), ("test", test_ba)):
        for metric, value in (("balanced_accuracy", ba), ("auc", 0.95), ("sensitivity", ba), ("specificity", ba)):
            rows.append({"set": name, "metric": metric, "value": value, "ci_low": value - 0.1,
                         "ci_high": value + 0.05, "n": 20})
    write_tsv(pd.DataFrame(rows), d / "metrics.tsv")
    hist = pd.DataFrame({"epoch": range(6), "train_loss": 0.5, "validation_loss": 0.6, "train_balanced_accuracy": 0.8,
                         "validation_balanced_accuracy": 0.7, "lr": 1e-3, "seconds": 1.0,
                         "best": [e == best_epoch for e in range(6)]})
    write_tsv(hist, d / "history.tsv")
    return {"fold": fold, "seed": seed, "metrics": d / "metrics.tsv", "history": d / "history.tsv"}


def test_summary_has_every_model_and_mean_and_sd_per_set(tmp_path):
    models = [_model_files(tmp_path, f, s, ba, e) for (f, s, ba, e) in
              [(0, 0, 0.8, 2), (0, 1, 0.9, 3), (1, 0, 0.85, 4)]]
    summarise_training(models, tmp_path / "summary.tsv", tmp_path / "curves.png")
    s = pd.read_csv(tmp_path / "summary.tsv", sep="\t", dtype={"fold": str, "seed": str})
    test = s[s.set == "test"]
    assert test.fold.tolist() == ["0", "0", "1", "mean", "sd"]
    assert test[test.fold == "mean"].balanced_accuracy.iloc[0] == pytest.approx(0.85)
    assert test[test.fold == "sd"].balanced_accuracy.iloc[0] == pytest.approx(np.std([0.8, 0.9, 0.85], ddof=1))
    per_model = test[~test.fold.isin(["mean", "sd"])]
    assert per_model.best_epoch.tolist() == [2, 3, 4] and (per_model.epochs == 6).all()
    assert per_model.balanced_accuracy_ci_low.tolist() == pytest.approx([0.7, 0.8, 0.75])
    assert s.set.tolist()[0] == "validation"
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_summary_refuses_a_history_without_a_best_epoch(tmp_path):
    m = _model_files(tmp_path, 0, 0, 0.8, best_epoch=99)
    with pytest.raises(InputError, match="history.tsv: needs exactly one best epoch"):
        summarise_training([m], tmp_path / "summary.tsv", tmp_path / "curves.png")
