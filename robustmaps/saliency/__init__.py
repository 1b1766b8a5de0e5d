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

import torch

from ..config import CAM_METHODS
from . import gradients
from .cam import CAMs, resolve_layer
from .lots import lots, lots_map, minmax

METHODS = ("gradcam", "gradcampp", "layercam", "hirescam", "randomcam", "vanilla", "smoothgrad", "occlusion",
           "lots")
BASELINE = "randomcam"


class Explainer:
    """One method with its settings, bound to a model. ``params``: the saliency config section
    (layer, seed, smoothgrad, occlusion, lots ...); ``voxel_size``: mm (LOTS blur);
    ``lots_target``: F_t of LOTS, a callable (targets) -> (B, F) (see :func:`lots.target_features`)."""

    def __init__(self, model, method: str, params: dict, *, voxel_size: float = 1.0, lots_target=None):
        if method not in METHODS:
            raise ValueError(f"unknown saliency method {method!r}; known: {', '.join(METHODS)}")
        self.model, self.method, self.params = model, method, params
        self.voxel_size, self.lots_target = voxel_size, lots_target
        self.cams = None
        if method in CAM_METHODS:

            self.cams = CAMs(model, params.get("layer", "auto"))
        self.seen = 0  # images explained so far: the positions of calls that give none

    @property
    def layer(self) -> str:
        if self.cams is not None:
            return self.cams.layer
        if self.method == "lots":

            layer = self.params["lots"].get("layer") or "output"
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
        seed = int(self.params.get("seed", 0))
        return [int(np.random.SeedSequence([seed, q, stream]).generate_state(1)[0]) for q in positions]

    def raw(self, x: torch.Tensor, target: torch.Tensor, positions=None) -> torch.Tensor:
        """The method's map before normalisation. ``positions``: the images' positions in their
        table (the per-session draws of the random methods; default: the order of the calls)."""
        p, m = self.params, self.method
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
            sg = p["smoothgrad"]
            return gradients.smoothgrad(self.model, x, target, n_samples=sg["n_samples"],
                                        stdev_spread=sg["stdev_spread"], seeds=self.seeds(positions, len(x), stream=2))
        if m == "occlusion":
            oc = p["occlusion"]
            return gradients.occlusion(self.model, x, target, patch=oc["patch"], stride=oc["stride"],
                                       mode=oc["mode"], batch_size=p.get("batch_size", 8) * 4)

        lp = p["lots"]
        x_adv, _, _ = lots(self.model, x, self.lots_target(target), iterations=lp["iterations"], tau=lp["tau"],
                           alpha=lp["alpha"], layer=lp.get("layer"))
        return lots_map(x, x_adv, lp["sigma_mm"] / self.voxel_size).to(x.device)

    def __call__(self, x: torch.Tensor, target: torch.Tensor, positions=None) -> torch.Tensor:
        return minmax(self.raw(x, target, positions).detach().float())
