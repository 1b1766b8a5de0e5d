"""Input-gradient maps (``monai.visualize``): vanilla gradient, SmoothGrad, occlusion sensitivity.

Every function: ``(model, x, target, ...) -> (B, X, Y, Z)`` non-negative maps on the input grid.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ..models import class_score as target_score
from .cam import target_logit


def _hooked(model: nn.Module):
    from monai.visualize.class_activation_maps import ModelWithHooks

    hooks = ModelWithHooks(model, target_layer_names=(), register_backward=True)
    hooks.class_score = target_logit
    return hooks


def vanilla_gradient(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """|d y_target / d x| (Simonyan et al.), one image at a time (monai's VanillaGrad takes one)."""
    from monai.visualize import VanillaGrad

    grad = VanillaGrad(_hooked(model))
    return torch.cat([grad(x[i:i + 1].detach().clone(), index=target[i:i + 1]).abs()[:, 0]
                      for i in range(len(x))])


def smoothgrad(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, n_samples: int = 25,
               stdev_spread: float = 0.15, generator_seed: int = 0) -> torch.Tensor:
    """SmoothGrad (Smilkov et al.): the root mean square of the gradients over ``n_samples`` noisy
    copies (noise SD = ``stdev_spread`` x the image's range). monai draws the noise from torch's
    global generator: it is seeded per image here, so maps are reproducible."""
    from monai.visualize import SmoothGrad

    sg = SmoothGrad(_hooked(model), stdev_spread=stdev_spread, n_samples=n_samples, magnitude=True, verbose=False)
    out = []
    for i in range(len(x)):
        torch.manual_seed(generator_seed + i)
        out.append(sg(x[i:i + 1].detach().clone(), index=target[i:i + 1])[:, 0])
    return torch.cat(out)


def log_odds(logits: torch.Tensor) -> torch.Tensor:
    """(B, C) log-odds of every class against the others (``models.class_score``): unlike a
    probability, it does not saturate at 1 for a confident model, so occluding a relevant patch
    always shows. Every class, not only the target: monai's occlusion activates all outputs."""
    return torch.stack([target_score(logits, c, "log_odds") for c in range(logits.shape[1])], 1)


def occlusion(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, patch: int = 8, stride: int = 4,
              mode: str | float = "mean_patch", batch_size: int = 32) -> torch.Tensor:
    """Occlusion sensitivity (``monai.visualize.OcclusionSensitivity``): for every voxel, how much
    the target's log-odds drop when a ``patch``-voxel cube around it is occluded (cubes every
    ``stride`` voxels); negative drops (occlusion that raises the score) count as 0. Log-odds,
    not probabilities: a probability of 1.0 in float32 would hide every drop."""
    from monai.visualize import OcclusionSensitivity

    if not 0 < stride <= patch:
        raise ValueError(f"occlusion: stride {stride} must be in 1..patch ({patch})")
    occ = OcclusionSensitivity(model, mask_size=patch, n_batch=batch_size, verbose=False, mode=mode,
                               overlap=1.0 - stride / patch, activate=log_odds)
    out = []
    with torch.no_grad():
        score = log_odds(model(x).float())
    for i in range(len(x)):
        with torch.no_grad(), warnings.catch_warnings():  # monai indexes with lists (a torch deprecation)
            warnings.filterwarnings("ignore", message="Using a non-tuple sequence")
            sens, _ = occ(x[i:i + 1])
        t = int(target[i])
        out.append((score[i, t] - sens[:, t]).clamp_min(0))
    return torch.cat(out)
