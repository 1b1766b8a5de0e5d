"""Sobol model evaluation: batched factor rows vs one factor row per forward pass.

    .venv/bin/python benchmarks/sobol_eval.py                  # demo grid, real AAL2 factors
    .venv/bin/python benchmarks/sobol_eval.py --rows 512 --threads 2 --batch 64

Both arms call the workflow's evaluator (``robustmaps.saliency.sobol.evaluate``) on the same
factor rows (a Sobol design over the 120 AAL2 ROIs on the demo's 40x48x40 grid) and images, with
the demo's network (paper CNN, 5 blocks, 8 filters; random weights in eval mode: the cost does not
depend on them). The batched arm packs ``--batch`` images (factor rows x images) per forward
pass; the other runs one factor row (its ``--images`` images) per pass. Arms are interleaved over
``--repeats``; medians are kept. Prints model outputs per second of each arm and their ratio, and
checks that both arms give the same outputs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from robustmaps.atlas import atlas_on_grid
from robustmaps.grid import Grid
from robustmaps.models import build_model
from robustmaps.saliency.sobol import evaluate, problem, roi_lookup
from robustmaps.trained import Classifier
from robustmaps.devices import device_for, seed_everything


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=256, help="factor rows (model outputs) per arm")
    ap.add_argument("--images", type=int, default=2, help="images per model output")
    ap.add_argument("--batch", type=int, default=64, help="images per forward pass of the batched arm")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    from SALib.sample import sobol as sobol_sample

    seed_everything(0, args.threads)
    device = device_for(args.device)
    grid = Grid((40, 48, 40), 4.5, (-90.0, -126.0, -72.0))
    atlas, labels = atlas_on_grid(grid)
    labels = labels[labels.n_voxels > 0]
    positions = roi_lookup(atlas, labels["index"].tolist())
    net = build_model({"name": "paper", "n_blocks": 5, "filters": 8, "dropout": 0.5}, grid.shape)
    model = Classifier(net).to(device).eval().to(memory_format=torch.channels_last_3d)
    for p in model.parameters():
        p.requires_grad_(False)
    rows = sobol_sample.sample(problem(labels["name"].tolist(), (0.5, 1.5)), 64, calc_second_order=False,
                               seed=0)[:args.rows]
    images = torch.rand((args.images, 1, *grid.shape), generator=torch.Generator().manual_seed(0)).to(device)
    arms = {"batched": args.batch, "one row per pass": args.images}
    times = {k: [] for k in arms}
    outputs = {}
    print(f"device {device}, {args.threads} threads, {len(rows)} factor rows x {args.images} images "
          f"({len(labels)} ROI factors), 40x48x40")
    for _ in range(args.repeats):
        for name, batch in arms.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            outputs[name] = evaluate(model, images, positions, rows, target=1, batch_size=batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    np.testing.assert_allclose(outputs["batched"], outputs["one row per pass"], rtol=1e-4, atol=1e-6)
    rate = {k: len(rows) / statistics.median(v) for k, v in times.items()}
    for k, v in rate.items():
        print(f"  {k:17s} {v:8.1f} model outputs/s ({v * args.images:8.1f} images/s)")
    print(f"  ratio batched / one row per pass: {rate['batched'] / rate['one row per pass']:.2f}x")


if __name__ == "__main__":
    main()
