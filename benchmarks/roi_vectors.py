"""ROI vectors: one sparse product over the label image vs a boolean mask per ROI.

    .venv/bin/python benchmarks/roi_vectors.py                 # 100 maps on 121x145x121, AAL2
    .venv/bin/python benchmarks/roi_vectors.py --maps 20

Both arms reduce the same maps (random, on Clinica's 121x145x121 grid at 1.5 mm) over the 120
AAL2 ROIs to their mean: the library's way (``robustmaps.roi.roi_vectors``: one sparse ROI x
voxel matrix built once, one product) and the naive way (for every ROI, a boolean mask of the
label image, then the mean of every map inside it). Checks that both agree, prints seconds per
arm and their ratio (goal >= 20x), then times the similarity step (cosine of every pair) on 1000
ROI vectors (goal < 10 s after loading).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from robustmaps.atlas import atlas_on_grid
from robustmaps.grid import Grid
from robustmaps.roi import cosine_matrix, indicator, roi_vectors


def naive(maps: np.ndarray, atlas: np.ndarray, ids) -> np.ndarray:
    out = np.zeros((maps.shape[-1], len(ids)))
    for r, label in enumerate(ids):
        inside = atlas == label
        if inside.any():
            out[:, r] = maps[inside].mean(0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--maps", type=int, default=100)
    ap.add_argument("--pairs-of", type=int, default=1000, help="ROI vectors of the similarity step")
    args = ap.parse_args()
    grid = Grid((121, 145, 121), 1.5, (-90.0, -126.0, -72.0))
    atlas, table = atlas_on_grid(grid)
    ids = table["index"].tolist()
    maps = np.random.default_rng(0).random((*grid.shape, args.maps), dtype=np.float32)
    print(f"{args.maps} maps of {grid.shape} ({maps.nbytes / 2**20:.0f} MiB), {len(ids)} ROIs")
    t0 = time.perf_counter()
    fast = roi_vectors(maps, atlas, ids, matrix=indicator(atlas, ids))
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    slow = naive(maps, atlas, ids)
    t_slow = time.perf_counter() - t0
    np.testing.assert_allclose(fast, slow, rtol=1e-4, atol=1e-6)
    print(f"  sparse product (matrix built inside): {t_fast:7.2f} s")
    print(f"  boolean mask per ROI:                 {t_slow:7.2f} s")
    print(f"  ratio: {t_slow / t_fast:.1f}x (goal >= 20x)")
    vectors = np.random.default_rng(1).random((args.pairs_of, len(ids)))
    t0 = time.perf_counter()
    sim = cosine_matrix(vectors)
    iu = np.triu_indices(len(sim), 1)
    pairs = sim[iu]
    t_sim = time.perf_counter() - t0
    print(f"  similarity step, {args.pairs_of} vectors ({len(pairs)} pairs): {t_sim:.3f} s (goal < 10 s)")


if __name__ == "__main__":
    main()
