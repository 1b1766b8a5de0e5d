"""Faithfulness of saliency maps (seed 002, section 3.3), in 3D.

Removing information from a GM map is not neutral: zeros or a blurred copy lower GM, which is
atrophy, i.e. evidence FOR AD. The image a voxel takes once its information is removed (the
``baseline``) is therefore, by default, the masks' mu of equation (1) for the map's target:
X' = m X + (1 - m) mu (``robustmaps.masks.masked``; mu = 1 "GM restored", or the per-voxel
reference map of ``robustmaps.volumes.load_reference``). ``zero`` and ``blur`` (the seed's choices
for natural images) remain available.

- Deletion / insertion AUC: voxels ranked by the map (highest first; ties, e.g. the zeros of a
  sparse map, in a seeded random order, never in memory order) are, in ``steps`` equal steps,
  replaced by the baseline (deletion) or restored into it (insertion); the area under the target
  probability curve over the fraction of voxels changed (trapezoid on [0, 1]). Lower deletion
  and higher insertion are better.
- Average Drop: max(0, Y - O) / Y; Average Increase: [O > Y]; Y = target probability of the
  image, O = of the explanation image m X + (1 - m) baseline, m = the map in [0, 1] (with the
  ``zero`` baseline, the seed's image x map).
- Coherency: Pearson correlation of the map of the explanation image with the map, mapped to
  [0, 1] as (r + 1) / 2.
- :func:`paired_comparison`: a method against Random-CAM over (image, model) pairs: mean paired
  difference, its bootstrap CI and a sign-flip permutation p-value.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .masks import masked
from .saliency import BASELINE

COLUMNS = ["deletion_auc", "insertion_auc", "average_drop", "average_increase", "coherency"]
BASELINES = ("mask", "zero", "blur")


def blurred(x: torch.Tensor, sigma_voxels: float) -> torch.Tensor:
    """A Gaussian-blurred copy of (B, 1, X, Y, Z) images (monai's separable filter)."""
    from monai.networks.layers import GaussianFilter

    if sigma_voxels <= 0:
        return torch.zeros_like(x)
    with torch.no_grad():
        return GaussianFilter(3, sigma_voxels).to(x.device)(x.contiguous())


def _mu_image(mu, like: torch.Tensor) -> torch.Tensor:
    """mu (a number, or a map broadcastable to one image (1, 1, X, Y, Z)) as one image like ``like``."""
    m = torch.as_tensor(mu, dtype=like.dtype, device=like.device)
    return m.reshape(1, 1, *like.shape[2:]) if m.numel() == like[0].numel() else m.expand_as(like[:1])


def baseline_images(x: torch.Tensor, target: torch.Tensor, baseline: str = "mask", *, mu=1.0,
                    blur_sigma_voxels: float = 0.0) -> torch.Tensor:
    """(B, 1, X, Y, Z): what every voxel of ``x`` becomes once its information is removed.

    ``mask``: the masks' mu of equation (1) for each image's target class (``mu``: a number, a
    per-voxel map (X, Y, Z) or (1, 1, X, Y, Z), as :func:`robustmaps.volumes.load_reference` gives it,
    or a dict class -> either of those); ``zero``: 0; ``blur``: a Gaussian-blurred copy of x."""
    if baseline not in BASELINES:
        raise ValueError(f"faithfulness baseline must be one of {BASELINES}, got {baseline!r}")
    if baseline == "zero":
        return torch.zeros_like(x)
    if baseline == "blur":
        return blurred(x, blur_sigma_voxels)
    t = torch.as_tensor(target).reshape(-1)
    t = t.expand(len(x)) if t.numel() == 1 else t
    if not isinstance(mu, dict):
        return _mu_image(mu, x).expand_as(x).clone()
    missing = sorted({int(c) for c in t} - {int(c) for c in mu})
    if missing:
        raise ValueError(f"faithfulness baseline 'mask': no mu for target class(es) {missing}")
    return torch.cat([_mu_image(mu[int(c)], x) for c in t])


@torch.no_grad()
def target_probability(model, x: torch.Tensor, target: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    out = [torch.softmax(model(x[i:i + batch_size]).float(), 1) for i in range(0, len(x), batch_size)]
    p = torch.cat(out)
    t = target.to(p.device).long()
    return p.gather(1, t.expand(len(p)).view(-1, 1) if t.numel() == 1 else t.view(-1, 1))[:, 0]


def deletion_order(saliency: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Flat voxel indices of one map, most salient first; equal values in the order of a random
    permutation drawn with ``seed`` (never in memory order: the zeros of a sparse map would be
    removed front to back)."""
    flat = saliency.flatten()
    perm = torch.randperm(len(flat), generator=torch.Generator().manual_seed(int(seed))).to(flat.device)
    return perm[torch.argsort(-flat[perm], stable=True)]


def ranks(saliency: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Rank of every voxel of one map (0 = most salient; ties broken by :func:`deletion_order`)."""
    order = deletion_order(saliency, seed)
    r = torch.empty_like(order)
    r[order] = torch.arange(len(order), device=order.device)
    return r.view(saliency.shape)


def image_seed(seed: int, position: int) -> int:
    """The tie-breaking seed of the image at ``position`` of a table: the same for every method
    (the paired comparison with Random-CAM then differs in the maps only)."""
    return int(np.random.SeedSequence([int(seed), int(position)]).generate_state(1)[0])


@torch.no_grad()
def deletion_insertion(model, x: torch.Tensor, saliency: torch.Tensor, target: int, base: torch.Tensor, *,
                       steps: int = 20, batch_size: int = 16, seed: int = 0) -> tuple[float, float, np.ndarray,
                                                                                       np.ndarray]:
    """One image (1, 1, X, Y, Z), its map (X, Y, Z) and its baseline image (:func:`baseline_images`)
    -> (deletion AUC, insertion AUC, deletion curve, insertion curve); the curves hold ``steps + 1``
    probabilities. ``seed``: the order of equal map values."""
    r = ranks(saliency, seed)
    n = r.numel()
    counts = [round(n * k / steps) for k in range(steps + 1)]
    curves = {}
    for name, (first, second) in {"deletion": (base, x), "insertion": (x, base)}.items():
        probs = []
        for i in range(0, len(counts), batch_size):
            ks = torch.tensor(counts[i:i + batch_size], device=x.device).view(-1, 1, 1, 1, 1)
            changed = r[None, None] < ks  # (k, 1, X, Y, Z)
            imgs = torch.where(changed, first, second)
            probs.append(target_probability(model, imgs, torch.tensor(target), batch_size))
        curves[name] = torch.cat(probs).cpu().numpy()
    grid = np.linspace(0, 1, steps + 1)
    return (float(np.trapezoid(curves["deletion"], grid)), float(np.trapezoid(curves["insertion"], grid)),
            curves["deletion"], curves["insertion"])


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    den = float(a.norm() * b.norm())
    return float((a * b).sum()) / den if den > 0 else 0.0


def faithfulness(model, explainer, x: torch.Tensor, maps: torch.Tensor, target: torch.Tensor, *, steps: int = 20,
                 baseline: str = "mask", mu=1.0, blur_sigma_voxels: float = 2.0, coherency: bool = True,
                 batch_size: int = 16, seed: int = 0, start: int = 0) -> pd.DataFrame:
    """Every metric for every image of a batch: (B, 1, X, Y, Z) images, (B, X, Y, Z) maps in [0, 1],
    (B,) targets. ``explainer`` (x, target, positions) -> maps recomputes maps for coherency. ``baseline``,
    ``mu``, ``blur_sigma_voxels``: see :func:`baseline_images`. The order of equal map values of
    the image at ``start + i`` of its table is drawn with :func:`image_seed` (``seed``, ``start + i``)."""
    base = baseline_images(x, target, baseline, mu=mu, blur_sigma_voxels=blur_sigma_voxels)
    explained = masked(x, maps[:, None].to(x.dtype), base)  # equation (1) with the map as the mask
    y = target_probability(model, x, target, batch_size)
    o = target_probability(model, explained, target, batch_size)
    rows = []
    coh = [np.nan] * len(x)
    if coherency:
        again = explainer(explained, target, positions=range(start, start + len(x)))  # the sessions' own draws
        coh = [(pearson(again[i], maps[i]) + 1) / 2 for i in range(len(x))]
    for i in range(len(x)):
        d, ins, _, _ = deletion_insertion(model, x[i:i + 1], maps[i], int(target[i]), base[i:i + 1], steps=steps,
                                          batch_size=batch_size, seed=image_seed(seed, start + i))
        yi, oi = float(y[i]), float(o[i])
        rows.append({"deletion_auc": d, "insertion_auc": ins,
                     "average_drop": max(0.0, yi - oi) / yi if yi > 0 else 0.0,
                     "average_increase": float(oi > yi), "coherency": coh[i], "score": yi, "score_masked": oi})
    return pd.DataFrame(rows)


def paired_comparison(diff, *, permutations: int = 10000, bootstrap: int = 2000, level: float = 0.95,
                      seed: int = 0) -> dict:
    """Paired differences (method - baseline method, one per (image, model) pair) -> {n, mean, lo, hi,
    p}: their mean, its percentile bootstrap CI at ``level`` (``bootstrap`` resamples of the pairs)
    and the two-sided sign-flip permutation p-value of the mean (H0: each difference is symmetric
    about 0; exact over all 2^n sign patterns when there are at most ``permutations`` of them,
    else ``permutations`` random ones, p = (1 + #{|mean*| >= |mean|}) / (1 + permutations))."""
    d = np.asarray(diff, dtype=np.float64)
    d = d[np.isfinite(d)]
    n = len(d)
    if n == 0:
        return {"n": 0, "mean": np.nan, "lo": np.nan, "hi": np.nan, "p": np.nan}
    rng = np.random.default_rng(seed)
    mean = float(d.mean())
    boots = d[rng.integers(0, n, size=(bootstrap, n))].mean(1)
    lo, hi = np.quantile(boots, [(1 - level) / 2, 1 - (1 - level) / 2])
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))
    if n <= 20 and 2 ** n <= permutations:
        signs = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)
        p = float(np.mean(np.abs(signs @ d / n) >= abs(mean) - tol))
    else:
        hits = 0
        for k in range(0, permutations, 1000):  # blocks of 1000 sign patterns: bounded memory
            signs = rng.choice(np.array([-1.0, 1.0]), size=(min(1000, permutations - k), n))
            hits += int(np.sum(np.abs(signs @ d / n) >= abs(mean) - tol))
        p = float((1 + hits) / (1 + permutations))
    return {"n": n, "mean": mean, "lo": float(lo), "hi": float(hi), "p": p}


FAITHFULNESS_TABLE = ["method", "n_models", "deletion_auc", "deletion_auc_sd", "insertion_auc", "insertion_auc_sd",
                      "average_drop", "average_drop_sd", "average_increase", "average_increase_sd", "coherency",
                      "coherency_sd", "runtime_ms", "runtime_ms_sd", "n_pairs", "deletion_diff", "deletion_diff_lo",
                      "deletion_diff_hi", "deletion_p", "insertion_diff", "insertion_diff_lo", "insertion_diff_hi",
                      "insertion_p", "beats_random"]


PAIR_KEYS = ["fold", "seed", "participant_id", "session_id"]


COMPARISON = {"alpha": 0.05, "level": 0.95, "permutations": 10000, "bootstrap": 2000, "seed": 0}


def faithfulness_table(per_map: pd.DataFrame, comparison: dict | None = None) -> pd.DataFrame:
    """Tables 5.2-5.3 of seed 002: per method, the mean and SD over models of each model's mean
    metric, and the comparison with Random-CAM over (image, model) pairs (same session, same model;
    ``PAIR_KEYS``): for deletion and insertion AUC the mean paired difference method - Random-CAM,
    its bootstrap CI and sign-flip permutation p-value (robustmaps.faithfulness.paired_comparison).
    ``beats_random``: deletion significantly lower AND insertion significantly higher (two-sided
    p < alpha each, in the right direction; an intersection-union test, at level alpha without
    correction). ``comparison``: alpha, level, permutations, bootstrap, seed (``COMPARISON``)."""
    cmp = {**COMPARISON, **(comparison or {})}
    metrics = [*COLUMNS, "runtime_ms"]
    per_model = per_map.groupby(["method", "fold", "seed"])[metrics].mean().reset_index()
    agg = per_model.groupby("method")[metrics].agg(["mean", "std"])
    out = pd.DataFrame({"method": agg.index, "n_models": per_model.groupby("method").size().to_numpy()})
    for m in metrics:
        out[m] = agg[(m, "mean")].to_numpy()
        out[f"{m}_sd"] = agg[(m, "std")].fillna(0).to_numpy()
    for c in ["n_pairs", *FAITHFULNESS_TABLE[FAITHFULNESS_TABLE.index("deletion_diff"):-1]]:
        out[c] = np.nan
    out["beats_random"] = pd.array([pd.NA] * len(out), dtype="boolean")
    if BASELINE not in set(out.method):
        return out[FAITHFULNESS_TABLE]
    missing = [k for k in PAIR_KEYS if k not in per_map.columns]
    if missing:
        raise ValueError(f"faithfulness table: per-map rows lack {missing}, needed to pair maps with Random-CAM's")
    keyed = per_map.assign(**{k: per_map[k].astype(str) for k in PAIR_KEYS})
    base = keyed[keyed.method == BASELINE].set_index(PAIR_KEYS)[["deletion_auc", "insertion_auc"]]
    for i, method in zip(out.index, out.method):
        if method == BASELINE:
            continue
        own = keyed[keyed.method == method].set_index(PAIR_KEYS)[["deletion_auc", "insertion_auc"]]
        pairs = own.join(base, how="inner", rsuffix="_random")
        res = {}
        for metric, name in (("deletion_auc", "deletion"), ("insertion_auc", "insertion")):
            r = paired_comparison(pairs[metric] - pairs[f"{metric}_random"], permutations=cmp["permutations"],
                                  bootstrap=cmp["bootstrap"], level=cmp["level"], seed=cmp["seed"])
            res[name] = r
            out.loc[i, [f"{name}_diff", f"{name}_diff_lo", f"{name}_diff_hi", f"{name}_p"]] = \
                [r["mean"], r["lo"], r["hi"], r["p"]]
        out.loc[i, "n_pairs"] = res["deletion"]["n"]
        out.loc[i, "beats_random"] = bool(res["deletion"]["n"] > 0
                                          and res["deletion"]["mean"] < 0 and res["deletion"]["p"] < cmp["alpha"]
                                          and res["insertion"]["mean"] > 0 and res["insertion"]["p"] < cmp["alpha"])
    return out[FAITHFULNESS_TABLE]
