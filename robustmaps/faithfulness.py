"""Faithfulness of saliency maps (seed 002, section 3.3), in 3D.

- Deletion / insertion AUC: voxels ranked by the map (highest first) are, in ``steps`` equal
  steps, replaced by a Gaussian-blurred copy of the image (deletion) or restored into the blurred
  copy (insertion); the area under the target probability curve over the fraction of voxels
  changed (trapezoid on [0, 1]). Lower deletion and higher insertion are better.
- Average Drop: max(0, Y - O) / Y; Average Increase: [O > Y]; Y = target probability of the
  image, O = of the image multiplied by its map (in [0, 1]).
- Coherency: Pearson correlation of the map of (image x map) with the map, mapped to [0, 1]
  as (r + 1) / 2.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

COLUMNS = ["deletion_auc", "insertion_auc", "average_drop", "average_increase", "coherency"]


def blurred(x: torch.Tensor, sigma_voxels: float) -> torch.Tensor:
    """A Gaussian-blurred copy of (B, 1, X, Y, Z) images (monai's separable filter)."""
    from monai.networks.layers import GaussianFilter

    if sigma_voxels <= 0:
        return torch.zeros_like(x)
    with torch.no_grad():
        return GaussianFilter(3, sigma_voxels).to(x.device)(x.contiguous())


@torch.no_grad()
def target_probability(model, x: torch.Tensor, target: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    out = [torch.softmax(model(x[i:i + batch_size]).float(), 1) for i in range(0, len(x), batch_size)]
    p = torch.cat(out)
    t = target.to(p.device).long()
    return p.gather(1, t.expand(len(p)).view(-1, 1) if t.numel() == 1 else t.view(-1, 1))[:, 0]


def ranks(saliency: torch.Tensor) -> torch.Tensor:
    """Rank of every voxel of one map (0 = most salient; ties in voxel order)."""
    flat = saliency.flatten()
    order = torch.argsort(-flat, stable=True)
    r = torch.empty_like(order)
    r[order] = torch.arange(len(order), device=order.device)
    return r.view(saliency.shape)


@torch.no_grad()
def deletion_insertion(model, x: torch.Tensor, saliency: torch.Tensor, target: int, base: torch.Tensor, *,
                       steps: int = 20, batch_size: int = 16) -> tuple[float, float, np.ndarray, np.ndarray]:
    """One image (1, 1, X, Y, Z), its map (X, Y, Z) and blurred copy -> (deletion AUC, insertion AUC,
    deletion curve, insertion curve); the curves hold ``steps + 1`` probabilities."""
    r = ranks(saliency)
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
                 blur_sigma_voxels: float = 2.0, coherency: bool = True, batch_size: int = 16) -> pd.DataFrame:
    """Every metric for every image of a batch: (B, 1, X, Y, Z) images, (B, X, Y, Z) maps in [0, 1],
    (B,) targets. ``explainer`` (x, target) -> maps recomputes maps for coherency."""
    base = blurred(x, blur_sigma_voxels)
    y = target_probability(model, x, target, batch_size)
    o = target_probability(model, x * maps[:, None], target, batch_size)
    rows = []
    coh = [np.nan] * len(x)
    if coherency:
        again = explainer(x * maps[:, None], target)
        coh = [(pearson(again[i], maps[i]) + 1) / 2 for i in range(len(x))]
    for i in range(len(x)):
        d, ins, _, _ = deletion_insertion(model, x[i:i + 1], maps[i], int(target[i]), base[i:i + 1], steps=steps,
                                          batch_size=batch_size)
        yi, oi = float(y[i]), float(o[i])
        rows.append({"deletion_auc": d, "insertion_auc": ins,
                     "average_drop": max(0.0, yi - oi) / yi if yi > 0 else 0.0,
                     "average_increase": float(oi > yi), "coherency": coh[i], "score": yi, "score_masked": oi})
    return pd.DataFrame(rows)
