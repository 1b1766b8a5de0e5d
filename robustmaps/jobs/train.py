"""Rule entries of the training stage (rules/train.smk): train, evaluate, training_summary.

- :func:`train_model`: one (fold, seed) model and its history (the loop: robustmaps.training).
- :func:`evaluate_model`: predictions and metrics of one (fold, seed) model on its validation
  set, the test set and every independent cohort; each metric with a stratified bootstrap
  confidence interval over the evaluated set (the only source of variance of a trained model).
- :func:`summarise_training`: every (fold, seed) row plus mean and SD across models per set (the
  spread of the learning procedure over folds and seeds), and the learning curves.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..checkpoints import fingerprint, plain
from ..devices import device_for, seed_everything
from ..hpo import load_best
from ..io import InputError, atomic_path, read_tsv, write_tsv
from ..metrics import binary_metrics, bootstrap_ci
from ..plots import learning_curves
from ..preprocess import open_store
from ..splits import read_split_rows
from ..trained import class_index, load_trained, predict
from ..training import TrainConfig, result_settings, train

log = logging.getLogger(__name__)


def train_model(store_npy, index_tsv, train_tsv, validation_tsv, model_pt, history_tsv, checkpoint, *,
                fold: int, seed: int, settings: dict, labels: dict, device: str = "auto",
                threads: int = 1, best_yaml=None, checkpoint_minutes: float = 0.0) -> None:
    """Rule entry point: train the model of (fold, seed) and write ``model.pt`` (best-epoch
    weights + everything needed to rebuild it) and ``history.tsv``. The checkpoint (every
    ``checkpoint_minutes``, 0: every epoch; and on SIGTERM) lives outside the outputs and is
    removed once the outputs are in place. ``best_yaml``: the
    hyperparameter search's result (``train.architecture_from_hpo``), whose architecture and
    training values replace those of ``settings``."""
    import pandas as pd

    if best_yaml:
        settings = {**settings, **load_best(best_yaml)}

    store, index = open_store(store_npy, index_tsv)
    tr, va = read_split_rows(train_tsv, index), read_split_rows(validation_tsv, index)
    cfg = TrainConfig(**settings)
    # (the device is checked apart: robustmaps.checkpoints ignores a checkpoint of another device)
    fp = fingerprint({"settings": result_settings(settings), "fold": fold, "seed": seed, "threads": threads},
                     [store_npy, index_tsv, train_tsv, validation_tsv])
    log.info("fold %d, seed %d: %s", fold, seed, settings)
    best, history = train(store, tr.row.to_numpy(), tr.label.to_numpy(), va.row.to_numpy(), va.label.to_numpy(),
                          cfg, seed=seed, checkpoint=checkpoint, device=device, threads=threads, fingerprint=fp,
                          checkpoint_every=60 * checkpoint_minutes)
    log.info("best epoch %d: validation balanced accuracy %.3f", best["epoch"], best["balanced_accuracy"])
    hist = pd.DataFrame(history).drop(columns="stop")
    hist["best"] = hist.epoch == best["epoch"]
    names = {v: k for k, v in labels.items()}
    # serialised in memory: torch.save names the zip archive's folder after the file it writes to,
    # which would put the temporary name into the model file (and make it differ between runs)
    buffer = io.BytesIO()
    # plain types only (torch.__version__ is a str subclass): load_trained reads with weights_only
    torch.save(plain({"architecture": cfg.architecture, "in_shape": list(store.shape[1:]),
                      "normalisation": cfg.normalisation, "state_dict": best["state"],
                      "classes": [names[0], names[1]], "fold": fold, "seed": seed, "best_epoch": best["epoch"],
                      "validation_balanced_accuracy": best["balanced_accuracy"], "fingerprint": fp,
                      "torch": torch.__version__}), buffer)
    with atomic_path(model_pt) as tmp:
        Path(tmp).write_bytes(buffer.getvalue())
    write_tsv(hist, history_tsv)
    Path(checkpoint).unlink(missing_ok=True)


METRICS = ("balanced_accuracy", "auc", "sensitivity", "specificity")


METRIC_COLUMNS = ["set", "metric", "value", "ci_low", "ci_high", "n"]


def evaluate_model(model_pt, sets: dict[str, tuple[str, str, str]], predictions: dict[str, str], metrics_tsv, *,
                   n_boot: int = 1000, level: float = 0.95, seed: int = 0, batch_size: int = 16,
                   positive: str = "AD", device: str = "auto", threads: int = 1) -> None:
    """Rule entry point. ``sets``: name -> (store.npy, index.tsv, table.tsv); ``predictions``:
    name -> output TSV. Writes one predictions table per set and one tidy metrics table.
    ``positive``: the class (by name, whatever its label number) whose recall is the
    sensitivity and whose probability ranks the images for the AUC."""
    seed_everything(seed, threads)
    model, meta = load_trained(model_pt, device_for(device))
    classes = meta["classes"]
    pos = class_index(meta, positive, model_pt)
    rows = []
    for name, (store_npy, index_tsv, table_tsv) in sets.items():
        store, index = open_store(store_npy, index_tsv)
        if tuple(store.shape[1:]) != tuple(meta["in_shape"]):
            raise InputError(f"{store_npy}: images {store.shape[1:]} but {model_pt} was trained on {meta['in_shape']}")
        table = read_split_rows(table_tsv, index, allow_empty=True)
        prob = predict(model, store, table.row.to_numpy(), batch_size)
        pred = table[["participant_id", "session_id"]].copy()
        pred["diagnosis"] = index.diagnosis.to_numpy()[table.row.to_numpy()]
        pred["label"] = table.label.to_numpy()
        pred[f"proba_{classes[0]}"], pred[f"proba_{classes[1]}"] = prob[:, 0], prob[:, 1]
        pred["predicted"] = (prob[:, 1] > 0.5).astype(int)
        write_tsv(pred, predictions[name])
        is_pos = (pred.label.to_numpy() == pos).astype(int)
        point = binary_metrics(is_pos, prob[:, pos])
        ci = bootstrap_ci(is_pos, prob[:, pos], n_boot=n_boot, seed=seed, level=level)
        for m in METRICS:
            rows.append({"set": name, "metric": m, "value": point[m], "ci_low": ci[m][0], "ci_high": ci[m][1],
                         "n": len(pred)})
        log.info("%s (%d sessions): balanced accuracy %.3f [%.3f, %.3f], AUC %.3f", name, len(pred),
                 point["balanced_accuracy"], *ci["balanced_accuracy"], point["auc"])
    write_tsv(pd.DataFrame(rows, columns=METRIC_COLUMNS), metrics_tsv)


def read_metrics(metrics_tsv) -> pd.DataFrame:
    return read_tsv(metrics_tsv, METRIC_COLUMNS, what="metrics table")


def summarise_training(models: list[dict], summary_tsv, curves_png) -> None:
    """Rule entry point. ``models``: dicts with fold, seed, metrics (TSV) and history (TSV).

    The summary has one row per (fold, seed, set) with the point metrics, the balanced-accuracy
    CI, the best epoch and the number of epochs run; then per set a ``mean`` and an ``sd`` row
    across all models (the paper's results paragraph in table form)."""
    per_model, histories = [], []
    for m in models:
        met = read_metrics(m["metrics"])
        hist = read_tsv(m["history"], ["epoch", "train_loss", "validation_loss", "train_balanced_accuracy",
                                       "validation_balanced_accuracy", "best"], what="training history")
        best = hist[hist.best.astype(str).str.lower() == "true"]
        if len(best) != 1:
            raise InputError(f"{m['history']}: needs exactly one best epoch, found {len(best)}")
        wide = met.pivot(index="set", columns="metric", values="value").reset_index()
        ci = met[met.metric == "balanced_accuracy"].set_index("set")
        wide["balanced_accuracy_ci_low"] = wide.set.map(ci.ci_low)
        wide["balanced_accuracy_ci_high"] = wide.set.map(ci.ci_high)
        wide["n"] = wide.set.map(ci.n)
        wide.insert(0, "seed", str(m["seed"]))
        wide.insert(0, "fold", str(m["fold"]))
        wide["best_epoch"], wide["epochs"] = int(best.epoch.iloc[0]), len(hist)
        per_model.append(wide)
        histories.append(hist.assign(fold=m["fold"], seed=m["seed"]))
    table = pd.concat(per_model, ignore_index=True)
    order = {s: i for i, s in enumerate(dict.fromkeys(["validation", "test", *table.set]))}
    table = table.sort_values(["set", "fold", "seed"], key=lambda c: c.map(order) if c.name == "set" else c,
                              kind="stable")
    cols = ["fold", "seed", "set", *METRICS, "balanced_accuracy_ci_low", "balanced_accuracy_ci_high", "n",
            "best_epoch", "epochs"]
    stats = []
    for name, group in table.groupby("set", sort=False):
        for stat in ("mean", "sd"):
            fn = (lambda c: c.mean()) if stat == "mean" else (lambda c: c.std(ddof=1) if len(c) > 1 else np.nan)
            stats.append({"fold": stat, "seed": "all", "set": name,
                          **{k: fn(group[k].astype(float)) for k in (*METRICS, "best_epoch", "epochs")},
                          "n": group.n.iloc[0]})
    out = pd.concat([table[cols], pd.DataFrame(stats)], ignore_index=True)[cols]
    write_tsv(out, summary_tsv)
    for name, group in table.groupby("set", sort=False):
        b = group.balanced_accuracy.astype(float)
        log.info("%s: balanced accuracy %.3f +- %.3f over %d models (min %.3f)", name, b.mean(),
                 b.std(ddof=1) if len(b) > 1 else 0.0, len(b), b.min())
    learning_curves(pd.concat(histories, ignore_index=True), curves_png)
