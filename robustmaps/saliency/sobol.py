"""Sobol global sensitivity of a classifier to regional gray matter (seed 001, SALib).

Factors: one multiplicative GM factor per atlas ROI (uniform on ``bounds``; voxels outside every
ROI keep their value). Model output Y(z): the mean, over a fixed set of images, of the target
class's probability (or log-odds) of the images with every ROI r scaled by z_r. Saltelli/Sobol
sampling (``SALib.sample.sobol``, N base samples, N (D + 2) evaluations, N (2D + 2) with second
order), ``SALib.analyze.sobol`` for S1 and ST with bootstrap confidence intervals, and a
convergence table over the sample's prefixes (N/2^k base samples are a valid Sobol design).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch

from ..models import SCORE_KINDS, class_score

log = logging.getLogger(__name__)
OUTPUTS = SCORE_KINDS  # the target's probability or log-odds: the same names as masks.score


def problem(names: list[str], bounds) -> dict:
    return {"num_vars": len(names), "names": list(names), "bounds": [list(map(float, bounds))] * len(names)}


def roi_lookup(atlas: np.ndarray, label_ids: list[int]) -> torch.Tensor:
    """Atlas labels -> factor positions: 0 outside the listed ROIs, r + 1 in ROI ``label_ids[r]``."""
    lut = np.zeros(int(max(atlas.max(), max(label_ids))) + 1, np.int64)
    lut[np.asarray(label_ids, np.int64)] = np.arange(1, len(label_ids) + 1)
    return torch.from_numpy(lut[np.asarray(atlas, np.int64)])


@torch.no_grad()
def evaluate(model, images: torch.Tensor, positions: torch.Tensor, factors: np.ndarray, target: int,
             output: str = "probability", batch_size: int = 64) -> np.ndarray:
    """Y for every row of ``factors`` (S, D): the mean over ``images`` (K, 1, X, Y, Z) of the target's
    probability (or log-odds) with ROI r scaled by factor r. Batches of ``batch_size`` images."""
    if output not in OUTPUTS:
        raise ValueError(f"sobol output must be one of {OUTPUTS}, got {output!r}")
    dev = images.device
    pos = positions.to(dev)
    f = torch.from_numpy(np.asarray(factors, np.float32)).to(dev)
    per = max(1, batch_size // len(images))  # factor rows per forward pass
    out = np.empty(len(f))
    for i in range(0, len(f), per):
        lut = torch.cat([torch.ones(len(f[i:i + per]), 1, device=dev), f[i:i + per]], 1)  # 0: outside
        scale = lut[:, pos]  # (s, X, Y, Z)
        x = (scale[:, None, None] * images[None]).flatten(0, 1)  # (s * K, 1, X, Y, Z)
        y = class_score(model(x).float(), target, output)
        out[i:i + len(lut)] = y.view(len(lut), len(images)).mean(1).cpu().numpy()
    return out


def analyse(names, bounds, y: np.ndarray, n: int, *, second_order: bool, resamples: int, conf_level: float,
            seed: int) -> tuple[pd.DataFrame, dict]:
    """SALib's S1 and ST of ``y`` from a design with ``n`` base samples -> (tidy table, SALib result)."""
    from SALib.analyze import sobol as sobol_analyze

    res = sobol_analyze.analyze(problem(names, bounds), y, calc_second_order=second_order,
                                num_resamples=resamples, conf_level=conf_level, seed=seed)
    table = pd.DataFrame({"roi": names, "S1": res["S1"], "S1_conf": res["S1_conf"], "ST": res["ST"],
                          "ST_conf": res["ST_conf"]})
    table.insert(0, "n", n)
    return table, res


def sobol_analysis(model, images: torch.Tensor, positions: torch.Tensor, names: list[str], *, target: int,
                   n: int, bounds=(0.5, 1.5), output: str = "probability", second_order: bool = False,
                   resamples: int = 100, conf_level: float = 0.95, seed: int = 0, batch_size: int = 64,
                   convergence_min: int = 16) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Sobol indices of the model's target output to the ROI factors.

    Returns (indices at N, convergence over N = convergence_min, 2 convergence_min, ..., N, and
    S2 as a long table (empty unless ``second_order``))."""
    from SALib.sample import sobol as sobol_sample

    if n < 2 or n & (n - 1):
        raise ValueError(f"sobol n must be a power of 2 (Sobol sequence balance), got {n}")
    d = len(names)
    design = sobol_sample.sample(problem(names, bounds), n, calc_second_order=second_order, seed=seed)
    per_base = len(design) // n
    log.info("sobol: %d ROI factors, N = %d -> %d model outputs over %d images (%d forward passes)", d, n,
             len(design), len(images), len(design) * len(images))
    y = np.empty(len(design))
    chunk = max(per_base, (4096 // per_base) * per_base)
    for i in range(0, len(design), chunk):
        y[i:i + chunk] = evaluate(model, images, positions, design[i:i + chunk], target, output, batch_size)
        log.info("sobol: %d/%d outputs, running mean %.4f", min(i + chunk, len(design)), len(design),
                 float(y[:i + chunk].mean()))
    options = {"second_order": second_order, "resamples": resamples, "conf_level": conf_level, "seed": seed}
    conv, k = [], min(convergence_min, n)
    while k < n:
        conv.append(analyse(names, bounds, y[:k * per_base], k, **options)[0])
        k *= 2
    indices, res = analyse(names, bounds, y, n, **options)
    conv.append(indices)
    s2 = pd.DataFrame(columns=["roi_a", "roi_b", "S2", "S2_conf"])
    if second_order:
        ia, ib = np.triu_indices(d, 1)
        s2 = pd.DataFrame({"roi_a": np.asarray(names)[ia], "roi_b": np.asarray(names)[ib],
                           "S2": res["S2"][ia, ib], "S2_conf": res["S2_conf"][ia, ib]})
    return indices, pd.concat(conv, ignore_index=True), s2
