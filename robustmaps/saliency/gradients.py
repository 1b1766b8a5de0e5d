"""Input-gradient maps (``monai.visualize``): vanilla gradient, SmoothGrad, occlusion sensitivity.

Every function: ``(model, x, target, ...) -> (B, X, Y, Z)`` non-negative maps on the input grid.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

from ..models import class_score as target_score
from .cam import target_logit

log = logging.getLogger(__name__)


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
               stdev_spread: float = 0.15, seeds=None) -> torch.Tensor:
    """SmoothGrad (Smilkov et al.): the root mean square of the gradients over ``n_samples`` noisy
    copies (noise SD = ``stdev_spread`` x the image's range). monai draws the noise from torch's
    global generator: it is seeded per image here with ``seeds`` (one per image; default 0, 1, ...),
    so that a map is reproducible and independent of the batch it is computed in."""
    from monai.visualize import SmoothGrad

    sg = SmoothGrad(_hooked(model), stdev_spread=stdev_spread, n_samples=n_samples, magnitude=True, verbose=False)
    out = []
    for i in range(len(x)):
        torch.manual_seed(int(seeds[i]) if seeds is not None else i)
        out.append(sg(x[i:i + 1].detach().clone(), index=target[i:i + 1])[:, 0])
    return torch.cat(out)


def log_odds(logits: torch.Tensor) -> torch.Tensor:
    """(B, C) log-odds of every class against the others (``models.class_score``): unlike a
    probability, it does not saturate at 1 for a confident model, so occluding a relevant patch
    always shows. Every class, not only the target: monai's occlusion activates all outputs."""
    return torch.stack([target_score(logits, c, "log_odds") for c in range(logits.shape[1])], 1)


def occlusion_windows(shape, patch: int, stride: int) -> torch.Tensor:
    """(W, 3) corners of the occlusion cubes, in the order monai's ``sliding_window_inference``
    visits them (``dense_patch_slices`` with monai's scan interval for overlap 1 - stride / patch:
    every ``stride`` voxels, the last cube shifted back inside the image)."""
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    size = tuple(int(s) for s in shape)
    roi = (int(patch),) * len(size)
    interval = _get_scan_interval(size, roi, len(size), (1.0 - stride / patch,) * len(size))
    slices = dense_patch_slices(size, roi, interval)
    return torch.tensor([[s.start for s in sl] for sl in slices], dtype=torch.long)


def occlude_batch(x: torch.Tensor, corners: torch.Tensor, patch: int, mode: str | float) -> torch.Tensor:
    """Copies of one image (1, 1, X, Y, Z), the cube at each corner occluded exactly as monai's
    ``OcclusionSensitivity.predictor`` does it (same operations, same values). Note monai 1.6's
    ``mean_patch``: its predictor unpacks ``constant_occlusion``'s (mul, add) as (add, mul), so
    the cube is multiplied by its mean rather than replaced by it; the workflow's maps are
    defined by that behaviour, kept here."""
    from monai.visualize import OcclusionSensitivity

    size = (patch,) * (x.dim() - 2)
    im = torch.repeat_interleave(x, len(corners), 0)
    if mode == "mean_img":
        mul, add = OcclusionSensitivity.constant_occlusion(x, x.mean().item(), size)
    elif isinstance(mode, float):
        mul, add = OcclusionSensitivity.constant_occlusion(x, mode, size)
    for b, t in enumerate(corners.tolist()):
        slices = [slice(b, b + 1), slice(None)] + [slice(int(j), int(j) + m) for j, m in zip(t, size)]
        slices = tuple(slices)
        to_occlude = im[slices]
        if mode == "mean_patch":
            add, mul = OcclusionSensitivity.constant_occlusion(x, to_occlude.mean().item(), size)
        im[slices] = to_occlude * mul + add
    return im


def unchanged_windows(x: torch.Tensor, corners: torch.Tensor, patch: int, mode: str | float) -> torch.Tensor:
    """(W,) bool: the windows whose occlusion leaves the image (1, 1, X, Y, Z) exactly as it is.
    ``mean_patch`` multiplies a cube by its mean (:func:`occlude_batch`): a cube of zeros (outside
    the brain) stays zeros and a cube of ones (the background of the coherency pass's
    ``x * map + (1 - map) * 1`` where the map is 0) stays ones, bit for bit (the float32 mean of
    equal zeros or ones is exact). Other modes write a constant into the cube: none is counted
    unchanged (no skip)."""
    if mode != "mean_patch":
        return torch.zeros(len(corners), dtype=torch.bool)
    xf = x.detach().float()
    hi, lo = _window_max(xf, patch)[0, 0], -_window_max(-xf, patch)[0, 0]
    c = corners.to(hi.device)
    hi, lo = hi[c[:, 0], c[:, 1], c[:, 2]], lo[c[:, 0], c[:, 1], c[:, 2]]
    return ((hi == lo) & ((hi == 0) | (hi == 1))).cpu()


def _window_max(x: torch.Tensor, patch: int) -> torch.Tensor:
    """The maximum over every ``patch``-voxel cube of (1, 1, X, Y, Z) (stride 1), one axis at a
    time: max is separable, so 3 x patch comparisons per cube instead of patch^3 (a 3D max pool
    with a 32-voxel kernel on the 1.5 mm grid takes minutes; this, a fraction of a second)."""
    for axis in range(3):
        kernel = [1, 1, 1]
        kernel[axis] = patch
        x = torch.nn.functional.max_pool3d(x, tuple(kernel), stride=1)
    return x


def occlusion(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, patch: int = 8, stride: int = 4,
              mode: str | float = "mean_patch", batch_size: int = 32, skip_unchanged: bool = True) -> torch.Tensor:
    """Occlusion sensitivity (``monai.visualize.OcclusionSensitivity``'s definition): for every
    voxel, how much the target's log-odds drop when a ``patch``-voxel cube around it is occluded
    (cubes every ``stride`` voxels; a voxel's value is the mean over the cubes that cover it);
    negative drops (occlusion that raises the score) count as 0. Log-odds, not probabilities: a
    probability of 1.0 in float32 would hide every drop.

    The windows, their occlusion, their batches of ``batch_size`` and the accumulation are monai's
    (``occlusion_windows``, ``occlude_batch``; same order, same float operations). With
    ``skip_unchanged`` the windows whose occlusion leaves the image unchanged (cubes of zeros,
    outside the brain, or of ones: :func:`unchanged_windows`) are not run: their score is the image's own,
    which is what running them gives (up to the last bits a different batch composition can
    change in a convolution), and the other windows are batched together. ``gaussian`` mode
    (monai's weighted blending) runs through monai unchanged."""
    if not 0 < stride <= patch:
        raise ValueError(f"occlusion: stride {stride} must be in 1..patch ({patch})")
    if mode == "gaussian":
        return _occlusion_monai(model, x, target, patch=patch, stride=stride, mode=mode, batch_size=batch_size)
    shape = tuple(x.shape[2:])
    if any(patch > s for s in shape):
        raise ValueError(f"Image (spatial shape) {shape} should be bigger than mask {[patch] * len(shape)}.")
    corners = occlusion_windows(shape, patch, stride)
    count = torch.zeros((1, 1, *shape), dtype=x.dtype, device=x.device)
    for c in corners.tolist():
        count[(slice(None), slice(None), *[slice(j, j + patch) for j in c])] += 1.0
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            score = log_odds(model(x).float())
            for i in range(len(x)):
                xi = x[i:i + 1]
                skip = unchanged_windows(xi, corners, patch, mode) if skip_unchanged else \
                    torch.zeros(len(corners), dtype=torch.bool)
                run = torch.nonzero(~skip).flatten()
                log.info("occlusion: %d of %d windows run (%d leave the image unchanged)", len(run), len(corners),
                         len(corners) - len(run))
                scores = score[i].to(x.dtype).expand(len(corners), -1).clone()
                for j in range(0, len(run), batch_size):
                    idx = run[j:j + batch_size]
                    scores[idx.to(scores.device)] = log_odds(model(occlude_batch(xi, corners[idx], patch, mode)))
                acc = torch.zeros((1, scores.shape[1], *shape), dtype=x.dtype, device=x.device)
                for c, s in zip(corners.tolist(), scores):
                    acc[(slice(None), slice(None), *[slice(j, j + patch) for j in c])] += s.view(-1, 1, 1, 1)
                sens = acc / count
                t = int(target[i])
                out.append((score[i, t] - sens[:, t]).clamp_min(0))
    finally:
        model.train(was_training)
    return torch.cat(out)


def _occlusion_monai(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, patch: int = 8, stride: int = 4,
                     mode: str | float = "mean_patch", batch_size: int = 32) -> torch.Tensor:
    """The same map through ``monai.visualize.OcclusionSensitivity`` itself (every window run):
    ``gaussian`` mode, and the reference :func:`occlusion` is tested against."""
    from monai.visualize import OcclusionSensitivity

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
