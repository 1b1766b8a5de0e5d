"""ROI vectors: one sparse product over the label image vs a boolean mask per ROI.

    .venv/bin/python benchmarks/roi_vectors.py                 # 100 maps on 121x145x121, AAL2
    .venv/bin/python benchmarks/roi_vectors.py --maps 20

Both arms reduce the same maps (random, on Clinica's 121x145x121 grid at 1.5 mm) over the 120
AAL2 ROIs to their mean: the library's way (``robustmaps.roi.roi_vectors``: one sparse ROI x
voxel matrix built once, one product in float32), the per-ROI boolean loop the issue names (for
every map, for every ROI, a boolean mask of the label image and the mean inside it), and a
better loop (one boolean mask per ROI applied to all maps at once). Checks that all agree,
prints seconds per arm and the ratios (goal >= 20x against the per-map loop), then times the similarity step (cosine of every pair) on 1000
ROI vectors (goal < 10 s after loading).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from robustmaps.atlas import atlas_on_grid
from robustmaps.grid import Grid
from robustmaps.roi import cosine_matrix, indicator, roi_vectors


def per_map_loop(maps: np.ndarray, atlas: np.ndarray, ids) -> np.ndarray:
    """The loop the library avoids: for every map, for every ROI, a boolean mask and its mean."""
    out = np.zeros((maps.shape[-1], len(ids)))
    for n in range(maps.shape[-1]):
        img = maps[..., n]
        for r, label in enumerate(ids):
            inside = atlas == label
            if inside.any():
                out[n, r] = img[inside].mean()
    return out


def per_roi_loop(maps: np.ndarray, atlas: np.ndarray, ids) -> np.ndarray:
    """A better loop: one boolean mask per ROI, applied to every map at once."""
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
    roi_loop = per_roi_loop(maps, atlas, ids)
    t_roi = time.perf_counter() - t0
    t0 = time.perf_counter()
    map_loop = per_map_loop(maps, atlas, ids)
    t_map = time.perf_counter() - t0
    np.testing.assert_allclose(fast, map_loop, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(fast, roi_loop, rtol=1e-4, atol=1e-6)
    print(f"  sparse product (matrix built inside):            {t_fast:7.2f} s")
    print(f"  boolean mask per map and ROI ({args.maps} x {len(ids)}):       {t_map:7.2f} s   "
          f"ratio {t_map / t_fast:.0f}x (goal >= 20x)")
    print(f"  boolean mask per ROI, all maps at once:          {t_roi:7.2f} s   ratio {t_roi / t_fast:.0f}x")
    vectors = np.random.default_rng(1).random((args.pairs_of, len(ids)))
    t0 = time.perf_counter()
    sim = cosine_matrix(vectors)
    iu = np.triu_indices(len(sim), 1)
    pairs = sim[iu]
    t_sim = time.perf_counter() - t0
    print(f"  similarity step, {args.pairs_of} vectors ({len(pairs)} pairs): {t_sim:.3f} s (goal < 10 s)")


if __name__ == "__main__":
    main()
