"""Saliency maps of a trained classifier, one module per family (see each module):

- ``cam``: Grad-CAM, Grad-CAM++ (monai), Layer-CAM, HiRes-CAM, Random-CAM (the chance baseline)
- ``gradients``: vanilla gradient, SmoothGrad, occlusion sensitivity (monai)
- ``lots``: layerwise origin-target synthesis (seed 002)
- ``actmax``: activation maximisation (seed 001), a per-class method (rule ``actmax``)
- ``sobol``: Sobol indices of regional GM factors (seed 001, SALib; rule ``sobol``)

:class:`Explainer` gives every per-image method one signature, ``explainer(x, target) -> maps``:
(B, 1, X, Y, Z) images and (B,) target classes in, (B, X, Y, Z) maps in [0, 1] (min-max per
map) out, on the input (working) grid.
"""

from __future__ import annotations

import torch

from ..config import CAM_METHODS
from .lots import minmax

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
            from .cam import CAMs

            self.cams = CAMs(model, params.get("layer", "auto"))
        self.generator = torch.Generator().manual_seed(int(params.get("seed", 0)))
        self.calls = 0

    @property
    def layer(self) -> str:
        if self.cams is not None:
            return self.cams.layer
        if self.method == "lots":
            from .cam import resolve_layer

            layer = self.params["lots"].get("layer") or "output"
            return layer if layer == "output" else resolve_layer(self.model, layer)
        return "input"

    def raw(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The method's map before normalisation."""
        p, m = self.params, self.method
        self.calls += 1
        if m == "gradcam":
            return self.cams.grad_cam(x, target)
        if m == "gradcampp":
            return self.cams.grad_cam_pp(x, target)
        if m == "layercam":
            return self.cams.layer_cam(x, target)
        if m == "hirescam":
            return self.cams.hires_cam(x, target)
        if m == "randomcam":
            return self.cams.random_cam(x, target, self.generator)
        from . import gradients

        if m == "vanilla":
            return gradients.vanilla_gradient(self.model, x, target)
        if m == "smoothgrad":
            sg = p["smoothgrad"]
            return gradients.smoothgrad(self.model, x, target, n_samples=sg["n_samples"],
                                        stdev_spread=sg["stdev_spread"],
                                        generator_seed=int(p.get("seed", 0)) * 100003 + self.calls * 1009)
        if m == "occlusion":
            oc = p["occlusion"]
            return gradients.occlusion(self.model, x, target, patch=oc["patch"], stride=oc["stride"],
                                       mode=oc["mode"], batch_size=p.get("batch_size", 8) * 4)
        from .lots import lots, lots_map

        lp = p["lots"]
        x_adv, _, _ = lots(self.model, x, self.lots_target(target), iterations=lp["iterations"], tau=lp["tau"],
                           alpha=lp["alpha"], layer=lp.get("layer"))
        return lots_map(x, x_adv, lp["sigma_mm"] / self.voxel_size).to(x.device)

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return minmax(self.raw(x, target).detach().float())
