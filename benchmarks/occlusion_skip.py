"""Occlusion's unchanged-window test at the study's grid: the per-cube maximum and minimum as one
3D max pool (before, 2026-11-29) against one max pool per axis (after: max is separable; the same
values, tests/unit/test_occlusion_skip.py). The test runs once per occluded image (and once per
image of the coherency pass), before any window is batched.

    .venv/bin/python benchmarks/occlusion_skip.py              # patch 8 (the paper) and 32 (the rehearsal)
    .venv/bin/python benchmarks/occlusion_skip.py --patches 8 --repeats 5

Arms interleaved over ``--repeats``; medians. The 3D pool at patch 32 is skipped past
``--max-seconds`` (minutes at full grid); the ratio is then a lower bound.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from robustmaps.saliency.gradients import _window_max

SHAPE = (121, 145, 121)


def pool3d(x, patch):
    return torch.nn.functional.max_pool3d(x, patch, stride=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patches", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-seconds", type=float, default=120.0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    x = torch.rand((1, 1, *SHAPE), generator=torch.Generator().manual_seed(0))
    print(f"grid {SHAPE}, {a.threads} threads, medians of {a.repeats}")
    for patch in a.patches:
        times = {"3d": [], "axes": []}
        for _ in range(a.repeats):
            for arm, fn in (("axes", _window_max), ("3d", pool3d)):
                if arm == "3d" and times["3d"] and times["3d"][-1] > a.max_seconds:
                    continue
                t0 = time.perf_counter()
                fn(x, patch)
                fn(-x, patch)  # the maximum and the minimum
                times[arm].append(time.perf_counter() - t0)
        before, after = statistics.median(times["3d"]), statistics.median(times["axes"])
        print(f"patch {patch}: one 3D max pool {before:.2f} s, per axis {after:.2f} s per image: "
              f"{before / after:.1f}x")


if __name__ == "__main__":
    main()
