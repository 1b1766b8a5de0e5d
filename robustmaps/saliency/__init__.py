"""Saliency maps of a trained classifier, one module per family (see each module):

- ``cam``: Grad-CAM, Grad-CAM++ (monai), Layer-CAM, HiRes-CAM, Random-CAM (the chance baseline)
- ``gradients``: vanilla gradient, SmoothGrad, occlusion sensitivity (monai)
- ``lots``: layerwise origin-target synthesis (seed 002)
- ``actmax``: activation maximisation (seed 001), a per-class method (rule ``actmax``)
- ``sobol``: Sobol indices of regional GM factors (seed 001, SALib; rule ``sobol``)

:class:`Explainer` gives every per-image method one signature, ``explainer(x, target) -> maps``:
(B, 1, X, Y, Z) images and (B,) target classes in, (B, X, Y, Z) maps in [0, 1] (min-max per
map) out, on the input (working) grid. The random methods (SmoothGrad's noise, Random-CAM's
weights) draw per session, from (``seed``, the session's position in its table): a map does not
depend on the batch it was computed in, so the batch size is not a results setting for them.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from ..config import CAM_METHODS
from ..settings import Saliency
from ..trained import images
from . import gradients
from .cam import CAMs, resolve_layer
from .lots import lots, lots_map, minmax

log = logging.getLogger(__name__)

METHODS = ("gradcam", "gradcampp", "layercam", "hirescam", "randomcam", "vanilla", "smoothgrad", "occlusion",
           "lots")
BASELINE = "randomcam"


class Explainer:
    """One method with its settings, bound to a model. ``settings``: the method's saliency
    settings (:class:`robustmaps.settings.Saliency`: layer, seed and the method's own section);
    ``voxel_size``: mm (LOTS blur); ``lots_target``: F_t of LOTS, a callable (targets) -> (B, F)
    (see :func:`lots.target_features`)."""

    def __init__(self, model, method: str, settings: Saliency, *, voxel_size: float = 1.0, lots_target=None):
        if method not in METHODS:
            raise ValueError(f"unknown saliency method {method!r}; known: {', '.join(METHODS)}")
        if not isinstance(settings, Saliency):
            raise TypeError(f"settings: a robustmaps.settings.Saliency (Saliency.of(params)), not "
                            f"{type(settings).__name__}")
        self.model, self.method, self.settings = model, method, settings
        self.voxel_size, self.lots_target = voxel_size, lots_target
        self.own = settings.section(method) if method in ("smoothgrad", "occlusion", "lots") else None
        self.cams = CAMs(model, settings.layer) if method in CAM_METHODS else None
        self.seen = 0  # images explained so far: the positions of calls that give none

    @property
    def layer(self) -> str:
        if self.cams is not None:
            return self.cams.layer
        if self.method == "lots":
            layer = self.own.layer or "output"
            return layer if layer == "output" else resolve_layer(self.model, layer)
        return "input"

    def seeds(self, positions, n: int, stream: int) -> list[int]:
        """One seed per image from (``seed``, its position in its table, ``stream``: one per method
        family); positions default to the order of the calls (0, 1, ... over all calls)."""
        import numpy as np

        if positions is None:
            positions = range(self.seen, self.seen + n)
            self.seen += n
        positions = [int(q) for q in positions]
        if len(positions) != n:
            raise ValueError(f"{n} images but {len(positions)} positions")
        seed = int(self.settings.seed)
        return [int(np.random.SeedSequence([seed, q, stream]).generate_state(1)[0]) for q in positions]

    def raw(self, x: torch.Tensor, target: torch.Tensor, positions=None) -> torch.Tensor:
        """The method's map before normalisation. ``positions``: the images' positions in their
        table (the per-session draws of the random methods; default: the order of the calls)."""
        m, own = self.method, self.own
        if m == "gradcam":
            return self.cams.grad_cam(x, target)
        if m == "gradcampp":
            return self.cams.grad_cam_pp(x, target)
        if m == "layercam":
            return self.cams.layer_cam(x, target)
        if m == "hirescam":
            return self.cams.hires_cam(x, target)
        if m == "randomcam":
            return self.cams.random_cam(x, target, self.seeds(positions, len(x), stream=1))
        if m == "vanilla":
            return gradients.vanilla_gradient(self.model, x, target)
        if m == "smoothgrad":
            return gradients.smoothgrad(self.model, x, target, n_samples=own.n_samples,
                                        stdev_spread=own.stdev_spread, seeds=self.seeds(positions, len(x), stream=2))
        if m == "occlusion":
            return gradients.occlusion(self.model, x, target, patch=own.patch, stride=own.stride, mode=own.mode,
                                       batch_size=self.settings.batch_size * 4)
        x_adv, _, _ = lots(self.model, x, self.lots_target(target), iterations=own.iterations, tau=own.tau,
                           alpha=own.alpha, layer=own.layer)
        return lots_map(x, x_adv, own.sigma_mm / self.voxel_size).to(x.device)

    def __call__(self, x: torch.Tensor, target: torch.Tensor, positions=None) -> torch.Tensor:
        return minmax(self.raw(x, target, positions).detach().float())

    def explain_rows(self, store, rows: np.ndarray, targets: np.ndarray, model_name: str = "the model"
                     ) -> tuple[np.ndarray, list[float]]:
        """The maps (N, X, Y, Z) of the images at store ``rows`` (their positions 0 .. N-1 in
        that order) for ``targets``, ``batch_size`` at a time on the model's device, and each
        map's share of its batch's time (ms). The stack is filled in place: one copy in memory.
        ``model_name``: the model's file, named when a map is not finite."""
        dev = next(self.model.parameters()).device
        bs = self.settings.batch_size
        volumes, runtimes = None, []
        for i in range(0, len(rows), bs):
            x = images(store, rows[i:i + bs], dev, channels_last=True)
            t = torch.as_tensor(targets[i:i + bs], device=dev)
            start = time.perf_counter()
            m = self(x, t, positions=range(i, i + len(x)))
            if dev.type == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
            m = m.cpu().numpy()
            if volumes is None:
                volumes = np.empty((len(rows), *m.shape[1:]), dtype=m.dtype)
            volumes[i:i + len(m)] = m
            runtimes += [1000 * elapsed / len(x)] * len(x)
            log.info("%s: %d/%d maps, %.0f ms per map", self.method, min(i + bs, len(rows)), len(rows), runtimes[-1])
        if not np.isfinite(volumes).all():
            raise FloatingPointError(f"{self.method}: non-finite values in the maps of {model_name}")
        return volumes, runtimes


def group_members(labels: np.ndarray, predicted: np.ndarray, label: int) -> np.ndarray:
    """Which maps a group map averages: the correctly classified sessions of class ``label``; all
    its sessions when the model classifies none of them correctly (said in the log)."""
    chosen = (labels == label) & (predicted == label)
    if not chosen.any():
        log.warning("no correctly classified session of class %d: the group map is the mean over all of them", label)
        chosen = labels == label
    return chosen
