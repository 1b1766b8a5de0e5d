"""LOTS, layerwise origin-target synthesis (seed 002, Algorithms 1-2), batched.

Each image is moved towards a target feature vector F_t at one layer (default: the output of
the last convolutional block, the deepest feature layer) by normalised gradient steps of the Euclidean loss 1/2 ||F_t - F_s||^2, until its
distance to the target is under ``tau`` or ``iterations`` steps are done; each image of a batch
stops on its own. The map is |x_adv - x| -> min-max -> 3D Gaussian blur -> min-max.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .cam import resolve_layer

TARGETS = ("zero", "class", "mean")


def features(model: nn.Module, x: torch.Tensor, layer: str | None) -> torch.Tensor:
    """(B, F) features of ``x`` at ``layer``, flattened: a module name, ``auto`` (the output of the
    last convolutional block, as for the CAMs) or ``output`` / None (the logits)."""
    if layer in (None, "output"):
        return model(x).flatten(1)

    store = {}
    module = dict(model.named_modules())[resolve_layer(model, layer)]
    handle = module.register_forward_hook(lambda _m, _i, out: store.__setitem__("f", out))
    try:
        model(x)
    finally:
        handle.remove()
    return store["f"].flatten(1)


def lots(model: nn.Module, x: torch.Tensor, target_features: torch.Tensor, *, iterations: int = 500,
         tau: float = 0.1, alpha: float = 1 / 255, layer: str | None = None, clamp=(0.0, 1.0)):
    """Algorithm 1 on a batch. ``target_features``: (F,) or (B, F). Returns (x_adv, distance,
    steps) with the final distance and the number of steps of every image."""
    x = x.detach()
    x_adv = x.clone()
    ft = target_features.to(x.device).float()
    ft = ft.expand(len(x), -1) if ft.dim() == 1 else ft
    steps = torch.zeros(len(x), dtype=torch.long, device=x.device)
    dist = torch.full((len(x),), float("inf"), device=x.device)
    for _ in range(iterations + 1):
        x_adv.requires_grad_(True)
        fs = features(model, x_adv, layer)
        d = (ft - fs).norm(dim=1)
        dist = d.detach()
        active = dist > tau
        if not bool(active.any()) or int(steps.max()) >= iterations:
            break
        loss = 0.5 * ((ft - fs) ** 2).sum(1)
        (g,) = torch.autograd.grad(loss[active].sum(), x_adv)
        with torch.no_grad():
            scale = g.flatten(1).abs().amax(1).clamp_min(1e-30)
            step = g * (alpha / scale).view(-1, *[1] * (g.dim() - 1))
            step[~active] = 0
            x_adv = (x_adv - step).clamp(*clamp) if clamp is not None else x_adv - step
            steps += active.long()
    return x_adv.detach(), dist, steps


def minmax(maps: torch.Tensor | np.ndarray):
    """Per map (first axis), (m - min) / (max - min); a constant map becomes zeros."""
    lib = torch if isinstance(maps, torch.Tensor) else np
    flat = maps.reshape(len(maps), -1)
    lo = flat.min(1)[0] if lib is torch else flat.min(1)
    hi = flat.max(1)[0] if lib is torch else flat.max(1)
    span = (hi - lo).reshape(-1, *[1] * (maps.ndim - 1))
    lo = lo.reshape(-1, *[1] * (maps.ndim - 1))
    return lib.where(span > 0, (maps - lo) / (span + (span == 0)), maps * 0)


def lots_map(x: torch.Tensor, x_adv: torch.Tensor, sigma_voxels: float) -> torch.Tensor:
    """Algorithm 2 in 3D: |x_adv - x| -> min-max -> Gaussian blur (sigma in voxels) -> min-max."""
    from scipy.ndimage import gaussian_filter

    diff = minmax((x_adv - x).abs()[:, 0].cpu().numpy())
    if sigma_voxels > 0:
        diff = np.stack([gaussian_filter(d, sigma_voxels, mode="constant") for d in diff])
    return torch.from_numpy(minmax(diff).astype(np.float32))


def target_sources(kind: str, labels, seed: int = 0) -> dict[int, np.ndarray]:
    """Per class c of ``labels`` (the classes of the TRAINING images), the positions of the images
    whose features make F_t^c (seed 002, 4.2): one random image of class c drawn with ``seed``
    (``class``), every image of class c (``mean``); ``zero`` needs none."""
    if kind not in TARGETS:
        raise ValueError(f"lots target must be one of {TARGETS}, got {kind!r}")
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).astype(np.int64)
    if kind == "zero":
        return {}
    rng = np.random.default_rng(seed)
    out = {}
    for c in np.unique(labels):  # sorted: the draws do not depend on the table's order of classes
        pos = np.flatnonzero(labels == c)
        out[int(c)] = pos[[rng.integers(len(pos))]] if kind == "class" else pos
    return out


def target_features(kind: str, feats, labels, *, seed: int = 0):
    """F_t as a callable (targets (B,)) -> (B, F), each image's row being F_t of its target class c
    (seed 002, 4.2): zeros (``zero``), the features of ONE random training image of class c drawn
    with ``seed`` (``class``), or the mean features of the training images of class c (``mean``).

    ``labels``: the classes of the training images (the split's train.tsv); ``feats``: their (N, F)
    features, or a callable (positions) -> (n, F) features of the images at those positions, so
    that only the images :func:`target_sources` needs are run through the model (one for
    ``zero``: the feature size)."""
    get = feats if callable(feats) else (lambda pos: feats[torch.as_tensor(np.asarray(pos), dtype=torch.long)])
    sources = target_sources(kind, labels, seed)
    if kind == "zero":
        zero = torch.zeros_like(get(np.array([0]))[0])
        return lambda target: zero.expand(len(target), -1)
    if not sources:
        raise ValueError(f"lots target {kind!r}: no training image to take the target features from")
    by_class = {c: get(pos).mean(0) for c, pos in sources.items()}

    def ft(target):
        missing = sorted({int(t) for t in target} - set(by_class))
        if missing:
            raise ValueError(f"lots target {kind!r}: no training image of class(es) {missing}")
        return torch.stack([by_class[int(t)] for t in target])

    return ft
