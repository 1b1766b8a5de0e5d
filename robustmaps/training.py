"""Training loop of the study (2.2.3): cross-entropy, Adam, early stopping on the validation loss,
best epoch by validation balanced accuracy; deterministic and resumable.

- Data: MONAI ``CacheDataset`` over rows of the memory-mapped cohort store (float16 on disk, the
  first ``cache_size`` images kept in memory as float32), intensity normalisation as a transform.
- Determinism: every epoch re-seeds torch (``seed * 100003 + epoch``) before shuffling and
  training, so the data order and dropout masks of an epoch do not depend on what ran before: a
  resumed run replays exactly the epochs of an uninterrupted one. Deterministic algorithms on.
- Checkpoint: written atomically after every epoch (model, optimiser, early-stopping state, best
  weights, history); ``train`` resumes from it when it exists.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .io import atomic_path
from .metrics import binary_metrics
from .models import build_model

log = logging.getLogger(__name__)


@dataclass
class EarlyStopping:
    """Stop when the validation loss has stayed above its minimum for ``patience`` epochs."""

    patience: int = 5
    best: float = float("inf")
    bad_epochs: int = 0

    def step(self, loss: float) -> bool:
        """Record one epoch's validation loss; True when training should stop."""
        if loss < self.best:
            self.best, self.bad_epochs = loss, 0
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience


def seed_everything(seed: int, threads: int | None = None) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def device_for(prefer: str = "auto") -> torch.device:
    """CUDA when visible (or asked for), else CPU."""
    if prefer == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


NORMALISATIONS = ("none", "minmax", "zscore")


def make_dataset(store: np.ndarray, rows, labels, normalisation: str = "none", cache_size: int = 0):
    """MONAI CacheDataset yielding {"image": (1, X, Y, Z) float32, "label": int} for store rows."""
    from monai.data import CacheDataset
    from monai.transforms import Compose, Lambdad, NormalizeIntensityd, ScaleIntensityd

    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
    load = Lambdad("image", lambda r: torch.from_numpy(np.asarray(store[int(r)], dtype=np.float32))[None])
    steps = [load]
    if normalisation == "minmax":
        steps.append(ScaleIntensityd("image"))
    elif normalisation == "zscore":
        steps.append(NormalizeIntensityd("image"))
    data = [{"image": int(r), "label": int(y)} for r, y in zip(rows, labels)]
    return CacheDataset(data, Compose(steps), cache_num=int(cache_size), num_workers=0, progress=False)


@dataclass
class TrainConfig:
    architecture: dict = field(default_factory=lambda: {"name": "paper"})
    lr: float = 1e-4
    weight_decay: float = 1e-4
    batch_size: int = 8
    max_epochs: int = 30
    patience: int = 5
    normalisation: str = "none"
    cache_size: int = 0
    amp: bool = False


def _epoch(model, loader, device, optimizer=None, scaler=None, amp=False):
    """One pass; returns (mean loss, labels, probability of class 1)."""
    train = optimizer is not None
    model.train(train)
    losses, ys, ps = [], [], []
    lossf = nn.CrossEntropyLoss(reduction="sum")
    with torch.set_grad_enabled(train):
        for batch in loader:
            x, y = batch["image"].to(device), torch.as_tensor(batch["label"]).to(device)
            with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
                logits = model(x)
                loss = lossf(logits.float(), y)
            if train:
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
            losses.append(float(loss.detach()))
            ys.append(y.cpu().numpy())
            ps.append(torch.softmax(logits.detach().float(), 1)[:, 1].cpu().numpy())
    n = sum(len(y) for y in ys)
    return sum(losses) / max(n, 1), np.concatenate(ys), np.concatenate(ps)


def train(store: np.ndarray, train_rows, train_labels, val_rows, val_labels, cfg: TrainConfig, *,
          seed: int, checkpoint: str | Path, device: str = "auto", threads: int | None = None,
          stop_after: int | None = None, fingerprint: str = "") -> tuple[dict, list[dict]]:
    """Train one model; returns (best state dict, history rows). ``stop_after`` ends the call
    after that many epochs of this call (to simulate a killed job in tests). A checkpoint is
    resumed only if it was written with the same ``fingerprint`` (a hash of everything the
    training depends on), so a changed config never continues a stale run."""
    from monai.data import DataLoader

    seed_everything(seed, threads)
    dev = device_for(device)
    in_shape = tuple(store.shape[1:])
    model = build_model(cfg.architecture, in_shape).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if cfg.amp and dev.type == "cuda" else None
    stopper, history, best = EarlyStopping(cfg.patience), [], {"balanced_accuracy": -1.0, "epoch": -1, "state": None}
    start = 0
    checkpoint = Path(checkpoint)
    ck = torch.load(checkpoint, map_location=dev, weights_only=False) if checkpoint.exists() else None
    if ck is not None and ck.get("fingerprint") != fingerprint:
        log.info("ignoring checkpoint %s: written for another configuration", checkpoint)
        ck = None
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        stopper, history, best, start = EarlyStopping(**ck["stopper"]), ck["history"], ck["best"], ck["epoch"] + 1
        log.info("resuming from %s after epoch %d", checkpoint, ck["epoch"])
    log.info("training on %s (%s), %d train / %d validation images, in shape %s", dev,
             torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{torch.get_num_threads()} threads",
             len(train_rows), len(val_rows), in_shape)
    train_ds = make_dataset(store, train_rows, train_labels, cfg.normalisation, cfg.cache_size)
    val_ds = make_dataset(store, val_rows, val_labels, cfg.normalisation, cfg.cache_size)
    val_loader = DataLoader(val_ds, batch_size=cfg.batch_size, shuffle=False, num_workers=0)
    done = bool(history) and history[-1].get("stop", False)
    epoch = start
    for epoch in range(start, cfg.max_epochs):
        if done or (stop_after is not None and epoch - start >= stop_after):
            break
        torch.manual_seed(seed * 100003 + epoch)
        gen = torch.Generator().manual_seed(seed * 100003 + epoch)
        loader = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=True, generator=gen, num_workers=0)
        t0 = time.perf_counter()
        tr_loss, tr_y, tr_p = _epoch(model, loader, dev, opt, scaler, cfg.amp)
        va_loss, va_y, va_p = _epoch(model, val_loader, dev)
        tr_m, va_m = binary_metrics(tr_y, tr_p), binary_metrics(va_y, va_p)
        if va_m["balanced_accuracy"] > best["balanced_accuracy"]:
            best = {"balanced_accuracy": va_m["balanced_accuracy"], "epoch": epoch,
                    "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
        done = stopper.step(va_loss)
        row = {"epoch": epoch, "train_loss": tr_loss, "train_balanced_accuracy": tr_m["balanced_accuracy"],
               "validation_loss": va_loss, "validation_balanced_accuracy": va_m["balanced_accuracy"],
               "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0, "stop": done}
        history.append(row)
        log.info("epoch %d: train loss %.4f bacc %.3f | validation loss %.4f bacc %.3f | %.1f s%s", epoch,
                 tr_loss, tr_m["balanced_accuracy"], va_loss, va_m["balanced_accuracy"], row["seconds"],
                 " | early stop" if done else "")
        with atomic_path(checkpoint) as tmp:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "stopper": asdict(stopper),
                        "history": history, "best": best, "epoch": epoch, "fingerprint": fingerprint}, tmp)
    return best, history
