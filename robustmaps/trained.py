"""A trained model as every stage after training uses it (models layer): the classifier wrapper
(normalisation + network), loading ``model.pt``, the one opening of a trained-model job
(:func:`open_model_job`: the model on its device, the cohort store it was trained for, the split
table's rows), the one way to read a store in batches (:func:`batches`) and prediction."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from .devices import device_for, seed_everything
from .io import InputError
from .models import build_model
from .preprocess import open_store
from .splits import read_split_rows

log = logging.getLogger(__name__)


NORMALISATIONS = ("none", "minmax", "zscore")


class Normalise(nn.Module):
    """The training normalisation as a differentiable module, per sample (tested equal to the
    MONAI transforms), so that a trained model takes raw GM maps and gradients reach them."""

    def __init__(self, mode: str = "none"):
        super().__init__()
        if mode not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {mode!r}")
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "none":
            return x
        flat = x.flatten(1)
        shape = (-1,) + (1,) * (x.dim() - 1)
        if self.mode == "minmax":
            lo, hi = flat.min(1).values.view(shape), flat.max(1).values.view(shape)
            return torch.where(hi > lo, (x - lo) / (hi - lo).clamp_min(1e-12), torch.zeros_like(x))
        mean, std = flat.mean(1).view(shape), flat.std(1, unbiased=False).view(shape)
        return torch.where(std > 0, (x - mean) / std.clamp_min(1e-12), x - mean)


class Classifier(nn.Module):
    """A trained model as downstream stages use it: raw GM map -> normalisation -> network."""

    def __init__(self, net: nn.Module, normalisation: str = "none"):
        super().__init__()
        self.norm = Normalise(normalisation)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(x))


MODEL_KEYS = ("architecture", "in_shape", "normalisation", "state_dict", "classes")


def _short_reason(exc: BaseException, limit: int = 160) -> str:
    """The gist of a loading error in one short line: torch's refusal of an unsafe pickle is a
    page long and ends by advising to allow the class, which is what must not be done here."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    line = " ".join(text.split()).split(" Please use ", 1)[0].split(" Check the documentation", 1)[0]
    line = line or type(exc).__name__
    return line if len(line) <= limit else line[:limit - 3] + "..."


def load_trained(model_pt, device: str | torch.device = "cpu") -> tuple[Classifier, dict]:
    """A trained ``model.pt`` as an eval-mode :class:`Classifier` (raw GM maps in) and its
    metadata (architecture, classes, fold, seed, best epoch ...).

    Read with ``weights_only=True``, so that a result file cannot run code (a pickle that would
    import or call anything is refused before it does). Any file that is not a model of this
    workflow (empty, text, another archive, a bare tensor, missing keys, weights that do not fit
    the architecture ...) stops here as one :class:`InputError` naming it."""
    try:
        if Path(model_pt).stat().st_size == 0:
            raise ValueError("empty file")
        meta = torch.load(model_pt, map_location="cpu", weights_only=True)
        if not isinstance(meta, dict):
            raise ValueError(f"it holds a {type(meta).__name__}, not a dict")
        missing = [k for k in MODEL_KEYS if k not in meta]
        if missing:
            raise ValueError(f"no {', '.join(missing)}")
        net = build_model(meta["architecture"], tuple(meta["in_shape"]))
        net.load_state_dict(meta.pop("state_dict"))
        model = Classifier(net, meta["normalisation"])
    except Exception as exc:  # torch.load and a foreign model's metadata fail with many types
        raise InputError(f"{model_pt}: not a trained model of this workflow ({_short_reason(exc)})") from None
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, meta


def load_model(model_pt, device: str = "auto", threads: int = 1, seed: int = 0):
    """A trained model for the stages downstream of training (masks, saliency): seeded, frozen,
    eval mode, channels-last on the chosen device -> (model, metadata)."""
    seed_everything(seed, threads)
    model, meta = load_trained(model_pt, device_for(device))
    return model.to(memory_format=torch.channels_last_3d), meta


def class_index(meta: dict, name: str, model_pt) -> int:
    """The output index of class ``name`` (a diagnosis) of a trained model."""
    if name not in meta["classes"]:
        raise InputError(f"{model_pt}: the model's classes are {meta['classes']}, not {name!r}")
    return meta["classes"].index(name)


def open_for_model(store_npy, index_tsv, meta: dict, model_pt):
    """A cohort store whose images have the shape the model was trained on -> (store, index)."""
    store, index = open_store(store_npy, index_tsv)
    if tuple(store.shape[1:]) != tuple(meta["in_shape"]):
        raise InputError(f"{store_npy}: images {tuple(store.shape[1:])} but {model_pt} was trained on "
                         f"{tuple(meta['in_shape'])}")
    return store, index


@dataclass
class ModelJob:
    """What a job downstream of training works on: the trained model (seeded, frozen, eval mode,
    channels-last on its device), its metadata, the cohort store it was trained for and the
    rows of the job's split table (``table``: None when the job names none)."""

    model_pt: str
    model: Classifier
    meta: dict
    store: object
    index: pd.DataFrame
    table: pd.DataFrame | None
    device: torch.device

    def class_index(self, name: str) -> int:
        """The output index of class ``name`` (a diagnosis); stops naming the model file."""
        return class_index(self.meta, name, self.model_pt)

    def rows_of(self, table_tsv, allow_empty: bool = False) -> pd.DataFrame:
        """Another split table's sessions, checked against this store's index."""
        return read_split_rows(table_tsv, self.index, allow_empty)


def open_model_job(model_pt, store_npy, index_tsv, table_tsv=None, *, device: str = "auto", threads: int = 1,
                   seed: int = 0) -> ModelJob:
    """The one opening of a trained-model job: the model (:func:`load_model`: seeds first), the
    store checked against the model's input shape, and ``table_tsv``'s rows (index reset)."""
    model, meta = load_model(model_pt, device, threads, seed)
    store, index = open_for_model(store_npy, index_tsv, meta, model_pt)
    table = read_split_rows(table_tsv, index).reset_index(drop=True) if table_tsv else None
    return ModelJob(str(model_pt), model, meta, store, index, table, next(model.parameters()).device)


def images(store, rows, device="cpu", channels_last: bool = False) -> torch.Tensor:
    """The images at ``rows`` of ``store`` as one (N, 1, X, Y, Z) float32 tensor on ``device``
    (channels-last 3D with ``channels_last``: the layout of the models of :func:`load_model`)."""
    x = torch.from_numpy(np.asarray(store[list(rows)], dtype=np.float32))[:, None]
    return x.to(device, memory_format=torch.channels_last_3d) if channels_last else x.to(device)


def batches(store, rows, batch_size: int, device="cpu", *, channels_last: bool = False, order=None):
    """The one way to read a store in batches: :func:`images` of ``rows`` (in ``order``, a
    permutation of their positions, when given), ``batch_size`` at a time."""
    rows = np.asarray(rows) if order is None else np.asarray(rows)[order]
    for i in range(0, len(rows), batch_size):
        yield images(store, rows[i:i + batch_size], device, channels_last)


@torch.no_grad()
def predict(model: torch.nn.Module, store, rows, batch_size: int = 16) -> np.ndarray:
    """(N, 2) softmax probabilities of the images at ``rows`` of ``store``."""
    device = next(model.parameters()).device
    out = [torch.softmax(model(x).float(), 1).cpu().numpy() for x in batches(store, rows, batch_size, device)]
    return np.concatenate(out) if out else np.zeros((0, 2))


def correct_rows(model, store, table, label: int, batch_size: int = 16) -> np.ndarray:
    """Store rows of ``table``'s sessions of class ``label`` that the model classifies correctly."""
    rows = table.row.to_numpy()[table.label.to_numpy() == label]
    if len(rows) == 0:
        return rows
    return rows[predict(model, store, rows, batch_size).argmax(1) == label]
