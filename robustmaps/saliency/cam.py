"""Class activation maps on one layer of a 3D classifier (seed 002, section 2).

Grad-CAM and Grad-CAM++ are ``monai.visualize``'s, with two of its pitfalls handled here:
- its default post-processing (``default_normalizer``) maps (min, max) to (1, 0), i.e. it
  inverts the map; it is replaced by the identity (maps are normalised by the caller);
- ``ModelWithHooks.class_score`` indexes ``logits[:, class_idx]``, which for a batch of different
  target classes gives a B x B matrix whose sum mixes every image's classes (and Grad-CAM++'s
  exp(score) x gradients fails to broadcast for B > 1); it is replaced by a per-image gather,
  shaped to broadcast, so each image's map is the gradient of its own target's logit.
Layer-CAM, HiRes-CAM and Random-CAM are written on the same hooks (``ModelWithHooks``).

Every function: ``(model, x, target, layer=..., ...) -> (B, X, Y, Z)`` float maps on the input
grid (upsampled trilinearly from the layer's grid), non-negative.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def default_layer(model: nn.Module) -> str:
    """The output of the last convolutional block: the activation module that follows the last
    ``Conv3d`` (its ReLU / LeakyReLU), or the last ``Conv3d`` itself when none follows."""
    names = [(n, m) for n, m in model.named_modules()]
    last = max((i for i, (_, m) in enumerate(names) if isinstance(m, nn.Conv3d)), default=None)
    if last is None:
        raise ValueError("the model has no Conv3d layer: give saliency.layer explicitly")
    activations = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.PReLU, nn.GELU, nn.SiLU)
    for name, module in names[last + 1:]:
        if isinstance(module, activations):
            return name
        if isinstance(module, nn.Conv3d):
            break
    return names[last][0]


def resolve_layer(model: nn.Module, layer: str | None) -> str:
    """``layer`` ("auto"/None: :func:`default_layer`) checked against the model's module names."""
    if layer in (None, "auto"):
        return default_layer(model)
    modules = dict(model.named_modules())
    if layer not in modules:
        convs = [n for n, m in modules.items() if isinstance(m, nn.Conv3d)]
        raise ValueError(f"no layer {layer!r} in the model; its Conv3d layers are {convs}")
    return layer


def target_logit(logits: torch.Tensor, class_idx) -> torch.Tensor:
    """Per image, its own target's raw logit: what the CAM family and plain gradients
    differentiate, as their sources do (monai's ``class_score`` mixes classes across a batch).
    Not a class score in the sense of ``robustmaps.models.class_score`` (probability or log-odds)."""
    idx = torch.as_tensor(class_idx, device=logits.device).long().reshape(-1)
    if idx.numel() == 1:
        idx = idx.expand(logits.shape[0])
    return logits.gather(1, idx[:, None])[:, 0]


def _score_per_image(logits: torch.Tensor, class_idx) -> torch.Tensor:
    """(B, 1, 1, 1, 1): Grad-CAM++ multiplies exp(score) with the (B, C, X, Y, Z) gradients."""
    return target_logit(logits, class_idx).view(-1, 1, 1, 1, 1)


def _identity(x):
    return x


class CAMs:
    """Hooks on one layer of ``model``, built once per job; every CAM method of this module."""

    def __init__(self, model: nn.Module, layer: str | None = "auto"):
        from monai.visualize import GradCAM, GradCAMpp

        self.layer = resolve_layer(model, layer)
        self.gradcam = GradCAM(nn_module=model, target_layers=self.layer, postprocessing=_identity)
        self.hooks = self.gradcam.nn_module  # one ModelWithHooks: the layer's activations and gradients
        self.hooks.class_score = _score_per_image
        self.gradcampp = GradCAMpp(nn_module=self.hooks, target_layers=self.layer, postprocessing=_identity)

    def activations_and_gradients(self, x: torch.Tensor, target: torch.Tensor):
        x = x.detach().requires_grad_(True)  # the weights are frozen: the graph starts at the input
        _, acti, grad = self.hooks(x, class_idx=target)
        return acti[-1].detach(), grad[-1].detach()

    def _monai(self, cam, x, target):
        x = x.detach().requires_grad_(True)
        return cam(x, class_idx=target).detach()[:, 0]

    def grad_cam(self, x, target):
        return self._monai(self.gradcam, x, target)

    def grad_cam_pp(self, x, target):
        return self._monai(self.gradcampp, x, target)

    def layer_cam(self, x, target):
        """Layer-CAM: ReLU(sum_k ReLU(dy/dA_k) * A_k), element-wise weights."""
        a, g = self.activations_and_gradients(x, target)
        return upsample(F.relu((F.relu(g) * a).sum(1, keepdim=True)), x)

    def hires_cam(self, x, target):
        """HiRes-CAM: ReLU(sum_k dy/dA_k * A_k), the gradient kept element-wise (not averaged)."""
        a, g = self.activations_and_gradients(x, target)
        return upsample(F.relu((g * a).sum(1, keepdim=True)), x)

    def random_cam(self, x, target, seeds):
        """Random-CAM, the chance baseline (pytorch-grad-cam's ``RandomCAM``, seed 002): channel
        weights uniform in [-1, 1] per image (drawn with that image's entry of ``seeds``),
        ReLU(sum_k w_k A_k), upsampled (the caller min-max normalises). As in the reference
        implementation a map can be all zeros (every voxel's weighted sum negative); faithfulness
        then orders its voxels at random (seeded ties)."""
        a, _ = self.activations_and_gradients(x, target)
        w = torch.stack([torch.rand(a.shape[1], generator=torch.Generator().manual_seed(int(s))) for s in seeds])
        w = w.to(a.device) * 2 - 1
        return upsample(F.relu((w[..., None, None, None] * a).sum(1, keepdim=True)), x)


def upsample(cam: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B, 1, x, y, z) layer-grid map -> (B, X, Y, Z) on ``x``'s grid (monai's default upsampler)."""
    from monai.visualize.visualizer import default_upsampler

    return default_upsampler(x.shape[2:])(cam)[:, 0]
