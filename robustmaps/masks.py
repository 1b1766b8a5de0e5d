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
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import warnings
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch

from .config import point_id  # noqa: F401  (sweep point ids: one formatting for config and rules)
from .io import atomic_path, read_tsv, write_tsv
from .models import SCORE_KINDS, class_score
from .training import class_index, load_model, open_for_model

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


def _batches(store, rows: np.ndarray, batch_size: int, device, order: np.ndarray | None = None):
    rows = rows if order is None else rows[order]
    for i in range(0, len(rows), batch_size):
        x = np.asarray(store[list(rows[i:i + batch_size])], dtype=np.float32)
        yield torch.from_numpy(x)[:, None].to(device, memory_format=torch.channels_last_3d)


def group_loss(model, m: torch.Tensor, store, rows: np.ndarray, settings: MaskSettings, mu=1.0,
               batch_size: int = 8) -> tuple[float, float, float, float]:
    """(loss, area, tv, mean score) of one mask over the images at ``rows``, without gradients."""
    device = m.device
    with torch.no_grad():
        area, tv = (float(t[0]) for t in penalty_terms(m, settings))
        scores = [score_term(model, masked(x, m, mu), settings.target, settings.score)
                  for x in _batches(store, rows, batch_size, device)]
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
        for b, x in enumerate(_batches(store, train_rows, batch_size, device, order)):
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


# ------------------------------------------------------------------------------- rule entries
def job_checkpoint(path, minutes: float, settings: dict, inputs, device):
    """A rule entry's :class:`~robustmaps.checkpoints.Checkpoint` at ``path`` (None: none),
    valid for exactly these settings and input files."""
    if not path:
        return None
    from .checkpoints import Checkpoint
    from .training import fingerprint

    return Checkpoint(path, fingerprint(settings, [f for f in inputs if f]), device=device,
                      every_seconds=60 * minutes)


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


def correct_rows(model, store, table, label: int, batch_size: int = 16) -> np.ndarray:
    """Store rows of ``table``'s sessions of class ``label`` that the model classifies correctly."""
    from .evaluation import predict

    rows = table.row.to_numpy()[table.label.to_numpy() == label]
    if len(rows) == 0:
        return rows
    return rows[predict(model, store, rows, batch_size).argmax(1) == label]


def load_reference(reference_nii, shape, device) -> torch.Tensor | float:
    """mu of equation (1): 1 (GM restored) without a reference map, else the map (working grid)."""
    from .io import InputError, load_nifti

    if not reference_nii:
        return 1.0
    data, _ = load_nifti(reference_nii)
    if tuple(data.shape) != tuple(shape):
        raise InputError(f"{reference_nii}: reference map {data.shape} does not match the images {tuple(shape)}")
    return torch.from_numpy(data)[None, None].to(device)


def mean_reference(store_npy, index_tsv, train_tsv, out_nii, *, reference_class: str = "CN",
                   working_grid: dict) -> None:
    """Rule entry: the mean image of a fold's training sessions of the class named
    ``reference_class`` (the mean CN map, a per-voxel mu for equation (1)). The class is chosen
    by name (the store index's diagnosis), never by its label number."""
    from .grid import Grid
    from .io import InputError, save_nifti
    from .preprocess import open_store
    from .training import read_split_rows

    store, index = open_store(store_npy, index_tsv)
    table = read_split_rows(train_tsv, index)
    rows = table.row.to_numpy()
    rows = rows[index.diagnosis.to_numpy()[rows] == reference_class]
    if len(rows) == 0:
        raise InputError(f"{train_tsv}: no training session of class {reference_class} for the reference map")
    total = np.zeros(store.shape[1:], np.float64)
    for i in range(0, len(rows), 32):
        total += np.asarray(store[list(rows[i:i + 32])], dtype=np.float64).sum(0)
    save_nifti((total / len(rows)).astype(np.float32), Grid.from_config(working_grid).affine, out_nii)
    log.info("reference: mean of %d training sessions of class %s", len(rows), reference_class)


def to_native(volumes: np.ndarray, working: dict, native: dict, fill: float = 1.0) -> np.ndarray:
    """Masks (X, Y, Z[, K]) from the working grid to the native grid (linear interpolation; outside
    a cropped working box ``fill``: 1 for a mask, unperturbed; 0 for a saliency map)."""
    import nibabel as nib
    from nilearn.image import resample_img

    from .grid import Grid

    w, n = Grid.from_config(working), Grid.from_config(native)
    if w == n:
        return volumes
    # pad one voxel by replicating the edges, so that the half-voxel rim between the outermost
    # voxel centres and the box's border interpolates the edge values (resample_img fills 0 there)
    v = np.asarray(volumes, np.float32)
    pad = [(1, 1)] * 3 + [(0, 0)] * (v.ndim - 3)
    affine = w.affine.copy()
    affine[:3, 3] -= w.voxel_size
    img = nib.Nifti1Image(np.pad(v, pad, mode="edge"), affine)
    with warnings.catch_warnings():  # a mask that is still all 0/1 is not a label image: linear is right
        warnings.filterwarnings("ignore", message="Resampling binary images")
        out = resample_img(img, target_affine=n.affine, target_shape=n.shape, interpolation="linear",
                           force_resample=True, copy_header=True, fill_value=fill)
    out = np.clip(np.asarray(out.dataobj, np.float32), 0, 1)
    # outside the working box (a crop): fill
    inside = [(a >= o - w.voxel_size / 2) & (a <= o + (k - 0.5) * w.voxel_size)
              for a, o, k in zip(n.world_axes(), w.origin, w.shape)]
    box = np.ix_(*inside)
    keep = np.zeros(n.shape, bool)
    keep[box] = True
    out[~keep] = fill
    return out


def write_volumes(volumes: np.ndarray, grids: dict, working_nii, native_nii=None, dtype=np.float32,
                  fill: float = 1.0) -> None:
    """Volumes (X, Y, Z[, K]) on the working grid and, resampled, on the native grid (unless
    ``native_nii`` is None: per-session stacks that are not kept, and every file of a run whose
    working grid is the native grid, have no native copy).

    Stacks of per-session maps use ``dtype=np.int16``: 2 bytes a voxel, like float16, which
    NIfTI-1 cannot store. nibabel picks one scale factor per file; masks and the explainers' maps
    lie in [0, 1] per volume, so the error stays below 1/65534 of a volume's peak, finer than
    float16's (tested).
    """
    from .grid import Grid
    from .io import save_nifti

    save_nifti(volumes, Grid.from_config(grids["working"]).affine, working_nii, dtype=dtype)
    if native_nii is not None:
        save_nifti(to_native(volumes, grids["working"], grids["native"], fill),
                   Grid.from_config(grids["native"]).affine, native_nii, dtype=dtype)


@torch.no_grad()
def masked_scores(model, store, rows, m: torch.Tensor, settings: MaskSettings, mu=1.0, batch_size: int = 16):
    """Per image: the target score of the images at ``rows`` masked by ``m`` (one mask, or one per row)."""
    out = []
    for i, x in enumerate(_batches(store, np.asarray(rows), batch_size, m.device)):
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


def group_mask(model_pt, store_npy, index_tsv, images_tsv, validation_tsv, out: dict, *, target: str, params: dict,
               grids: dict, reference_nii=None, excluded_tsv=None, screen: dict | None = None, device: str = "auto",
               threads: int = 1, checkpoint: str | None = None, checkpoint_minutes: float = 0.0) -> None:
    """Rule entry: one group mask (2.3.3) of one model.

    Main cohort (``validation_tsv`` given): trained over the correctly classified ``target``
    sessions of ``images_tsv`` (the fold's train.tsv) and, with ``include_validation``, of the
    validation set; the correctly classified ones of the validation set give the validation
    masking loss. Independent cohort (``validation_tsv`` None): its correctly classified target
    sessions, a seeded ``validation_fraction`` of them as the validation set.

    ``params``: the penalties (l1, l2, b1, b2, lr, score, threshold, eps) and batch_size,
    max_images, max_epochs, patience, tol, jump_factor, include_validation, validation_fraction,
    seed. ``out``: mask, native, history, summary, flagged (paths).

    Second QC step (2.3.1), cohort-wide: ``excluded_tsv`` (``cohort_exclusions``) lists the
    sessions that made some model's loss jump in the screening pass; they are removed from this
    mask's training and validation images before it is optimised. ``screen`` (the screening pass's
    files of this very model: mask, native, history, summary, flagged) makes that cheap and exact:
    when none of this model's images is excluded, optimising again would give the screening mask
    bit for bit (same images, seeds and settings), so its files are copied. The flagged table
    lists the screening pass's flags (``excluded`` true) followed by the new pass's.

    ``checkpoint``: a path outside the outputs for the optimisation's state (every
    ``checkpoint_minutes``, 0: every epoch; at once on SIGTERM), resumed by a re-run and removed
    once the outputs are written."""
    from .io import write_tsv
    from .training import read_split_rows

    model, meta = load_model(model_pt, device, threads, params["seed"])
    label = class_index(meta, target, model_pt)
    settings = settings_from(params, label)
    store, index = open_for_model(store_npy, index_tsv, meta, model_pt)
    bs = params["batch_size"]
    rows = correct_rows(model, store, read_split_rows(images_tsv, index), label, bs)
    rng = np.random.default_rng(params["seed"])
    if validation_tsv:
        val = correct_rows(model, store, read_split_rows(validation_tsv, index), label, bs)
    else:
        rows = rows[rng.permutation(len(rows))]
        n_val = int(round(params["validation_fraction"] * len(rows))) if len(rows) > 1 else 0
        val, rows = np.sort(rows[:n_val]), np.sort(rows[n_val:])
    train = np.concatenate([rows, val]) if params["include_validation"] else rows
    if params["max_images"] and len(train) > params["max_images"]:
        train = np.sort(rng.choice(train, params["max_images"], replace=False))
    removed = np.zeros(0, dtype=int)
    if excluded_tsv is not None:
        drop = excluded_rows(excluded_tsv, index)
        removed = np.intersect1d(np.concatenate([train, val]), drop)
        if screen is not None and not len(removed):
            log.info("second QC step: none of this model's %d images is excluded from the cohort (%s); the mask is "
                     "the screening pass's, copied", len(train), excluded_tsv)
            for key in ("mask", "native", "history", "summary", "flagged"):
                if key not in out:  # no native copy on the native grid
                    continue
                with atomic_path(out[key]) as tmp:
                    shutil.copyfile(screen[key], tmp)
            return
        if len(removed):
            log.info("second QC step: %d of this model's images made some model's loss jump in the cohort's screening "
                     "pass and are removed before optimising: %s", len(removed),
                     ", ".join(f"{index.participant_id.iloc[r]}/{index.session_id.iloc[r]}" for r in removed))
        train, val = np.setdiff1d(train, drop), np.setdiff1d(val, drop)
    if len(train) == 0:  # a result, not bad input: an empty (all-ones) mask, flagged in the summary
        log.warning("WARNING: %s classifies no %s session of %s correctly: nothing to mask, the mask is all ones",
                    model_pt, target, images_tsv)
    log.info("group mask for %s of %s: %d training images, %d validation images, %d voxels", target, model_pt,
             len(train), len(val), int(np.prod(store.shape[1:])))
    mu = load_reference(reference_nii, store.shape[1:], next(model.parameters()).device)

    ck = job_checkpoint(checkpoint, checkpoint_minutes, {"target": target, "params": params, "grids": grids},
                        [model_pt, store_npy, index_tsv, images_tsv, validation_tsv, reference_nii, excluded_tsv],
                        next(model.parameters()).device)
    with ck or contextlib.nullcontext():
        mask, history, flagged = optimise_group(
            model, store, train, val, settings, mu=mu, batch_size=bs,
            max_epochs=params["max_epochs"] if len(train) else 0, patience=params["patience"],
            tol=params["tol"], seed=params["seed"], jump_factor=params["jump_factor"], checkpoint=ck)
    watch = val if len(val) else train
    before = masked_scores(model, store, watch, torch.ones_like(mask), settings, mu, bs) if len(watch) else np.nan
    after = masked_scores(model, store, watch, mask, settings, mu, bs) if len(watch) else np.full(1, np.nan)
    p_before, p_after = probabilities(model, store, watch, mask, settings, mu, bs, before, after)
    hist = pd.DataFrame(history)
    run = hist[hist.epoch >= 0]  # epoch -1 is the unmasked start, never the mask kept
    best = int(run.epoch.iloc[int(np.argmin(run.validation_loss.fillna(np.inf).to_numpy()))]) if len(run) else -1
    summary = {"target": target, "n_images": len(train), "n_validation": len(val),
               **mask_summary(mask.cpu().numpy(), settings, score_before=float(np.mean(before)),
                              score_after=float(np.mean(after))),
               "max_score_after": float(np.max(after)), "probability_before": float(np.mean(p_before)),
               "probability_after": float(np.mean(p_after)), "max_probability_after": float(np.max(p_after)),
               "epochs": int(hist.epoch.max()) + 1, "best_epoch": best,
               "flagged_images": len({f["row"] for f in flagged}), "excluded_images": len(removed)}
    write_volumes(mask[0, 0].cpu().numpy(), grids, out["mask"], out.get("native"))
    write_tsv(hist, out["history"])
    write_tsv(pd.DataFrame([summary]), out["summary"])
    table = flagged_table(flagged, index)
    if screen is not None:  # the screening pass's flags, whose images this pass went without
        before = read_tsv(screen["flagged"], FLAGGED_COLUMNS, what="screening pass's flagged table")
        table = pd.concat([before.assign(excluded=True), table]) if len(table) else before.assign(excluded=True)
    write_tsv(table, out["flagged"])
    if ck is not None:
        ck.remove()
    log.info("mask: %.1f%% of voxels < %.2f, mean %s %s on masked validation images %.3g -> %.3g (probability "
             "%.3g -> %.3g)", 100 * summary["coverage"], settings.threshold, target, settings.score,
             summary["score_before"], summary["score_after"], summary["probability_before"],
             summary["probability_after"])


FLAGGED_COLUMNS = ["participant_id", "session_id", "times_flagged", "first_epoch", "max_score",
                   "batch_median_score", "max_loss_jump", "excluded"]


def excluded_rows(excluded_tsv, index: pd.DataFrame) -> np.ndarray:
    """Rows of ``index`` (a cohort's store index) whose session ``excluded_tsv`` lists."""
    drop = read_tsv(excluded_tsv, ("participant_id", "session_id"), what="second QC step's exclusion list")
    keys = set(zip(drop.participant_id.astype(str), drop.session_id.astype(str)))
    return np.flatnonzero([(p, s) in keys for p, s in zip(index.participant_id.astype(str),
                                                           index.session_id.astype(str))])


EXCLUDED_COLUMNS = ["participant_id", "session_id", "flagged_by", "models", "max_loss_jump"]


def cohort_exclusions(flagged: dict[str, str], out_tsv) -> pd.DataFrame:
    """Second QC step (2.3.1) for a whole cohort: the study removed the image that made the
    group-mask loss jump "from the data" and optimised again. ``flagged`` maps a model's label
    (``fold-0/seed-1``) to the flagged table of its screening group mask; every session any model
    flagged is listed once, with how many models (and which) flagged it, and its largest jump.
    Every group and sweep mask of the cohort is then optimised without them (``group_mask``)."""
    tables = [read_tsv(path, FLAGGED_COLUMNS, what="screening pass's flagged table").assign(model=label)
              for label, path in flagged.items()]
    table = pd.concat(tables) if tables else pd.DataFrame(columns=FLAGGED_COLUMNS + ["model"])
    if len(table):
        table = (table.groupby(["participant_id", "session_id"], sort=False)
                 .agg(flagged_by=("model", "nunique"), models=("model", lambda m: ";".join(sorted(set(m)))),
                      max_loss_jump=("max_loss_jump", "max")).reset_index()
                 .sort_values(["flagged_by", "max_loss_jump", "participant_id", "session_id"],
                              ascending=[False, False, True, True]))
    table = table.reindex(columns=EXCLUDED_COLUMNS)
    write_tsv(table, out_tsv)
    log.info("second QC step: %d session(s) made the loss jump in the screening pass of %d model(s) and are "
             "excluded from every group mask of the cohort%s", len(table), len(flagged),
             "".join(f"\n  {r.participant_id}/{r.session_id} (flagged by {r.models})" for r in table.itertuples()))
    return table


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


def session_masks(model_pt, store_npy, index_tsv, test_tsv, out: dict, *, target: str, params: dict, grids: dict,
                  reference_nii=None, device: str = "auto", threads: int = 1, checkpoint: str | None = None,
                  checkpoint_minutes: float = 0.0) -> None:
    """Rule entry: one mask per session of ``test_tsv``'s ``target`` subjects (every session, 2.3.4),
    optimised ``max_batch`` at a time as one batch; l1 and l2 multiplied by ``penalty_scale``.
    ``out``: masks (4D, working grid), native (4D), index (one row per volume), history.
    ``checkpoint``: a path outside the outputs; each batch of masks checkpoints its optimisation
    there (``<checkpoint>-<first row>.pt``) and keeps its result once done (``...-done.pt``), so
    that a re-run resumes the batch in flight and skips the finished ones; removed at the end."""
    from .io import InputError, write_tsv
    from .training import read_split_rows

    model, meta = load_model(model_pt, device, threads, params["seed"])
    label = class_index(meta, target, model_pt)
    settings = settings_from(params, label, params["penalty_scale"])
    store, index = open_for_model(store_npy, index_tsv, meta, model_pt)
    table = read_split_rows(test_tsv, index)
    table = table[table.label.to_numpy() == label].reset_index(drop=True)
    if table.empty:
        raise InputError(f"{test_tsv}: no {target} session to mask")
    dev = next(model.parameters()).device
    mu = load_reference(reference_nii, store.shape[1:], dev)
    rows = table.row.to_numpy()
    log.info("%d session masks for %s of %s (%d subjects), %d per batch, %d voxels each", len(rows), target,
             model_pt, table.participant_id.nunique(), params["max_batch"], int(np.prod(store.shape[1:])))
    # the stack is filled in place (one copy of it in memory: at the paper's ~330 AD test sessions
    # a float32 stack is 2.8 GB, and a list then np.stack held it twice)
    volumes, stats, history = None, [], []
    files = []
    for start in range(0, len(rows), params["max_batch"]):
        chunk = rows[start:start + params["max_batch"]]
        x = next(_batches(store, chunk, len(chunk), dev))
        inputs = [model_pt, store_npy, index_tsv, test_tsv, reference_nii]
        settings_key = {"target": target, "params": params, "rows": chunk.tolist()}
        ck = job_checkpoint(f"{checkpoint}-{start:05d}.pt" if checkpoint else None, checkpoint_minutes,
                            settings_key, inputs, dev)
        done = job_checkpoint(f"{checkpoint}-{start:05d}-done.pt" if checkpoint else None, 0, settings_key, inputs,
                              dev)
        files += [c for c in (ck, done) if c is not None]
        result = done.load() if done is not None else None
        if result is not None:
            masks_k, hist, st = result["masks"].to(dev), result["history"], result["stats"]
        else:
            with ck or contextlib.nullcontext():
                masks_k, hist, st = optimise_independent(
                    model, x, settings, mu=mu, max_epochs=params["max_epochs"], patience=params["patience"],
                    tol=params["tol"], log_every=max(1, params["max_epochs"] // 50),
                    what=f"session masks {start + 1}-{start + len(chunk)}/{len(rows)}", checkpoint=ck)
            if done is not None:
                done.save({"epoch": "done", "masks": masks_k.cpu(), "history": hist, "stats": st})
                ck.remove()
        before = masked_scores(model, store, chunk, torch.ones_like(masks_k), settings, mu, len(chunk))
        after = masked_scores(model, store, chunk, masks_k, settings, mu, len(chunk))
        p_before, p_after = probabilities(model, store, chunk, masks_k, settings, mu, len(chunk), before, after)
        for j in range(len(chunk)):
            m = masks_k[j, 0].cpu().numpy()
            if volumes is None:
                volumes = np.empty((*m.shape, len(rows)), dtype=m.dtype)
            volumes[..., start + j] = m
            stats.append({**st[j], **mask_summary(m, settings, score_before=float(before[j]),
                                                  score_after=float(after[j])),
                          "probability_before": float(p_before[j]), "probability_after": float(p_after[j])})
        history += [{"volume": h["mask"] + start, **h} for h in hist]
    meta_cols = table[["participant_id", "session_id", "diagnosis"]].reset_index(names="volume")
    idx = pd.concat([meta_cols, pd.DataFrame(stats)], axis=1)
    write_volumes(volumes, grids, out["masks"], out.get("native"), dtype=np.int16)
    write_tsv(idx, out["index"])
    write_tsv(pd.DataFrame(history)[["volume", "epoch", "loss", "area", "tv", "score"]], out["history"])
    for c in files:
        c.remove()
    log.info("session masks: coverage %.3f-%.3f, %s %s %.3g -> %.3g, probability %.3g -> %.3g (means)",
             idx.coverage.min(), idx.coverage.max(), target, settings.score, idx.score_before.mean(),
             idx.score_after.mean(), idx.probability_before.mean(), idx.probability_after.mean())


SWEEP_PARAMETERS = ("b1", "b2", "l1", "l2", "lr")


def sweep_series(sweep: pd.DataFrame) -> list[tuple[str, dict, pd.DataFrame]]:
    """The one-parameter series of a sweep (Tables 2-3): points that differ in exactly one of
    b1, b2, l1, l2, lr, grouped per (model, target). Returns (parameter, fixed values, rows
    sorted by the parameter) for every series of two points or more."""
    out = []
    keys = [k for k in ("target", "fold", "seed") if k in sweep]
    for param in SWEEP_PARAMETERS:
        fixed = [p for p in SWEEP_PARAMETERS if p != param]
        for values, rows in sweep.groupby(keys + fixed, sort=True):
            if rows[param].nunique() >= 2:
                out.append((param, dict(zip(keys + fixed, values)), rows.sort_values(param)))
    return out


def sweep_trend_failures(sweep: pd.DataFrame, params=("b1", "l1", "l2")) -> list[str]:
    """The study's sweep trends (3.1) on a sweep table (one row per point: b1, b2, l1, l2, lr,
    coverage), for the series along ``params``: coverage falls as l1 grows and grows with l2
    (monotone, strictly from the first point to the last), and b1 = 2, where a series has it,
    gives the densest mask."""
    fails = []
    for param, fixed, rows in sweep_series(sweep):
        if param not in params:
            continue
        cov = rows.coverage.to_numpy()
        where = f"{param} series at " + ", ".join(f"{k}={v}" for k, v in fixed.items() if k in SWEEP_PARAMETERS)
        shown = ", ".join(f"{v:g}: {c:.4f}" for v, c in zip(rows[param], cov))
        if param == "l1" and not (np.all(np.diff(cov) <= 0) and cov[0] > cov[-1]):
            fails.append(f"{where}: coverage does not fall as l1 grows ({shown})")
        if param == "l2" and not (np.all(np.diff(cov) >= 0) and cov[0] < cov[-1]):
            fails.append(f"{where}: coverage does not grow with l2 ({shown})")
        if param == "b1" and (rows.b1 == 2).any() and rows.coverage[rows.b1 == 2].iloc[0] < cov.max():
            fails.append(f"{where}: b1 = 2 is not the densest mask ({shown})")
    return fails


def summarise_masks(entries: list[dict], summaries: dict[str, list], flagged: list, group_images: list,
                    out: dict, *, threshold: float = 0.95, views: list = (), background=None) -> None:
    """Rule entry: one tidy table of every mask (group, sweep: one row each; session: one row per
    session), the second QC step's flagged images of every group mask, two figures, and a brain
    view of 1 - m of each group mask in ``views`` ([(ids: cohort, target, fold, seed; png)]) over
    the cohort's mean GM map ``background``."""
    from .io import load_nifti, read_tsv, write_tsv
    from .plots import brain_views, group_masks_figure, sweep_figure

    ids = ["kind", "cohort", "target", "fold", "seed", "point"]
    by_kind = {k: iter(v) for k, v in summaries.items()}
    tables, flags = [], []
    group_flags, group_imgs, group_ids = iter(flagged), iter(group_images), []
    for e in entries:
        path = next(by_kind[e["kind"]])
        t = read_tsv(path, ["coverage", "score_before", "score_after", "probability_after"], what="mask summary",
                     dtype={"participant_id": str, "session_id": str})
        t = t.drop(columns=[k for k in ids if k in t])
        for k in reversed(ids):
            t.insert(0, k, e[k])
        tables.append(t)
        if e["kind"] == "group":
            f = read_tsv(next(group_flags), FLAGGED_COLUMNS, what="flagged images table",
                         dtype={"participant_id": str, "session_id": str})
            flags.append(f.assign(**{k: e[k] for k in ids[1:5]}))
            group_ids.append((e, next(group_imgs)))
    table = pd.concat(tables, ignore_index=True)
    lead = ids + [c for c in ("participant_id", "session_id", "volume") if c in table]
    table = table[lead + [c for c in table if c not in lead]]
    write_tsv(table, out["summary"])
    flag_table = pd.concat(flags, ignore_index=True) if flags else pd.DataFrame(columns=FLAGGED_COLUMNS)
    cols = ["cohort", "target", "fold", "seed", *FLAGGED_COLUMNS]
    write_tsv(flag_table.reindex(columns=cols), out["flagged"])
    group_masks_figure(group_ids, out["figure"], threshold)
    if views:
        bg = load_nifti(background)[0]
        masks = {(e["cohort"], e["target"], e["fold"], e["seed"]): nii for e, nii in group_ids}
        for ids, png in views:
            mask = load_nifti(masks[(ids["cohort"], ids["target"], ids["fold"], ids["seed"])])[0]
            brain_views(1 - mask, bg, png, f"group mask, {ids['target']}, fold {ids['fold']} seed {ids['seed']}",
                        "perturbation 1 - m")
    sweep_figure(table[table.kind == "sweep"], out["sweep"])
    for kind, rows in table.groupby("kind", sort=False):
        log.info("%s masks: %d, coverage %.3f-%.3f, mean target probability after masking %.3g (max %.3g)", kind,
                 len(rows), rows.coverage.min(), rows.coverage.max(), rows.probability_after.mean(),
                 rows.probability_after.max())
    log.info("second QC step: %d image(s) flagged", flag_table[["participant_id", "session_id"]].drop_duplicates()
             .shape[0] if len(flag_table) else 0)
