"""Evaluation of trained models (study 2.2.3, seed 004 "evaluating a trained model").

- :func:`predict`: class probabilities of store rows, batched, on the model's device.
- :func:`evaluate_model`: predictions and metrics of one (fold, seed) model on its validation
  set, the test set and every independent cohort; each metric with a stratified bootstrap
  confidence interval over the evaluated set (the only source of variance of a trained model).
- :func:`summarise_training`: every (fold, seed) row plus mean and SD across models per set (the
  spread of the learning procedure over folds and seeds), and the learning curves.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch

from .io import InputError, read_tsv, write_tsv
from .metrics import binary_metrics, bootstrap_ci
from .preprocess import open_store
from .training import device_for, load_trained, read_split_rows, seed_everything

log = logging.getLogger(__name__)

METRICS = ("balanced_accuracy", "auc", "sensitivity", "specificity")
METRIC_COLUMNS = ["set", "metric", "value", "ci_low", "ci_high", "n"]


@torch.no_grad()
def predict(model: torch.nn.Module, store, rows, batch_size: int = 16) -> np.ndarray:
    """(N, 2) softmax probabilities of the images at ``rows`` of ``store``."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(rows), batch_size):
        x = torch.from_numpy(np.asarray(store[list(rows[i:i + batch_size])], dtype=np.float32))[:, None]
        out.append(torch.softmax(model(x.to(device)).float(), 1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 2))


def evaluate_model(model_pt, sets: dict[str, tuple[str, str, str]], predictions: dict[str, str], metrics_tsv, *,
                   n_boot: int = 1000, level: float = 0.95, seed: int = 0, batch_size: int = 16,
                   positive: str = "AD", device: str = "auto", threads: int = 1) -> None:
    """Rule entry point. ``sets``: name -> (store.npy, index.tsv, table.tsv); ``predictions``:
    name -> output TSV. Writes one predictions table per set and one tidy metrics table.
    ``positive``: the class (by name, whatever its label number) whose recall is the
    sensitivity and whose probability ranks the images for the AUC."""
    from .training import class_index

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
    from .plots import learning_curves

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
