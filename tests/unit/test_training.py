from pathlib import Path

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
    return best, hist, torch.load(tmp_path / f"{name}.ckpt", weights_only=True)


def states_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_bit_identical_weights_and_the_model_learns(tmp_path):
    best1, hist1, ck1 = run(tmp_path, "a")
    best2, hist2, ck2 = run(tmp_path, "b")
    assert states_equal(ck1["model"], ck2["model"])
    assert states_equal(best1["state"], best2["state"])
    assert [h["validation_loss"] for h in hist1] == [h["validation_loss"] for h in hist2]
    assert best1["balanced_accuracy"] >= 0.75


def test_min_epochs_delays_early_stopping_but_not_its_count(tmp_path):
    from dataclasses import replace

    _, hist, _ = run(tmp_path, "p1", cfg=replace(CFG, patience=1, max_epochs=8, lr=3e-1))
    _, hist_min, _ = run(tmp_path, "p1min", cfg=replace(CFG, patience=1, max_epochs=8, lr=3e-1, min_epochs=6))
    assert len(hist) < 6 and hist[-1]["stop"]  # the run without min_epochs stops early
    assert len(hist_min) >= 6
    # the same epochs up to the first stop (min_epochs changes nothing else)
    assert [h["validation_loss"] for h in hist_min[:len(hist)]] == [h["validation_loss"] for h in hist]


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


def test_checkpoints_follow_the_time_interval(tmp_path, monkeypatch):
    """checkpoint_every (resources.checkpoint_minutes): 0 writes after every epoch; a long interval
    writes only after the last epoch (one file per job either way); the weights do not change."""
    saved = []
    real = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: (saved.append(obj["epoch"]), real(obj, f, *a, **k)))
    _, _, every = run(tmp_path, "every")
    assert saved == [0, 1, 2, 3, 4]
    saved.clear()
    _, _, rare = run(tmp_path, "rare", checkpoint_every=3600)
    assert saved == [4] and states_equal(every["model"], rare["model"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["every.ckpt", "rare.ckpt"]


SIGTERM_CHILD = """
import os, signal, sys
import numpy as np
sys.path.insert(0, sys.argv[2])
from test_training import CFG, easy_store
from robustmaps.training import train

store, labels = easy_store()
rows = np.arange(len(labels))

def on_epoch(row):
    if row["epoch"] == 1:  # as Slurm does before a time limit: SIGTERM to the job
        os.kill(os.getpid(), signal.SIGTERM)

train(store, rows[:24], labels[:24], rows[24:], labels[24:], CFG, seed=3, checkpoint=sys.argv[1], threads=1,
      on_epoch=on_epoch, checkpoint_every=3600)
print("not reached")
"""


def test_sigterm_checkpoints_at_once_and_the_rerun_ends_with_the_same_weights(tmp_path):
    """A real SIGTERM in a training process whose interval has not come yet: the state after the
    last finished epoch is written at once, the process exits with 143 (128 + SIGTERM), and a
    re-run resumes from it to the weights of an uninterrupted run."""
    import subprocess
    import sys

    ck_path = tmp_path / "term.ckpt"
    proc = subprocess.run([sys.executable, "-c", SIGTERM_CHILD, str(ck_path), str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 143, proc.stderr[-2000:]
    assert "not reached" not in proc.stdout
    assert torch.load(ck_path, weights_only=True)["epoch"] == 1
    _, hist_full, ck_full = run(tmp_path, "full")
    _, hist, ck = run(tmp_path, "term")
    assert states_equal(ck["model"], ck_full["model"])
    assert [h["train_loss"] for h in hist] == [h["train_loss"] for h in hist_full]


def test_a_checkpoint_from_another_device_or_torch_is_not_resumed(tmp_path, caplog):
    """The checkpoint records the device actually used (GPU model included) and the torch
    version; another GPU model or torch may compute other numbers, so it is ignored, saying why."""
    import logging

    run(tmp_path, "moved", stop_after=2)
    ck = torch.load(tmp_path / "moved.ckpt", weights_only=True)
    assert ck["device"] == "cpu" and ck["torch"] == str(torch.__version__)
    torch.save({**ck, "device": "cuda (NVIDIA H100 80GB HBM3)"}, tmp_path / "moved.ckpt")
    with caplog.at_level(logging.INFO, logger="robustmaps.training"):
        _, hist, _ = run(tmp_path, "moved")
    assert "written on cuda (NVIDIA H100 80GB HBM3) with torch" in caplog.text
    assert [h["epoch"] for h in hist] == list(range(len(hist)))  # from scratch


@pytest.mark.gpu
def test_amp_resume_restores_the_grad_scaler(tmp_path):
    """On CUDA with AMP: a resumed run continues with the GradScaler's scale and growth tracker,
    as an uninterrupted run has them (the scaler's state is in the checkpoint)."""
    from dataclasses import replace

    cfg = replace(CFG, amp=True)
    _, _, full = run(tmp_path, "full", cfg=cfg, device="cuda")
    run(tmp_path, "resumed", cfg=cfg, device="cuda", stop_after=2)
    _, _, resumed = run(tmp_path, "resumed", cfg=cfg, device="cuda")
    assert full["scaler"] and full["scaler"] == resumed["scaler"]


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


@pytest.mark.parametrize("mode", ["none", "minmax", "zscore"])
def test_in_model_normalisation_equals_the_training_transform(mode):
    from robustmaps.trained import Normalise

    store, labels = easy_store(n=3)
    ds = make_dataset(store, [0, 1, 2], labels[:3], mode)
    expected = torch.stack([ds[i]["image"] for i in range(3)])
    raw = torch.from_numpy(store.astype(np.float32))[:, None]
    torch.testing.assert_close(Normalise(mode)(raw), torch.as_tensor(expected), atol=1e-5, rtol=1e-4)


def test_augmentation_is_random_per_draw_but_reproducible_by_seed(tmp_path):
    from dataclasses import replace

    cfg = replace(CFG, max_epochs=2, augmentation={"translate_voxels": 1, "intensity_scale": 0.1, "noise_std": 0.05})
    _, hist_a, ck_a = run(tmp_path, "aug-a", cfg=cfg)
    _, hist_b, ck_b = run(tmp_path, "aug-b", cfg=cfg)
    _, hist_plain, _ = run(tmp_path, "plain", cfg=replace(cfg, augmentation={}))
    assert states_equal(ck_a["model"], ck_b["model"])
    assert hist_a[0]["train_loss"] != hist_plain[0]["train_loss"]  # the transforms did something
    store, labels = easy_store(n=2)
    ds = make_dataset(store, [0], labels[:1], "none", augmentation=cfg.augmentation)
    assert not torch.equal(torch.as_tensor(ds[0]["image"]), torch.as_tensor(ds[0]["image"]))


def test_loader_workers_give_the_same_model(tmp_path):
    from dataclasses import replace

    cfg = replace(CFG, max_epochs=2)
    _, _, ck0 = run(tmp_path, "w0", cfg=cfg)
    _, _, ck2 = run(tmp_path, "w2", cfg=replace(cfg, workers=2))
    assert states_equal(ck0["model"], ck2["model"])


def test_trained_model_round_trip_and_checkpoint_cleanup(trained_model):
    from robustmaps.trained import load_trained

    model, meta = load_trained(trained_model["model"])
    assert meta["classes"] == ["CN", "AD"] and meta["fold"] == 0 and meta["seed"] == 0
    assert not (trained_model["root"] / "ck" / "checkpoint.pt").exists()
    import pandas as pd

    hist = pd.read_csv(trained_model["history"], sep="\t")
    assert list(hist.columns) == ["epoch", "train_loss", "train_balanced_accuracy", "validation_loss",
                                  "validation_balanced_accuracy", "lr", "seconds", "best"]
    assert hist.best.sum() == 1
    best = hist[hist.best].iloc[0]
    assert best.validation_balanced_accuracy == hist.validation_balanced_accuracy.max()
    assert meta["best_epoch"] == best.epoch and meta["validation_balanced_accuracy"] == best.validation_balanced_accuracy
    # the model has learned the planted difference and takes raw maps without gradients on weights
    x = torch.from_numpy(trained_model["images"][36:].astype(np.float32))[:, None]
    with torch.no_grad():
        pred = model(x).argmax(1).numpy()
    assert (pred == trained_model["labels"][36:]).mean() >= 0.8
    assert not any(p.requires_grad for p in model.parameters()) and not model.training


def test_split_table_of_another_store_is_refused(trained_model, tmp_path):
    import pandas as pd

    from robustmaps.io import InputError
    from robustmaps.preprocess import read_index
    from robustmaps.splits import read_split_rows

    index = read_index(trained_model["index"])
    table = pd.read_csv(trained_model["validation"], sep="\t")
    table.loc[0, "row"] = 1  # row 1 holds another session
    table.to_csv(tmp_path / "bad.tsv", sep="\t", index=False)
    with pytest.raises(InputError, match="bad.tsv: sessions do not match the store index"):
        read_split_rows(tmp_path / "bad.tsv", index)
    table.loc[0, "row"] = 999
    table.to_csv(tmp_path / "bad.tsv", sep="\t", index=False)
    with pytest.raises(InputError, match="bad.tsv: store rows outside"):
        read_split_rows(tmp_path / "bad.tsv", index)


def test_fingerprint_follows_settings_and_table_contents(tmp_path):
    from robustmaps.checkpoints import fingerprint

    (tmp_path / "t.tsv").write_text("a\n1\n")
    a = fingerprint({"lr": 1e-3}, [tmp_path / "t.tsv"])
    assert fingerprint({"lr": 1e-3}, [tmp_path / "t.tsv"]) == a
    assert fingerprint({"lr": 1e-4}, [tmp_path / "t.tsv"]) != a
    (tmp_path / "t.tsv").write_text("a\n2\n")
    assert fingerprint({"lr": 1e-3}, [tmp_path / "t.tsv"]) != a


@pytest.mark.gpu
def test_cuda_training_with_amp_learns_and_predicts_like_cpu(tmp_path):
    from dataclasses import replace

    from robustmaps.models import build_model
    from robustmaps.trained import Classifier

    best, hist, _ = run(tmp_path, "cuda", cfg=replace(CFG, amp=True), device="cuda")
    assert all(np.isfinite(h["train_loss"]) for h in hist) and best["balanced_accuracy"] >= 0.75
    store, _ = easy_store()
    net = build_model(CFG.architecture, store.shape[1:])
    net.load_state_dict(best["state"])
    model = Classifier(net).eval()
    x = torch.from_numpy(store[24:].astype(np.float32))[:, None]
    with torch.no_grad():
        cpu = model(x)
        gpu = model.cuda()(x.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-3, rtol=1e-3)


def test_best_epoch_ties_on_balanced_accuracy_go_to_the_lower_validation_loss(trained_model):
    import pandas as pd

    hist = pd.read_csv(trained_model["history"], sep="\t")
    top = hist[hist.validation_balanced_accuracy == hist.validation_balanced_accuracy.max()]
    assert len(top) > 1  # the tiny cohort reaches 1.0 at several epochs
    assert hist[hist.best].epoch.iloc[0] == top.loc[top.validation_loss.idxmin(), "epoch"]


def test_fingerprint_of_a_store_follows_its_content_not_its_path_or_time(tmp_path):
    import os

    from robustmaps.checkpoints import fingerprint

    data = np.arange(200_000, dtype=np.float16)
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        np.save(tmp_path / d / "store.npy", data)
    os.utime(tmp_path / "b" / "store.npy", ns=(1, 1))
    fa = fingerprint({}, [tmp_path / "a" / "store.npy"])
    assert fingerprint({}, [tmp_path / "b" / "store.npy"]) == fa  # another folder, another mtime
    changed = data.copy()
    changed[-10:] = 0  # inside the last sampled block
    np.save(tmp_path / "b" / "store.npy", changed)
    assert fingerprint({}, [tmp_path / "b" / "store.npy"]) != fa


def test_model_files_of_two_runs_in_different_folders_are_the_same_bytes(trained_model, tmp_path):
    """The rule's entry point twice on copies of the same inputs in different folders: model.pt
    is byte-identical (no path, time or temporary name inside) and history.tsv but for the
    measured seconds."""
    import shutil

    import pandas as pd

    from robustmaps.jobs.train import train_model

    settings = {**trained_model["settings"], "max_epochs": 2, "patience": 2}
    out = []
    for name in ("a", "b"):
        d = tmp_path / name
        d.mkdir()
        for f in ("store", "index", "train", "validation"):
            shutil.copy(trained_model[f], d / Path(trained_model[f]).name)
        train_model(d / "store.npy", d / "index.tsv", d / "train.tsv", d / "validation.tsv", d / "model.pt",
                    d / "history.tsv", d / "ck" / "checkpoint.pt", fold=0, seed=3, settings=settings,
                    labels={"CN": 0, "AD": 1}, device="cpu", threads=2)
        out.append(d)
    assert (out[0] / "model.pt").read_bytes() == (out[1] / "model.pt").read_bytes()
    h = [pd.read_csv(d / "history.tsv", sep="\t").drop(columns="seconds") for d in out]
    pd.testing.assert_frame_equal(h[0], h[1])


