"""Activation maximisation (seed 001, eq. 4): x <- x + e1 da/dx - e2 dR/dx, R = 3D total variation.

``a`` is the class's logit; ``R`` the anisotropic total variation sum |x[i+1] - x[i]| over the
three axes, whose (sub)gradient is written out (:func:`tv_gradient`, tested against autograd).
The image stays in the GM range [0, 1]. The map of a start image is |x_T - x_0|.
"""

from __future__ import annotations

import torch
from torch import nn

from .cam import target_logit


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic 3D TV of each image of a (B, C, X, Y, Z) batch -> (B,)."""
    return sum(x.diff(dim=d).abs().flatten(1).sum(1) for d in (2, 3, 4))


def tv_gradient(x: torch.Tensor) -> torch.Tensor:
    """d TV / dx: for every axis, sign(x_i - x_{i-1}) - sign(x_{i+1} - x_i) (sign(0) = 0)."""
    g = torch.zeros_like(x)
    for d in (2, 3, 4):
        s = torch.sign(x.diff(dim=d))
        n = x.shape[d]
        g.narrow(d, 1, n - 1).add_(s)
        g.narrow(d, 0, n - 1).sub_(s)
    return g


def activation_maximisation(model: nn.Module, x0: torch.Tensor, target: torch.Tensor, *, iterations: int = 100,
                            e1: float = 0.1, e2: float = 0.1, clamp=(0.0, 1.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 4 from ``x0`` (B, 1, X, Y, Z) for each image's ``target`` class. Returns (x_T, logit_T)."""
    x = x0.detach().clone()
    for _ in range(iterations):
        x.requires_grad_(True)
        a = target_logit(model(x), target)
        (da,) = torch.autograd.grad(a.sum(), x)
        with torch.no_grad():
            x = x + e1 * da - e2 * tv_gradient(x)
            x = x.clamp(*clamp) if clamp is not None else x
    with torch.no_grad():
        return x.detach(), target_logit(model(x), target)
