"""Classifier architectures, built by name from a config dict (stored in ``model.pt`` to rebuild).

- ``paper``: the study's CNN (2.2.2): conv blocks of 1-3 sub-blocks (conv 3x3x3 -> batch-norm ->
  leaky ReLU) followed by a padded max-pool of stride 2 (or a stride-2 last convolution), then
  dropout and fully connected layer(s). Padding before pooling (ClinicaDL's PadMaxPool) keeps
  7 blocks valid on the 121x145x121 grid, where 7 plain pools would reach 0 voxels.
- ``conv5fc3``: ClinicaDL's classic image-level CNN (5 conv blocks 8-128 filters, FC 1300-50-2).
- any 3D classifier of ``monai.networks.nets`` by class name, with keyword arguments.

``class_score`` is the package's one definition of a class's score from logits (probability or
log-odds), used by the masks, occlusion and Sobol.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn


class PadMaxPool3d(nn.Module):
    """Max-pool (kernel = stride) after zero-padding every spatial size up to a multiple of the
    stride, so odd sizes lose no voxel and a size never drops to 0 (ClinicaDL's PadMaxPool3d)."""

    def __init__(self, kernel_size: int = 2, stride: int = 2):
        super().__init__()
        self.stride = stride
        self.pool = nn.MaxPool3d(kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size in reversed(x.shape[2:]):  # F.pad order: last dim first
            pads += [0, (-size) % self.stride]
        if any(pads):
            x = nn.functional.pad(x, pads)
        return self.pool(x)


def _sub_block(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv3d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm3d(cout),
            nn.LeakyReLU(inplace=True)]


def _as_list(value, n: int, name: str) -> list:
    values = list(value) if isinstance(value, (list, tuple)) else [value] * n
    if len(values) != n:
        raise ValueError(f"{name}: {len(values)} values for {n} blocks")
    return values


class PaperCNN(nn.Module):
    """The study's CNN, parametrised so that a hyperparameter search can drive it."""

    def __init__(self, in_shape: tuple[int, int, int], n_blocks: int = 7, filters: int = 8,
                 max_filters: int = 256, sub_blocks: int | list[int] = 1, downsampling: str = "maxpool",
                 fc_layers: int = 1, fc_units: int = 256, dropout: float = 0.5, n_classes: int = 2):
        super().__init__()
        if downsampling not in ("maxpool", "stride"):
            raise ValueError(f"downsampling must be maxpool or stride, got {downsampling!r}")
        subs = _as_list(sub_blocks, n_blocks, "sub_blocks")
        layers: list[nn.Module] = []
        cin, shape = 1, list(in_shape)
        for b in range(n_blocks):
            cout = min(filters * 2 ** b, max_filters)
            for s in range(subs[b]):
                last = s == subs[b] - 1
                layers += _sub_block(cin, cout, stride=2 if (last and downsampling == "stride") else 1)
                cin = cout
            if downsampling == "maxpool":
                layers.append(PadMaxPool3d(2, 2))
            shape = [math.ceil(n / 2) for n in shape]
        self.features = nn.Sequential(*layers)
        n_flat = cin * math.prod(shape)
        head: list[nn.Module] = [nn.Flatten(), nn.Dropout(dropout)]
        width = n_flat
        for _ in range(fc_layers - 1):
            head += [nn.Linear(width, fc_units), nn.LeakyReLU(inplace=True)]
            width = fc_units
        head.append(nn.Linear(width, n_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class Conv5FC3(nn.Module):
    """ClinicaDL's Conv5_FC3 image-level CNN."""

    def __init__(self, in_shape: tuple[int, int, int], dropout: float = 0.5, n_classes: int = 2):
        super().__init__()
        layers: list[nn.Module] = []
        cin, shape = 1, list(in_shape)
        for cout in (8, 16, 32, 64, 128):
            layers += [nn.Conv3d(cin, cout, 3, padding=1), nn.BatchNorm3d(cout), nn.ReLU(inplace=True),
                       PadMaxPool3d(2, 2)]
            cin, shape = cout, [math.ceil(n / 2) for n in shape]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin * math.prod(shape), 1300), nn.ReLU(inplace=True),
            nn.Linear(1300, 50), nn.ReLU(inplace=True), nn.Linear(50, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build_model(spec: dict, in_shape: tuple[int, int, int]) -> nn.Module:
    """Model from ``{"name": ..., **kwargs}``; the same dict rebuilds it from ``model.pt``."""
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    name = spec["name"]
    if name == "paper":
        return PaperCNN(tuple(in_shape), **kwargs)
    if name == "conv5fc3":
        return Conv5FC3(tuple(in_shape), **kwargs)
    import inspect

    from monai.networks import nets

    factory = getattr(nets, name, None)
    if not callable(factory) or name.startswith("_"):
        raise ValueError(f"unknown architecture {name!r}: use paper, conv5fc3 or a monai.networks.nets class "
                         "or factory (e.g. DenseNet121, resnet18)")
    # monai's nets name their channel arguments in two ways (in_channels / n_input_channels, ...)
    params = inspect.signature(factory).parameters
    accepts_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    defaults = {"spatial_dims": 3}
    defaults["in_channels" if "in_channels" in params else "n_input_channels"] = 1
    defaults["out_channels" if "out_channels" in params else "num_classes"] = 2
    defaults = {k: v for k, v in defaults.items() if k in params or accepts_any}
    model = factory(**{**defaults, **kwargs})
    if not isinstance(model, nn.Module):
        raise ValueError(f"monai.networks.nets.{name} did not build a torch module")
    return model


SCORE_KINDS = ("probability", "log_odds")


def class_score(logits: torch.Tensor, target, kind: str = "probability") -> torch.Tensor:
    """Per image, the score of class ``target`` (an int, or one per image) from (B, C) logits.

    - ``probability``: the softmax probability of the target (the study's f of eq. 2). It
      saturates: near 0 or 1 its gradient vanishes.
    - ``log_odds``: log p / (1 - p) = the target's logit minus the logsumexp of the other
      logits. It does not saturate, and unlike a raw logit it does not depend on the logits'
      common offset (softmax ignores it; a single logit does not).

    One definition for the package (masks, occlusion, Sobol), so that a score named in the
    config means the same number everywhere.
    """
    if kind not in SCORE_KINDS:
        raise ValueError(f"class score must be one of {', '.join(SCORE_KINDS)}, got {kind!r}")
    if isinstance(target, numbers.Integral):  # one class for the batch: slicing, the others concatenated
        target = int(target)
        if kind == "probability":
            return torch.softmax(logits, 1)[:, target]
        others = torch.cat([logits[:, :target], logits[:, target + 1:]], 1)
        return logits[:, target] - torch.logsumexp(others, 1)
    idx = torch.as_tensor(target, device=logits.device).long().reshape(-1, 1).expand(logits.shape[0], 1)
    if kind == "probability":
        return torch.softmax(logits, 1).gather(1, idx)[:, 0]
    others = logits.scatter(1, idx, float("-inf"))  # exp(-inf) = 0: the target drops out of the sum
    return logits.gather(1, idx)[:, 0] - torch.logsumexp(others, 1)
