import numpy as np
import pytest
import torch

from robustmaps.training import EarlyStopping, TrainConfig, make_dataset, train


def easy_store(n=32, shape=(12, 14, 12), seed=0):
    """Class 1 has a darker blob: a CNN learns it in a few epochs."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    store = rng.normal(0.5, 0.1, (n, *shape)).astype(np.float16)
    store[labels == 1, 3:7, 4:8, 3:7] -= 0.3
    return store, labels


CFG = TrainConfig(architecture={"name": "paper", "n_blocks": 2, "filters": 4, "dropout": 0.2},
                  lr=3e-3, weight_decay=0.0, batch_size=4, max_epochs=5, patience=5)


def run(tmp_path, name, cfg=CFG, **kw):
    store, labels = easy_store()
    rows = np.arange(len(labels))
    best, hist = train(store, rows[:24], labels[:24], rows[24:], labels[24:], cfg, seed=3,
                       checkpoint=tmp_path / f"{name}.ckpt", threads=1, **kw)
    return best, hist, torch.load(tmp_path / f"{name}.ckpt", weights_only=False)


def states_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_bit_identical_weights_and_the_model_learns(tmp_path):
    best1, hist1, ck1 = run(tmp_path, "a")
    best2, hist2, ck2 = run(tmp_path, "b")
    assert states_equal(ck1["model"], ck2["model"])
    assert states_equal(best1["state"], best2["state"])
    assert [h["validation_loss"] for h in hist1] == [h["validation_loss"] for h in hist2]
    assert best1["balanced_accuracy"] >= 0.75


def test_resume_after_a_kill_ends_with_the_same_weights(tmp_path):
    _, hist_full, ck_full = run(tmp_path, "full")
    _, hist_part, _ = run(tmp_path, "resumed", stop_after=2)
    assert len(hist_part) == 2
    best, hist, ck = run(tmp_path, "resumed")
    assert len(hist) == len(hist_full)
    assert states_equal(ck["model"], ck_full["model"])
    assert [h["train_loss"] for h in hist] == [h["train_loss"] for h in hist_full]


def test_a_checkpoint_of_another_configuration_is_not_resumed(tmp_path):
    _, _, ck_full = run(tmp_path, "full", fingerprint="config-b")
    from dataclasses import replace

    # a killed run of another configuration (another lr) left its checkpoint behind
    run(tmp_path, "stale", cfg=replace(CFG, lr=1e-2), stop_after=2, fingerprint="config-a")
    _, hist, ck = run(tmp_path, "stale", fingerprint="config-b")
    assert [h["epoch"] for h in hist] == list(range(len(hist)))
    assert states_equal(ck["model"], ck_full["model"]) and ck["fingerprint"] == "config-b"


def test_early_stopping_on_a_synthetic_loss_curve():
    stop = EarlyStopping(patience=3)
    curve = [1.0, 0.8, 0.7, 0.75, 0.72, 0.69, 0.7, 0.71, 0.7]
    decisions = [stop.step(v) for v in curve]
    # minimum 0.69 at epoch 5, then three epochs above it -> stop at epoch 8
    assert decisions.index(True) == 8
    assert EarlyStopping(patience=5).step(float("inf")) is False


@pytest.mark.parametrize("norm", ["none", "minmax", "zscore"])
def test_dataset_reads_store_rows_with_normalisation(norm):
    store, labels = easy_store(n=4)
    ds = make_dataset(store, [2, 0], labels[[2, 0]], norm, cache_size=1)
    item = ds[0]
    assert item["image"].shape == (1, 12, 14, 12) and item["image"].dtype == torch.float32
    x = item["image"].numpy()
    if norm == "none":
        np.testing.assert_array_equal(x[0], store[2].astype(np.float32))
    elif norm == "minmax":
        assert x.min() == pytest.approx(0) and x.max() == pytest.approx(1)
    else:
        assert abs(x.mean()) < 1e-4 and x.std() == pytest.approx(1, rel=1e-3)
