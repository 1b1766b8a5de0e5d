"""Classification metrics and their precision (seed 004, "evaluating a trained model").

The point estimates are those of scikit-learn; the bootstrap resamples the evaluated set (the
only source of variance once a model is trained) to give a percentile 95% confidence interval.
"""

from __future__ import annotations

import numpy as np


def binary_metrics(y_true, prob_pos, threshold: float = 0.5) -> dict[str, float]:
    """Balanced accuracy, AUC, sensitivity (recall of class 1), specificity (recall of class 0).

    The predicted label is the argmax of the two class probabilities (prob_pos > 0.5), as in the
    study. AUC is NaN when the set holds one class only.
    """
    from sklearn import metrics as skm  # here: a mask or saliency job imports training, not sklearn

    y = np.asarray(y_true, dtype=int)
    p = np.asarray(prob_pos, dtype=float)
    pred = (p > threshold).astype(int)
    out = {"balanced_accuracy": float(skm.balanced_accuracy_score(y, pred)) if len(np.unique(y)) > 1
           else float((pred == y).mean())}
    out["auc"] = float(skm.roc_auc_score(y, p)) if len(np.unique(y)) > 1 else float("nan")
    tp, fn = np.sum((pred == 1) & (y == 1)), np.sum((pred == 0) & (y == 1))
    tn, fp = np.sum((pred == 0) & (y == 0)), np.sum((pred == 1) & (y == 0))
    out["sensitivity"] = float(tp / (tp + fn)) if tp + fn else float("nan")
    out["specificity"] = float(tn / (tn + fp)) if tn + fp else float("nan")
    return out


def _fast_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """:func:`binary_metrics` for a set holding both classes, in plain numpy (AUC by the
    Mann-Whitney rank formula, ties averaged, as scikit-learn): used for bootstrap draws."""
    from scipy.stats import rankdata

    pos = y == 1
    pred = p > 0.5
    sens = float(np.mean(pred[pos]))
    spec = float(np.mean(~pred[~pos]))
    n1, n0 = int(pos.sum()), int((~pos).sum())
    auc = (rankdata(p)[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)
    return {"balanced_accuracy": (sens + spec) / 2, "auc": float(auc), "sensitivity": sens, "specificity": spec}


def bootstrap_ci(y_true, prob_pos, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap CI of every metric of :func:`binary_metrics`, resampling subjects
    with replacement, stratified by class (each resample keeps the class counts)."""
    y = np.asarray(y_true, dtype=int)
    p = np.asarray(prob_pos, dtype=float)
    if len(np.unique(y)) < 2:
        nan = (float("nan"), float("nan"))
        return {k: nan for k in ("balanced_accuracy", "auc", "sensitivity", "specificity")}
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)]
    draws = {k: [] for k in ("balanced_accuracy", "auc", "sensitivity", "specificity")}
    for _ in range(n_boot):
        idx = np.concatenate([rng.choice(g, g.size, replace=True) for g in groups])
        for k, v in _fast_metrics(y[idx], p[idx]).items():
            draws[k].append(v)
    alpha = (1 - level) / 2
    return {k: (float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha))) for k, v in draws.items()}
