"""Training loop of the study (2.2.3): cross-entropy, Adam, early stopping on the validation loss,
best epoch by validation balanced accuracy; deterministic and resumable.

- Data: MONAI ``CacheDataset`` over rows of the cohort store (float16 on disk, read a row at a
  time; the first ``cache_size`` images kept in memory as float32), intensity normalisation and
  optional augmentation as transforms.
- Determinism: every epoch re-seeds torch (``seed * 100003 + epoch``) before shuffling and
  training, so the data order and dropout masks of an epoch do not depend on what ran before: a
  resumed run replays exactly the epochs of an uninterrupted one. Deterministic algorithms on.
- Checkpoint: written atomically after every epoch (model, optimiser, early-stopping state, best
  weights, history); ``train`` resumes from it when its fingerprint (settings + inputs) matches.
  The checkpoint's path is the one file the loop touches (a stated exception to "only
  robustmaps.jobs reads and writes files": the job hands it over, the loop saves and resumes it).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoints import Terminated, device_description, plain  # noqa: F401  (plain: training.plain)
from .config import RESOURCES
from .devices import device_for, seed_everything
from .io import atomic_path
from .metrics import binary_metrics
from .models import build_model
from .trained import NORMALISATIONS, _short_reason

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


class _LoadRow:
    """Transform: store row number -> (1, X, Y, Z) float32 tensor (picklable, unlike a lambda)."""

    def __init__(self, store):
        self.store = store

    def __call__(self, row):
        return torch.from_numpy(np.asarray(self.store[int(row)], dtype=np.float32))[None]


def augmentations(augmentation: dict | None) -> list:
    """MONAI random transforms from ``train.augmentation`` (none when every value is 0)."""
    from monai.transforms import RandAffined, RandGaussianNoised, RandScaleIntensityd

    aug = augmentation or {}
    steps = []
    if aug.get("translate_voxels", 0):
        t = float(aug["translate_voxels"])
        steps.append(RandAffined("image", prob=1.0, translate_range=(t, t, t), padding_mode="zeros",
                                 mode="bilinear"))
    if aug.get("intensity_scale", 0):
        steps.append(RandScaleIntensityd("image", factors=float(aug["intensity_scale"]), prob=1.0))
    if aug.get("noise_std", 0):
        steps.append(RandGaussianNoised("image", prob=1.0, mean=0.0, std=float(aug["noise_std"])))
    return steps


def make_dataset(store, rows, labels, normalisation: str = "none", cache_size: int = 0,
                 augmentation: dict | None = None):
    """MONAI CacheDataset yielding {"image": (1, X, Y, Z) float32, "label": int} for store rows.

    ``store`` is anything indexable by row (a :class:`~robustmaps.preprocess.StoreReader`, an
    array). Loading and normalisation are cached for the first ``cache_size`` items; random
    augmentations run after the cache, on every draw."""
    from monai.data import CacheDataset
    from monai.transforms import Compose, Lambdad, NormalizeIntensityd, ScaleIntensityd

    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
    steps = [Lambdad("image", _LoadRow(store))]
    if normalisation == "minmax":
        steps.append(ScaleIntensityd("image"))
    elif normalisation == "zscore":
        steps.append(NormalizeIntensityd("image"))
    steps += augmentations(augmentation)
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
    min_epochs: int = 0
    normalisation: str = "none"
    cache_size: int = 0
    amp: bool = False
    augmentation: dict = field(default_factory=dict)
    workers: int = 0


def _epoch(model, loader, device, optimizer=None, scaler=None, amp=False):
    """One pass; returns (mean loss, labels, probability of class 1)."""
    train = optimizer is not None
    model.train(train)
    losses, ys, ps = [], [], []
    lossf = nn.CrossEntropyLoss(reduction="sum")
    with torch.set_grad_enabled(train):
        for batch in loader:
            x = batch["image"]
            x = (x.as_tensor() if hasattr(x, "as_tensor") else x).to(
                device, non_blocking=True, memory_format=torch.channels_last_3d)
            y = torch.as_tensor(batch["label"]).to(device, non_blocking=True)
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


def _load_checkpoint(checkpoint: Path, dev: torch.device) -> dict | None:
    """A training checkpoint, or None (start from scratch, logged) for a file that cannot be
    loaded with ``weights_only=True``: a checkpoint only saves time, so a foreign or unsafe file
    in its place is no reason to stop, and is never unpickled with code."""
    try:
        ck = torch.load(checkpoint, map_location=dev, weights_only=True)
    except Exception as exc:  # torch.load raises many types (UnpicklingError, RuntimeError, EOFError ...)
        log.warning("ignoring checkpoint %s: not a checkpoint of this workflow (%s)", checkpoint, _short_reason(exc))
        return None
    if not isinstance(ck, dict):
        log.warning("ignoring checkpoint %s: not a checkpoint of this workflow (holds a %s)", checkpoint,
                    type(ck).__name__)
        return None
    return ck


def _cpu_copy(obj):
    """``obj`` (a state dict, possibly nested) with every tensor cloned to the CPU: a snapshot that
    later training steps do not change."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return obj


@contextlib.contextmanager
def sigterm_deferred():
    """SIGTERM held back while the block runs and delivered when it ends (main thread only): an
    epoch's state is recorded and reported as one step, so that a search trial's checkpoint
    never holds an epoch its parent was not told about (the re-run continues the reports)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def on_sigterm(save):
    """While the block runs, SIGTERM calls ``save()`` at once and ends the process with
    :class:`Terminated` (the job layer's callback: the loop only says what its state is). Outside
    the main thread, where Python cannot take signals, nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        # a second SIGTERM (Slurm signals every process of the job, and a search worker passes its
        # own on to its trial's process) must not cut the save short: ignored; SIGKILL still ends it
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        save()
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def train(store, train_rows, train_labels, val_rows, val_labels, cfg: TrainConfig, *,
          seed: int, checkpoint: str | Path, device: str = "auto", threads: int | None = None,
          stop_after: int | None = None, fingerprint: str = "", on_epoch=None,
          checkpoint_every: float = 0.0) -> tuple[dict, list[dict]]:
    """Train one model; returns (best state dict, history rows). ``stop_after`` ends the call
    after that many epochs of this call (to simulate a killed job in tests). ``on_epoch(row)`` is
    called with each epoch's history row (the hyperparameter search reports to its pruner). A checkpoint is
    resumed only if it was written with the same ``fingerprint`` (a hash of everything the
    training depends on), so a changed config never continues a stale run, and on the same kind
    of device with the same torch version (another GPU model or torch may compute other numbers).

    Checkpoints (one file, replaced atomically: model, optimiser, AMP scaler, stopping rule,
    history, best epoch) are written when ``checkpoint_every`` seconds have passed since the
    last one (0: after every epoch), after the last epoch, and at once on SIGTERM, which then
    ends the process (:class:`Terminated`). Every epoch reseeds from (seed, epoch), so resuming
    from any epoch gives the weights of an uninterrupted run."""
    from monai.data import DataLoader

    seed_everything(seed, threads)
    dev = device_for(device)
    in_shape = tuple(store.shape[1:])
    # channels-last 3D: the layout oneDNN (CPU) and cuDNN convolve fastest (about 1.3x on CPU)
    model = build_model(cfg.architecture, in_shape).to(dev, memory_format=torch.channels_last_3d)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if cfg.amp and dev.type == "cuda" else None
    stopper, history, best = EarlyStopping(cfg.patience), [], {"balanced_accuracy": -1.0, "epoch": -1, "state": None}
    start = 0
    checkpoint = Path(checkpoint)
    here = {"device": device_description(dev), "torch": str(torch.__version__)}
    ck = _load_checkpoint(checkpoint, dev) if checkpoint.exists() else None
    if ck is not None and ck.get("fingerprint") != fingerprint:
        log.info("ignoring checkpoint %s: written for another configuration", checkpoint)
        ck = None
    if ck is not None and {k: ck.get(k) for k in here} != here:
        log.info("ignoring checkpoint %s: written on %s with torch %s, this job runs on %s with torch %s", checkpoint,
                 ck.get("device"), ck.get("torch"), here["device"], here["torch"])
        ck = None
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        if scaler is not None and ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        stopper, history, best, start = EarlyStopping(**ck["stopper"]), ck["history"], ck["best"], ck["epoch"] + 1
        log.info("resuming from %s after epoch %d", checkpoint, ck["epoch"])
    log.info("training on %s (%s), %d train / %d validation images, in shape %s", dev,
             torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{torch.get_num_threads()} threads",
             len(train_rows), len(val_rows), in_shape)
    train_ds = make_dataset(store, train_rows, train_labels, cfg.normalisation, cfg.cache_size, cfg.augmentation)
    val_ds = make_dataset(store, val_rows, val_labels, cfg.normalisation, cfg.cache_size)
    loader_kw = {"num_workers": cfg.workers, "pin_memory": dev.type == "cuda",
                 "persistent_workers": False}
    val_loader = DataLoader(val_ds, batch_size=cfg.batch_size, shuffle=False, **loader_kw)
    done = bool(history) and history[-1].get("stop", False)
    state = {"snapshot": None, "saved": True, "at": time.monotonic()}

    def snapshot(epoch):  # the state after ``epoch``, copied: what a checkpoint holds
        state["snapshot"] = _cpu_copy({
            "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else {}, "stopper": plain(asdict(stopper)),
            "history": plain(history), "best": best, "epoch": epoch, "fingerprint": fingerprint, **here})
        state["saved"] = False

    def save():
        if state["saved"] or state["snapshot"] is None:
            return
        with atomic_path(checkpoint) as tmp:
            torch.save(plain(state["snapshot"]), tmp)
        state["saved"], state["at"] = True, time.monotonic()
        log.info("checkpoint after epoch %d: %s", state["snapshot"]["epoch"], checkpoint)

    def on_term():
        if not state["saved"]:
            save()
        log.warning("SIGTERM: the state after epoch %s is in %s; exiting (a re-run resumes from it)",
                    state["snapshot"]["epoch"] if state["snapshot"] else "-", checkpoint)

    with on_sigterm(on_term):
        for epoch in range(start, cfg.max_epochs):
            if done or (stop_after is not None and epoch - start >= stop_after):
                break
            torch.manual_seed(seed * 100003 + epoch)
            gen = torch.Generator().manual_seed(seed * 100003 + epoch)
            loader = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=True, generator=gen, **loader_kw)
            t0 = time.perf_counter()
            tr_loss, tr_y, tr_p = _epoch(model, loader, dev, opt, scaler, cfg.amp)
            va_loss, va_y, va_p = _epoch(model, val_loader, dev)
            tr_m, va_m = binary_metrics(tr_y, tr_p), binary_metrics(va_y, va_p)
            # best validation balanced accuracy; on ties the lower validation loss (a tie with an
            # untrained epoch whose probabilities all sit near 0.5 would otherwise keep that epoch)
            if (va_m["balanced_accuracy"], -va_loss) > (best["balanced_accuracy"], -best.get("loss", np.inf)):
                best = {"balanced_accuracy": va_m["balanced_accuracy"], "loss": va_loss, "epoch": epoch,
                        "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
            # the stopping rule counts from epoch 0, but stops no run before min_epochs (a run whose
            # validation loss rises while it starts to learn would otherwise stop before it learns)
            done = stopper.step(va_loss) and epoch + 1 >= cfg.min_epochs
            row = {"epoch": epoch, "train_loss": tr_loss, "train_balanced_accuracy": tr_m["balanced_accuracy"],
                   "validation_loss": va_loss, "validation_balanced_accuracy": va_m["balanced_accuracy"],
                   "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0, "stop": done}
            history.append(row)
            log.info("epoch %d: train loss %.4f bacc %.3f | validation loss %.4f bacc %.3f | %.1f s%s", epoch,
                     tr_loss, tr_m["balanced_accuracy"], va_loss, va_m["balanced_accuracy"], row["seconds"],
                     " | early stop" if done else "")
            with sigterm_deferred():  # a checkpoint never holds an epoch whose report a SIGTERM cut off
                snapshot(epoch)
                if checkpoint_every <= 0 or time.monotonic() - state["at"] >= checkpoint_every:
                    save()
                if on_epoch is not None:
                    on_epoch(row)
        save()  # the last epoch's state (a killed job's next call finds the run complete)
    return best, history


def result_settings(settings: dict) -> dict:
    """``settings`` without the pure resources (cache_size, workers: robustmaps.config.RESOURCES):
    a checkpoint stays valid when only they change."""
    return {k: v for k, v in settings.items() if k not in RESOURCES["train"]}


