"""Meaningful-perturbation masks (study 2.3, after Fong & Vedaldi 2017), batched.

Equation (1): X'_m = m X + (1 - m) mu, with mu = 1 ("GM restored") or a per-voxel reference map.
Equation (2): m* = argmin_m  l1 ||1 - m||_b1^b1 + l2 sum_u ||grad m(u)||_b2^b2 + f(X'_m), where f is
the model's score of the class being masked (``models.class_score``): its probability (the study)
or its log-odds (``score: log_odds``: the target's logit minus the logsumexp of the others; it does
not saturate, and it is negative once the class has flipped, so losses can have either sign).

- Norms (``norm``): ``sum`` (default) sums over voxels, as eq. (2) is written:
  ``area = sum_u (1 - m(u))^b1`` and ``tv = sum_u sum_axes |m(u + e_axis) - m(u)|^b2`` (forward
  differences); ``mean`` divides the area by the number of voxels and the TV by the number of
  difference terms, as the public implementations of Fong & Vedaldi average over pixels. The
  choice decides what l1 and l2 mean. At 1.5 mm (121 x 145 x 121 = 2,122,945 voxels, 6,319,104
  forward differences) a closed cube of side s voxels set to 0 in a mask of ones has, with
  b2 = 1, tv = 6 s^2 (one unit step per boundary face) and, with any b1, area = s^3. With sums
  and the study's l2 = 0.01, s = 5 (7.5 mm) costs l2 tv = 1.5, more than the largest drop a
  probability can make (1), and a hippocampus-sized region (~1,200 voxels, s ~ 10.6) about 6.7;
  only regions of < 100 boundary faces (s <= 4) pay less than the score can gain (session
  masks, x100: a single voxel set to 0 already costs 6). With means the same cube costs
  l2 tv = 2.4e-7 and l1 area = 5.9e-9: the penalties barely count. Area, TV, their penalties,
  the norm and the voxel count go into every mask's summary, so that masks compare across grids.
- b1 < 1 makes (1 - m)^b1 non-differentiable at m = 1, where every mask starts (its gradient is
  infinite there): the area term counts only voxels where 1 - m exceeds ``eps`` (1e-3).
- m is a free tensor kept in [0, 1] by clamping after every Adam step (Fong & Vedaldi's choice;
  a sigmoid parametrisation would never reach 0 or 1). After optimisation, values > 0.95 are 1.
- "The loss of the mask was evaluated at the end of each epoch" (2.3.5): epoch e's loss is the
  loss of the mask after its e-th update, and the mask kept is the lowest-loss one of those. The
  initial all-ones mask has no epoch and is never kept (with huge penalties it would win: its
  penalties are 0). Independent masks evaluate the mask after update e in the forward pass that
  computes update e + 1's gradient (no extra pass), and one last pass without gradients.
- Independent masks (session masks) are optimised as one batch: the loss is the sum of the
  per-mask losses, so each mask gets exactly its own gradient (the model is in eval mode: batch
  norm uses its running statistics), and each mask stops on its own criterion (frozen, and left
  out of the forward pass, once it stops).
- The stopping rule and the second QC step compare a loss with a reference (the lowest loss, the
  previous step's) by ``relative_change`` = (a - ref) / max(|ref|, LOSS_FLOOR): the study's
  relative difference for positive losses, and still meaningful for log-odds losses, which are
  negative once the class flips and cross 0 on the way (there a ratio a / ref changes its sense
  and a division by |ref| blows up). Scaling by |ref| rather than max(|a|, |ref|) keeps the
  study's rule exact for positive losses.
- A method takes tensors and settings and returns tensors; it opens no file. The one stated
  exception: the job hands the optimisers a ``checkpoint`` (robustmaps.checkpoints.Checkpoint)
  that they save their state to and resume from, so that a killed job continues its mask.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch

from .models import SCORE_KINDS, class_score
from .trained import batches, correct_rows

log = logging.getLogger(__name__)

NORMS = ("sum", "mean")
# Below this magnitude a loss counts as 0 in relative comparisons: float32 sums of terms of order 1
# do not resolve differences much finer, and near 0 a relative difference means nothing.
LOSS_FLOOR = 1e-6


@dataclass
class MaskSettings:
    l1: float = 1e-4
    l2: float = 1e-3
    b1: float = 0.1
    b2: float = 1.0
    lr: float = 0.1
    target: int = 1             # class whose score is pushed down (AD)
    score: str = "probability"  # or "log_odds" (models.class_score)
    threshold: float = 0.95     # after optimisation, values above it are set to 1
    eps: float = 1e-3           # the area term counts voxels where 1 - m > eps
    norm: str = "sum"           # or "mean": the penalties per voxel (module docstring)

    def __post_init__(self):  # a misspelt name would otherwise fail deep in a long run
        if self.score not in SCORE_KINDS:
            raise ValueError(f"mask score must be one of {', '.join(SCORE_KINDS)}, got {self.score!r}")
        if self.norm not in NORMS:
            raise ValueError(f"mask norm must be one of {', '.join(NORMS)}, got {self.norm!r}")


def masked(x: torch.Tensor, m: torch.Tensor, mu: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Equation (1)."""
    return m * x + (1 - m) * mu


def area_term(m: torch.Tensor, b1: float, eps: float = 1e-3, norm: str = "sum") -> torch.Tensor:
    """Per mask: sum over voxels of (1 - m)^b1, counting voxels where 1 - m > eps (``norm`` mean:
    divided by the number of voxels). m: (K, 1, X, Y, Z)."""
    d = (1 - m).flatten(1)
    on = d > eps
    total = torch.where(on, d.clamp_min(eps) ** b1, torch.zeros_like(d)).sum(1)
    return total / d.shape[1] if norm == "mean" else total


def tv_term(m: torch.Tensor, b2: float, norm: str = "sum") -> torch.Tensor:
    """Per mask: sum over voxels and axes of |forward difference|^b2 (``norm`` mean: divided by
    the number of differences, sum over axes of (n_axis - 1) x the other sizes)."""
    total = torch.zeros(m.shape[0], dtype=m.dtype, device=m.device)
    count = 0
    for axis in range(2, m.dim()):
        diff = torch.diff(m, dim=axis).abs()
        if b2 < 1:  # |d|^b2 has an infinite gradient at d = 0
            diff = diff.clamp_min(1e-6)
        total = total + (diff ** b2).flatten(1).sum(1)
        count += diff[0].numel()
    return total / max(count, 1) if norm == "mean" else total


def penalty_terms(m: torch.Tensor, settings: MaskSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Per mask: (area, tv) with the settings' exponents and norm."""
    return area_term(m, settings.b1, settings.eps, settings.norm), tv_term(m, settings.b2, settings.norm)


def score_term(model, x: torch.Tensor, target: int, score: str = "probability") -> torch.Tensor:
    """Per image: the model's score of ``target`` (``models.class_score``: probability or log_odds)."""
    return class_score(model(x).float(), target, score)


def relative_change(value, reference, floor: float = LOSS_FLOOR):
    """(value - reference) / max(|reference|, floor), elementwise: how much ``value`` exceeds
    ``reference``, relative to it. For positive references it is the study's relative
    difference; unlike a division by the reference it keeps its sign for negative references
    (log-odds losses), and the floor keeps it finite at and across 0."""
    value, reference = np.asarray(value, dtype=float), np.asarray(reference, dtype=float)
    with np.errstate(invalid="ignore"):  # inf - inf (masks that have stopped, or not started): nan
        return (value - reference) / np.maximum(np.abs(reference), floor)


def threshold(m: np.ndarray | torch.Tensor, value: float = 0.95):
    """The paper's post-processing: mask values above ``value`` are set to 1."""
    if isinstance(m, torch.Tensor):
        return torch.where(m > value, torch.ones_like(m), m)
    return np.where(m > value, 1.0, m).astype(np.asarray(m).dtype)


@dataclass
class RelativeTolerance:
    """The study's stopping rule (2.3.3): stop once the loss has exceeded its lowest value by more
    than ``tol`` (relative: ``relative_change`` against the lowest value, whose magnitude is
    floored at ``floor``, so negative losses and losses at or across 0 are compared too) for
    ``patience`` consecutive epochs. Vectorised over masks."""

    n: int
    patience: int
    tol: float
    floor: float = LOSS_FLOOR

    def __post_init__(self):
        self.best = np.full(self.n, np.inf)
        self.bad = np.zeros(self.n, dtype=int)
        self.stopped = np.zeros(self.n, dtype=bool)

    def step(self, loss) -> tuple[np.ndarray, np.ndarray]:
        """Record one epoch's losses; returns (improved, stopped) per mask."""
        loss = np.atleast_1d(np.asarray(loss, dtype=float))
        improved = (loss < self.best) & ~self.stopped
        self.best = np.where(improved, loss, self.best)
        with np.errstate(invalid="ignore"):  # nan (inf - inf) compares False: not worse
            worse = relative_change(loss, self.best, self.floor) > self.tol
        self.bad = np.where(self.stopped, self.bad, np.where(worse, self.bad + 1, 0))
        self.stopped |= self.bad >= self.patience
        return improved, self.stopped.copy()

    def state(self) -> dict:
        """What a checkpoint keeps of the rule (``restore`` takes it back)."""
        return {"best": self.best, "bad": self.bad, "stopped": self.stopped}

    def restore(self, state: dict) -> None:
        self.best, self.bad, self.stopped = (np.asarray(state[key]) for key in ("best", "bad", "stopped"))


def optimise_independent(model, images: torch.Tensor, settings: MaskSettings, *, mu=1.0, max_epochs: int = 5000,
                         patience: int = 200, tol: float = 0.01, log_every: int = 0,
                         what: str = "masks", checkpoint=None) -> tuple[torch.Tensor, list[dict], list[dict]]:
    """One mask per image, optimised as a batch (session masks, 2.3.4: no validation set; the
    stopping rule watches each mask's own loss). Returns the best masks (thresholded), shape of
    ``images``; a history (one row per epoch and active mask: loss terms of the mask after that
    epoch's update); and per mask the number of epochs (updates) it ran and its best epoch (-1
    only when it ran none: the all-ones mask is returned then).

    Pass e + 1's forward pass scores the mask after update e (epoch e) and gives update e + 1's
    gradient; a mask that stops on epoch e's loss takes no update e + 1. One last pass, without
    gradients, scores the masks after update ``max_epochs - 1``.

    ``checkpoint`` (a :class:`robustmaps.checkpoints.Checkpoint`, given by the job): the state
    after each update (masks, Adam, stopping rule, best masks and epochs, history) is offered to
    it, and a saved state is resumed to the same bytes as an uninterrupted run (on CPU)."""
    device = images.device
    k = images.shape[0]
    m = torch.ones_like(images, requires_grad=True)
    opt = torch.optim.Adam([m], lr=settings.lr)
    stop = RelativeTolerance(k, patience, tol)
    best = m.detach().clone()
    best_epoch = np.full(k, -1)
    epochs = np.zeros(k, dtype=int)
    history: list[dict] = []
    mu_t = mu if not isinstance(mu, torch.Tensor) else mu.to(device)
    first = 0
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:
        with torch.no_grad():
            m.copy_(saved["masks"].to(device))
        opt.load_state_dict(saved["optimizer"])
        stop.restore(saved["stopper"])
        best = saved["best"].to(device)
        best_epoch, epochs = np.asarray(saved["best_epoch"]), np.asarray(saved["epochs"])
        history, first = saved["history"], saved["epoch"] + 1
    for step in range(first, max_epochs + 1 if max_epochs > 0 else 0):
        idx = torch.nonzero(torch.as_tensor(~stop.stopped, device=device)).flatten()
        if len(idx) == 0:
            break
        idx_np = idx.cpu().numpy()
        last = step == max_epochs
        opt.zero_grad(set_to_none=True)
        with torch.set_grad_enabled(not last):
            mk = m[idx]
            area, tv = penalty_terms(mk, settings)
            f = score_term(model, masked(images[idx], mk, mu_t), settings.target, settings.score)
            per_mask = settings.l1 * area + settings.l2 * tv + f
        if step > 0:  # the loss of the masks after update step - 1: epoch step - 1
            epoch = step - 1
            losses = np.full(k, np.inf)
            losses[idx_np] = per_mask.detach().cpu().numpy()
            improved, _ = stop.step(losses)
            keep = torch.as_tensor(improved, device=device)
            best[keep] = m.detach()[keep]
            best_epoch[improved] = epoch
            terms = torch.stack([per_mask, area, tv, f]).detach().cpu().numpy()
            for j, i in enumerate(idx_np.tolist()):
                history.append({"epoch": epoch, "mask": i, "loss": terms[0, j], "area": terms[1, j],
                                "tv": terms[2, j], "score": terms[3, j]})
            if log_every and (epoch % log_every == 0 or epoch == max_epochs - 1):
                log.info("%s epoch %d: %d/%d active, loss mean %.4g (area %.4g, tv %.4g, score %.3g)", what, epoch,
                         len(idx), k, terms[0].mean(), terms[1].mean(), terms[2].mean(), terms[3].mean())
        if last:
            break
        # update step: the masks still running after this evaluation, each on its own loss
        going = ~stop.stopped
        if not going.any():
            break
        go = torch.as_tensor(going[idx_np], device=device)
        per_mask[go].sum().backward()
        held = torch.as_tensor(~going, device=device)
        frozen = m.detach()[held].clone()
        opt.step()
        with torch.no_grad():
            m.clamp_(0, 1)
            m[held] = frozen
        epochs[going] += 1
        if checkpoint is not None:
            checkpoint.step(lambda: {
                "epoch": step, "masks": m.detach().cpu(), "optimizer": opt.state_dict(), "best": best.cpu(),
                "stopper": stop.state(),
                "best_epoch": best_epoch, "epochs": epochs, "history": history})
    stats = [{"epochs": int(epochs[i]), "best_epoch": int(best_epoch[i]), "stopped_early": bool(stop.stopped[i])}
             for i in range(k)]
    return threshold(best, settings.threshold), history, stats


def group_loss(model, m: torch.Tensor, store, rows: np.ndarray, settings: MaskSettings, mu=1.0,
               batch_size: int = 8) -> tuple[float, float, float, float]:
    """(loss, area, tv, mean score) of one mask over the images at ``rows``, without gradients."""
    device = m.device
    with torch.no_grad():
        area, tv = (float(t[0]) for t in penalty_terms(m, settings))
        scores = [score_term(model, masked(x, m, mu), settings.target, settings.score)
                  for x in batches(store, rows, batch_size, device, channels_last=True)]
        score = float(torch.cat(scores).mean()) if scores else float("nan")
    return settings.l1 * area + settings.l2 * tv + score, area, tv, score


def optimise_group(model, store, train_rows, val_rows, settings: MaskSettings, *, mu=1.0, batch_size: int = 8,
                   max_epochs: int = 150, patience: int = 5, tol: float = 0.05, seed: int = 0,
                   jump_factor: float = 0.0, checkpoint=None) -> tuple[torch.Tensor, list[dict], list[dict]]:
    """One mask for a group of images (2.3.3): Adam steps over batches of the training images
    (shuffled per epoch with ``seed``), a validation masking loss per epoch (the stopping rule
    watches it), the best mask kept and thresholded.

    Loss of a batch = l1 area + l2 tv + mean score of the batch. Epoch e's validation loss is the
    loss of the mask after epoch e's updates; the row of epoch -1 records the unmasked start,
    which is never kept (module docstring).

    Second QC step (2.3.1): with ``jump_factor`` > 0, when the data term of the loss (the batch's
    mean masked score; the penalties change smoothly from step to step) jumps from the previous
    step's by a ``relative_change`` above ``jump_factor - 1`` (for positive scores: to more than
    ``jump_factor`` times it; log-odds are negative once the class flips, where a ratio would
    mean nothing), the images of the batch whose masked score stands as far above the batch's
    median, and that the mask leaves classified as the target (probability > 0.5, log-odds > 0),
    are flagged. Returns (mask (1, 1, X, Y, Z), history rows per epoch, flagged rows).

    ``checkpoint`` (a :class:`robustmaps.checkpoints.Checkpoint`, given by the job): the state
    at the end of each epoch (mask, Adam, stopping rule, shuffling generator, best mask, history,
    flags) is offered to it, and a saved state is resumed: the result is the same bytes as an
    uninterrupted run's (on CPU)."""
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
    flipped = 0.5 if settings.score == "probability" else 0.0  # above: still classified as the target
    start = 0
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:
        with torch.no_grad():
            m.copy_(saved["mask"].to(device))
        opt.load_state_dict(saved["optimizer"])
        stop.restore(saved["stopper"])
        rng.bit_generator.state = saved["rng"]
        best = saved["best"].to(device)
        history, flagged, start = saved["history"], saved["flagged"], saved["epoch"] + 1
    else:
        loss0, area0, tv0, score0 = group_loss(model, m.detach(), store, watch, settings, mu, batch_size)
        history.append({"epoch": -1, "train_loss": np.nan, "validation_loss": loss0, "area": area0, "tv": tv0,
                        "validation_score": score0})
    for epoch in range(start, max_epochs):
        order = rng.permutation(len(train_rows))
        batch_rows = train_rows[order]
        train_losses, prev = [], None
        for b, x in enumerate(batches(store, train_rows, batch_size, device, channels_last=True, order=order)):
            opt.zero_grad(set_to_none=True)
            f = score_term(model, masked(x, m, mu), settings.target, settings.score)
            area, tv = penalty_terms(m, settings)
            loss = settings.l1 * area[0] + settings.l2 * tv[0] + f.mean()
            loss.backward()
            opt.step()
            with torch.no_grad():
                m.clamp_(0, 1)
            value, data = float(loss.detach()), float(f.detach().mean())
            if jump_factor > 0 and prev is not None and relative_change(data, prev) > jump_factor - 1:
                fb = f.detach().cpu().numpy()
                med = float(f.detach().median())  # torch's: the lower middle value of an even batch
                still = (relative_change(fb, med) > jump_factor - 1) & (fb > flipped)
                for j in np.flatnonzero(still).tolist():
                    flagged.append({"epoch": epoch, "row": int(batch_rows[b * batch_size + j]),
                                    "score": float(f[j].detach()), "batch_median_score": med, "loss": data,
                                    "previous_loss": prev})
            prev = data
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
        if checkpoint is not None:
            checkpoint.step(lambda: {
                "epoch": epoch, "mask": m.detach().cpu(), "optimizer": opt.state_dict(), "best": best.cpu(),
                "stopper": stop.state(),
                "rng": rng.bit_generator.state, "history": history, "flagged": flagged})
    return threshold(best, settings.threshold), history, flagged


def mask_summary(mask: torch.Tensor | np.ndarray, settings: MaskSettings, *, score_before: float,
                 score_after: float) -> dict:
    """What every mask's summary records: area and tv in the settings' norm (sums over voxels, or
    means), so that the penalties are l1 area and l2 tv; with sums their values depend on the
    grid, hence the norm and the voxel count."""
    m = torch.as_tensor(np.asarray(mask, dtype=np.float32)).reshape(1, 1, *np.shape(mask)[-3:])
    area, tv = (float(t[0]) for t in penalty_terms(m, settings))
    return {"voxels": int(m[0, 0].numel()), "norm": settings.norm, "score": settings.score, "b1": settings.b1,
            "b2": settings.b2, "l1": settings.l1, "l2": settings.l2, "lr": settings.lr, "area": area, "tv": tv,
            "area_penalty": settings.l1 * area, "tv_penalty": settings.l2 * tv,
            "coverage": float((m < settings.threshold).float().mean()), "min": float(m.min()),
            "score_before": score_before, "score_after": score_after}


def group_images(model, store, table: pd.DataFrame, validation: pd.DataFrame | None, label: int, *,
                 batch_size: int, seed: int, validation_fraction: float, include_validation: bool,
                 max_images: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The store rows a group mask (2.3.3) learns from and is validated on: the correctly
    classified ``label`` sessions of ``table`` (a fold's train.tsv rows) and, with
    ``include_validation``, of ``validation`` (the validation set's rows), whose correctly
    classified sessions give the validation loss. Without ``validation`` (an independent cohort),
    a seeded ``validation_fraction`` of ``table``'s correctly classified sessions is held out. At
    most ``max_images`` training images (a seeded sample). Returns (train, validation) rows."""
    rows = correct_rows(model, store, table, label, batch_size)
    rng = np.random.default_rng(seed)
    if validation is not None:
        val = correct_rows(model, store, validation, label, batch_size)
    else:
        rows = rows[rng.permutation(len(rows))]
        n_val = int(round(validation_fraction * len(rows))) if len(rows) > 1 else 0
        val, rows = np.sort(rows[:n_val]), np.sort(rows[n_val:])
    train = np.concatenate([rows, val]) if include_validation else rows
    if max_images and len(train) > max_images:
        train = np.sort(rng.choice(train, max_images, replace=False))
    return train, val


def group_outcome(model, store, train, val, mask: torch.Tensor, settings: MaskSettings, mu, batch_size: int,
                  history: list[dict]) -> tuple[pd.DataFrame, dict]:
    """A group mask's history table and summary: its penalties (:func:`mask_summary`), the mean
    and largest target score and probability of the validation images (the training images when
    there are none) without and with the mask, the epochs run and the best epoch (the lowest
    validation loss; epoch -1, the unmasked start, is never kept)."""
    watch = val if len(val) else train
    before = masked_scores(model, store, watch, torch.ones_like(mask), settings, mu, batch_size) if len(watch) \
        else np.nan
    after = masked_scores(model, store, watch, mask, settings, mu, batch_size) if len(watch) else np.full(1, np.nan)
    p_before, p_after = probabilities(model, store, watch, mask, settings, mu, batch_size, before, after)
    hist = pd.DataFrame(history)
    run = hist[hist.epoch >= 0]
    best = int(run.epoch.iloc[int(np.argmin(run.validation_loss.fillna(np.inf).to_numpy()))]) if len(run) else -1
    summary = {"n_images": len(train), "n_validation": len(val),
               **mask_summary(mask.cpu().numpy(), settings, score_before=float(np.mean(before)),
                              score_after=float(np.mean(after))),
               "max_score_after": float(np.max(after)), "probability_before": float(np.mean(p_before)),
               "probability_after": float(np.mean(p_after)), "max_probability_after": float(np.max(p_after)),
               "epochs": int(hist.epoch.max()) + 1, "best_epoch": best}
    return hist, summary


def session_outcome(model, store, rows, masks: torch.Tensor, settings: MaskSettings, mu, stats: list[dict]
                    ) -> list[dict]:
    """One summary row per session mask (``masks``: (N, 1, X, Y, Z), one per image at store
    ``rows``; ``stats``: the optimiser's per-mask record): its penalties (:func:`mask_summary`)
    and its image's target score and probability without and with it."""
    before = masked_scores(model, store, rows, torch.ones_like(masks), settings, mu, len(rows))
    after = masked_scores(model, store, rows, masks, settings, mu, len(rows))
    p_before, p_after = probabilities(model, store, rows, masks, settings, mu, len(rows), before, after)
    return [{**stats[j], **mask_summary(masks[j, 0].cpu().numpy(), settings, score_before=float(before[j]),
                                        score_after=float(after[j])),
             "probability_before": float(p_before[j]), "probability_after": float(p_after[j])}
            for j in range(len(rows))]


# Every entry loads a trained model (frozen, eval mode, channels-last), selects its images from
# the split tables, optimises, and writes NIfTI masks on the working grid (the store's, where the
# atlas was checked) and on the native grid (for display), plus history and summary tables.

def settings_from(params: dict, target: int, scale: float = 1.0) -> MaskSettings:
    """MaskSettings from the config's ``masks`` values; ``scale`` multiplies l1 and l2 (session
    masks: x100, study 2.3.4). ``norm`` may be absent (params of rules that predate it): sums,
    as eq. (2) is written. ``score`` must be one of ``models.SCORE_KINDS`` (MaskSettings checks)."""
    return MaskSettings(l1=params["l1"] * scale, l2=params["l2"] * scale, b1=params["b1"], b2=params["b2"],
                        lr=params["lr"], target=target, score=params["score"], threshold=params["threshold"],
                        eps=params["eps"], norm=params.get("norm") or "sum")


@torch.no_grad()
def masked_scores(model, store, rows, m: torch.Tensor, settings: MaskSettings, mu=1.0, batch_size: int = 16):
    """Per image: the target score of the images at ``rows`` masked by ``m`` (one mask, or one per row)."""
    out = []
    for i, x in enumerate(batches(store, rows, batch_size, m.device, channels_last=True)):
        mk = m if m.shape[0] == 1 else m[i * batch_size:i * batch_size + len(x)]
        out.append(score_term(model, masked(x, mk, mu), settings.target, settings.score).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def probabilities(model, store, rows, m: torch.Tensor, settings: MaskSettings, mu, batch_size: int, before,
                  after):
    """The target's probability without and with the mask(s) ``m``: ``before`` and ``after``
    themselves when the optimised score is the probability, else one more pass each (the score
    may be the log-odds, but summaries and checks speak probabilities)."""
    if settings.score == "probability" or not len(rows):
        return before, after
    prob = replace(settings, score="probability")
    return (masked_scores(model, store, rows, torch.ones_like(m), prob, mu, batch_size),
            masked_scores(model, store, rows, m, prob, mu, batch_size))


FLAGGED_COLUMNS = ["participant_id", "session_id", "times_flagged", "first_epoch", "max_score",
                   "batch_median_score", "max_loss_jump", "excluded"]


EXCLUDED_COLUMNS = ["participant_id", "session_id", "flagged_by", "models", "max_loss_jump"]


def flagged_table(events: list[dict], index: pd.DataFrame) -> pd.DataFrame:
    """Second QC step (2.3.1): one row per image that made the group-mask loss jump, with how
    often and how high its masked score stood above its batch's median. The jump is
    1 + ``relative_change`` (loss against the previous step's): the ratio of the two for positive
    losses, and still ordered (larger = a bigger rise) for log-odds, which may be negative."""
    if not events:
        return pd.DataFrame(columns=FLAGGED_COLUMNS)
    ev = pd.DataFrame(events)
    ev["jump"] = 1 + relative_change(ev["loss"].to_numpy(), ev["previous_loss"].to_numpy())
    ev["excluded"] = ev["excluded"].fillna(False).astype(bool) if "excluded" in ev else False
    g = ev.groupby("row").agg(times_flagged=("epoch", "size"), first_epoch=("epoch", "min"),
                              max_score=("score", "max"), batch_median_score=("batch_median_score", "median"),
                              max_loss_jump=("jump", "max"), excluded=("excluded", "any")).reset_index()
    g["participant_id"] = index.participant_id.to_numpy()[g.row.to_numpy()]
    g["session_id"] = index.session_id.to_numpy()[g.row.to_numpy()]
    return g.sort_values(["times_flagged", "max_score"], ascending=False)[FLAGGED_COLUMNS]


