"""Session masks: K masks optimised as one batch vs one after another (same total work).

    .venv/bin/python benchmarks/session_masks.py                # demo grid and a smaller one
    .venv/bin/python benchmarks/session_masks.py --k 16 --epochs 30 --threads 2

Both arms call the workflow's optimiser (``robustmaps.masks.optimise_independent``) with the
demo's network (paper CNN, 5 blocks, 8 filters; random weights in eval mode: the cost does not
depend on them) and a stopping rule that cannot fire (patience > epochs), so both do exactly
K x epochs mask updates. Arms are interleaved over ``--repeats`` and the median is kept.
Prints masks per minute of each arm and their ratio per grid (goal >= 1.4x at 40x48x40 on CPU,
>= 2x at smaller grids and on a GPU). On CUDA the times include a synchronisation.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from robustmaps.masks import MaskSettings, optimise_independent
from robustmaps.models import build_model
from robustmaps.trained import Classifier
from robustmaps.devices import device_for, seed_everything

GRIDS = {"demo 40x48x40": ((40, 48, 40), 5), "small 20x24x20": ((20, 24, 20), 4)}


def model_for(shape, n_blocks, device):
    net = build_model({"name": "paper", "n_blocks": n_blocks, "filters": 8, "dropout": 0.5}, shape)
    model = Classifier(net).to(device).eval().to(memory_format=torch.channels_last_3d)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, default=16, help="session masks (the batch size of the batched arm)")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    seed_everything(0, args.threads)
    device = device_for(args.device)
    settings = MaskSettings(l1=1e-4, l2=1e-3)
    kw = dict(max_epochs=args.epochs, patience=args.epochs + 1, tol=0.01)
    print(f"device {device}, {args.threads} threads, K = {args.k} masks x {args.epochs} epochs per arm")
    for name, (shape, n_blocks) in GRIDS.items():
        model = model_for(shape, n_blocks, device)
        images = (torch.rand(args.k, 1, *shape, device=device) * 0.8).contiguous(
            memory_format=torch.channels_last_3d)

        def batched():
            optimise_independent(model, images, settings, **kw)

        def sequential():
            for i in range(args.k):
                optimise_independent(model, images[i:i + 1], settings, **kw)

        optimise_independent(model, images[:2], settings, max_epochs=2, patience=3, tol=0.01)  # warm-up
        times = {"batched": [], "sequential": []}
        for _ in range(args.repeats):
            times["batched"].append(timed(batched, device))
            times["sequential"].append(timed(sequential, device))
        med = {k: statistics.median(v) for k, v in times.items()}
        rate = {k: args.k / v * 60 for k, v in med.items()}
        print(f"{name}: batched {rate['batched']:.1f} masks/min ({med['batched']:.1f} s), one after another "
              f"{rate['sequential']:.1f} masks/min ({med['sequential']:.1f} s): ratio "
              f"{med['sequential'] / med['batched']:.2f}x")


if __name__ == "__main__":
    main()
