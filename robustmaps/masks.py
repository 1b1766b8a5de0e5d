"""Meaningful-perturbation masks (study 2.3, after Fong & Vedaldi 2017), batched.

Equation (1): X'_m = m X + (1 - m) mu, with mu = 1 ("GM restored") or a per-voxel reference map.
Equation (2): m* = argmin_m  l1 ||1 - m||_b1^b1 + l2 sum_u ||grad m(u)||_b2^b2 + f(X'_m), where f is
the model's probability (or logit) of the class being masked.

- The norms are SUMS over voxels, as written in the paper (not means): ``area = sum_u (1 - m(u))^b1``
  and ``tv = sum_u sum_axes |m(u + e_axis) - m(u)|^b2`` (forward differences). Their values and
  the voxel count go into every mask's summary, so that penalties can be compared across grids.
- b1 < 1 makes (1 - m)^b1 non-differentiable at m = 1, where every mask starts (its gradient is
  infinite there): the area term counts only voxels where 1 - m exceeds ``eps`` (1e-3).
- m is a free tensor kept in [0, 1] by clamping after every Adam step (Fong & Vedaldi's choice;
  a sigmoid parametrisation would never reach 0 or 1). After optimisation, values > 0.95 are 1.
- Independent masks (session masks) are optimised as one batch: the loss is the sum of the
  per-mask losses, so each mask gets exactly its own gradient (the model is in eval mode: batch
  norm uses its running statistics), and each mask stops on its own criterion (frozen, and left
  out of the forward pass, once it stops).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)


@dataclass
class MaskSettings:
    l1: float = 1e-4
    l2: float = 1e-3
    b1: float = 0.1
    b2: float = 1.0
    lr: float = 0.1
    target: int = 1             # class whose score is pushed down (AD)
    score: str = "probability"  # or "logit"
    threshold: float = 0.95     # after optimisation, values above it are set to 1
    eps: float = 1e-3           # the area term counts voxels where 1 - m > eps


def masked(x: torch.Tensor, m: torch.Tensor, mu: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Equation (1)."""
    return m * x + (1 - m) * mu


def area_term(m: torch.Tensor, b1: float, eps: float = 1e-3) -> torch.Tensor:
    """Per mask: sum over voxels of (1 - m)^b1, counting voxels where 1 - m > eps. m: (K, 1, X, Y, Z)."""
    d = (1 - m).flatten(1)
    on = d > eps
    return torch.where(on, d.clamp_min(eps) ** b1, torch.zeros_like(d)).sum(1)


def tv_term(m: torch.Tensor, b2: float) -> torch.Tensor:
    """Per mask: sum over voxels and axes of |forward difference|^b2."""
    total = torch.zeros(m.shape[0], dtype=m.dtype, device=m.device)
    for axis in range(2, m.dim()):
        diff = torch.diff(m, dim=axis).abs()
        if b2 < 1:  # |d|^b2 has an infinite gradient at d = 0
            diff = diff.clamp_min(1e-6)
        total = total + (diff ** b2).flatten(1).sum(1)
    return total


def score_term(model, x: torch.Tensor, target: int, score: str = "probability") -> torch.Tensor:
    """Per image: the model's probability (or logit) of ``target``."""
    logits = model(x).float()
    if score == "logit":
        return logits[:, target]
    return torch.softmax(logits, 1)[:, target]


def threshold(m: np.ndarray | torch.Tensor, value: float = 0.95):
    """The paper's post-processing: mask values above ``value`` are set to 1."""
    if isinstance(m, torch.Tensor):
        return torch.where(m > value, torch.ones_like(m), m)
    return np.where(m > value, 1.0, m).astype(np.asarray(m).dtype)


@dataclass
class RelativeTolerance:
    """The study's stopping rule (2.3.3): stop once the loss has exceeded its lowest value by more
    than ``tol`` (relative) for ``patience`` consecutive epochs. Vectorised over masks."""

    n: int
    patience: int
    tol: float

    def __post_init__(self):
        self.best = np.full(self.n, np.inf)
        self.bad = np.zeros(self.n, dtype=int)
        self.stopped = np.zeros(self.n, dtype=bool)

    def step(self, loss) -> tuple[np.ndarray, np.ndarray]:
        """Record one epoch's losses; returns (improved, stopped) per mask."""
        loss = np.atleast_1d(np.asarray(loss, dtype=float))
        improved = (loss < self.best) & ~self.stopped
        self.best = np.where(improved, loss, self.best)
        worse = (loss - self.best) / np.abs(self.best) > self.tol
        self.bad = np.where(self.stopped, self.bad, np.where(worse, self.bad + 1, 0))
        self.stopped |= self.bad >= self.patience
        return improved, self.stopped.copy()


def optimise_independent(model, images: torch.Tensor, settings: MaskSettings, *, mu=1.0, max_epochs: int = 5000,
                         patience: int = 200, tol: float = 0.01, log_every: int = 0) -> tuple[torch.Tensor, list[dict]]:
    """One mask per image, optimised as a batch (session masks, 2.3.4: no validation set; the
    stopping rule watches each mask's own loss). Returns the best masks (thresholded), shape of
    ``images``, and a history (one row per epoch and mask: loss terms, active flag)."""
    device = images.device
    k = images.shape[0]
    m = torch.ones_like(images, requires_grad=True)
    opt = torch.optim.Adam([m], lr=settings.lr)
    stop = RelativeTolerance(k, patience, tol)
    best = m.detach().clone()
    history: list[dict] = []
    mu_t = mu if not isinstance(mu, torch.Tensor) else mu.to(device)
    for epoch in range(max_epochs):
        active = torch.as_tensor(~stop.stopped, device=device)
        idx = torch.nonzero(active).flatten()
        if len(idx) == 0:
            break
        opt.zero_grad(set_to_none=True)
        mk = m[idx]
        area, tv = area_term(mk, settings.b1, settings.eps), tv_term(mk, settings.b2)
        f = score_term(model, masked(images[idx], mk, mu_t), settings.target, settings.score)
        per_mask = settings.l1 * area + settings.l2 * tv + f
        per_mask.sum().backward()
        losses = np.full(k, np.nan)
        losses[idx.cpu().numpy()] = per_mask.detach().cpu().numpy()
        improved, _ = stop.step(np.where(np.isnan(losses), np.inf, losses))
        # the mask evaluated this epoch is the one kept when it is the best so far
        keep = torch.as_tensor(improved, device=device)
        best[keep] = m.detach()[keep]
        frozen = m.detach()[~active].clone()
        opt.step()
        with torch.no_grad():
            m.clamp_(0, 1)
            m[~active] = frozen
        for j, i in enumerate(idx.tolist()):
            history.append({"epoch": epoch, "mask": i, "loss": float(per_mask[j].detach()), "area": float(area[j].detach()),
                            "tv": float(tv[j].detach()), "score": float(f[j].detach())})
        if log_every and epoch % log_every == 0:
            log.info("epoch %d: %d/%d masks active, mean loss %.4g", epoch, len(idx), k, float(per_mask.mean()))
    return threshold(best, settings.threshold), history


def _batches(store, rows: np.ndarray, batch_size: int, device, order: np.ndarray | None = None):
    rows = rows if order is None else rows[order]
    for i in range(0, len(rows), batch_size):
        x = np.asarray(store[list(rows[i:i + batch_size])], dtype=np.float32)
        yield torch.from_numpy(x)[:, None].to(device)


def group_loss(model, m: torch.Tensor, store, rows: np.ndarray, settings: MaskSettings, mu=1.0,
               batch_size: int = 8) -> tuple[float, float, float, float]:
    """(loss, area, tv, mean score) of one mask over the images at ``rows``, without gradients."""
    device = m.device
    with torch.no_grad():
        area = float(area_term(m, settings.b1, settings.eps)[0])
        tv = float(tv_term(m, settings.b2)[0])
        scores = [score_term(model, masked(x, m, mu), settings.target, settings.score)
                  for x in _batches(store, rows, batch_size, device)]
        score = float(torch.cat(scores).mean()) if scores else float("nan")
    return settings.l1 * area + settings.l2 * tv + score, area, tv, score


def optimise_group(model, store, train_rows, val_rows, settings: MaskSettings, *, mu=1.0, batch_size: int = 8,
                   max_epochs: int = 150, patience: int = 5, tol: float = 0.05, seed: int = 0,
                   jump_factor: float = 0.0) -> tuple[torch.Tensor, list[dict], list[dict]]:
    """One mask for a group of images (2.3.3): Adam steps over batches of the training images
    (shuffled per epoch with ``seed``), a validation masking loss per epoch (the stopping rule
    watches it), the best mask kept and thresholded.

    Loss of a batch = l1 area + l2 tv + mean score of the batch. Second QC step (2.3.1): with
    ``jump_factor`` > 0, an image whose masked score exceeds ``jump_factor`` times the median
    score of its batch and the loss of the step jumps is flagged. Returns (mask (1, 1, X, Y, Z),
    history rows per epoch, flagged rows)."""
    device = next(model.parameters()).device
    shape = tuple(store.shape[1:]) if hasattr(store, "shape") else tuple(np.asarray(store[0]).shape)
    m = torch.ones((1, 1, *shape), device=device, requires_grad=True)
    opt = torch.optim.Adam([m], lr=settings.lr)
    stop = RelativeTolerance(1, patience, tol)
    train_rows, val_rows = np.asarray(train_rows), np.asarray(val_rows)
    watch = val_rows if len(val_rows) else train_rows
    rng = np.random.default_rng(seed)
    best = m.detach().clone()
    history, flagged = [], []
    loss0, area0, tv0, score0 = group_loss(model, m.detach(), store, watch, settings, mu, batch_size)
    history.append({"epoch": -1, "train_loss": np.nan, "validation_loss": loss0, "area": area0, "tv": tv0,
                    "validation_score": score0})
    for epoch in range(max_epochs):
        order = rng.permutation(len(train_rows))
        batch_rows = train_rows[order]
        train_losses, prev = [], None
        for b, x in enumerate(_batches(store, train_rows, batch_size, device, order)):
            opt.zero_grad(set_to_none=True)
            f = score_term(model, masked(x, m, mu), settings.target, settings.score)
            loss = settings.l1 * area_term(m, settings.b1, settings.eps)[0] + settings.l2 * tv_term(m, settings.b2)[0] \
                + f.mean()
            loss.backward()
            opt.step()
            with torch.no_grad():
                m.clamp_(0, 1)
            value = float(loss.detach())
            if jump_factor > 0 and prev is not None and value > jump_factor * prev and len(f) > 0:
                med = float(f.detach().median())
                for j in torch.nonzero(f.detach() > jump_factor * max(med, 1e-12)).flatten().tolist():
                    flagged.append({"epoch": epoch, "row": int(batch_rows[b * batch_size + j]),
                                    "score": float(f[j]), "batch_median_score": med, "loss": value,
                                    "previous_loss": prev})
            prev = value
            train_losses.append(value)
        val_loss, area, tv, score = group_loss(model, m.detach(), store, watch, settings, mu, batch_size)
        improved, stopped = stop.step(val_loss)
        if improved[0]:
            best = m.detach().clone()
        history.append({"epoch": epoch, "train_loss": float(np.mean(train_losses)), "validation_loss": val_loss,
                        "area": area, "tv": tv, "validation_score": score})
        log.info("mask epoch %d: train loss %.4g | validation loss %.4g (area %.4g, tv %.4g, score %.3g)%s",
                 epoch, history[-1]["train_loss"], val_loss, area, tv, score, " | stop" if stopped[0] else "")
        if stopped[0]:
            break
    return threshold(best, settings.threshold), history, flagged


def point_id(b1: float, b2: float, l1: float, l2: float, lr: float | None = None) -> str:
    """Readable, path-safe id of a sweep point, e.g. ``b1-0.1_b2-1_l1-1e-04_l2-1e-03`` (one
    formatting for every rule, so that ids from config and from wildcards agree)."""
    def num(v: float) -> str:
        return f"{v:.0e}" if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e3) else f"{v:g}"

    out = f"b1-{num(b1)}_b2-{num(b2)}_l1-{num(l1)}_l2-{num(l2)}"
    return out if lr is None else f"{out}_lr-{num(lr)}"


def mask_summary(mask: torch.Tensor | np.ndarray, settings: MaskSettings, *, score_before: float,
                 score_after: float) -> dict:
    """What every mask's summary records (the penalties are voxel sums: their values depend on
    the grid, hence the voxel count)."""
    m = torch.as_tensor(np.asarray(mask, dtype=np.float32)).reshape(1, 1, *np.shape(mask)[-3:])
    area = float(area_term(m, settings.b1, settings.eps)[0])
    tv = float(tv_term(m, settings.b2)[0])
    return {"voxels": int(m[0, 0].numel()), "b1": settings.b1, "b2": settings.b2, "l1": settings.l1,
            "l2": settings.l2, "lr": settings.lr, "area": area, "tv": tv,
            "area_penalty": settings.l1 * area, "tv_penalty": settings.l2 * tv,
            "coverage": float((m < settings.threshold).float().mean()), "min": float(m.min()),
            "score_before": score_before, "score_after": score_after}
