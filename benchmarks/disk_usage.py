"""Disk used by a finished run, and an estimate for the paper's protocol.

    .venv/bin/python benchmarks/disk_usage.py results                    # the demo's results/
    .venv/bin/python benchmarks/disk_usage.py results --stacks /path/to/a/run/with/kept/stacks/results

Prints the size of each top-level folder of RESULTS (what the run left on disk), then the bytes a
per-session volume takes in the stacks (2-byte int16 + gzip; measured on the stacks found under
--stacks, default RESULTS: a run with storage.keep_session_maps), and from it an estimate for
config/paper.yaml on an ADNI-sized cohort: the cohort store (float16, uncompressed), the
per-session saliency stacks of every model and method, the session masks, their native copies
(only with storage.keep_session_maps, and never when the working grid is the native grid, as in
config/paper.yaml) and the rest. The per-session stacks are temp() by default:
they exist from their job until the ROI vectors (and prob_CNN) have read them, so they count in
the peak, not in what stays.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from robustmaps import config as rmconfig  # noqa: E402
from robustmaps.grid import native_grid, working_grid  # noqa: E402

GB = 1e9


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def stack_bytes_per_volume_voxel(results: Path, name: str) -> tuple[float, int]:
    """(compressed bytes per voxel of one volume, stacks measured) over every stack called ``name``."""
    import nibabel as nib

    total, voxels, n = 0, 0, 0
    for path in sorted(results.rglob(name)):
        if "actmax" in path.parts:
            continue
        shape = nib.load(path).shape
        total += path.stat().st_size
        voxels += int(np.prod(shape))
        n += 1
    return (total / voxels if voxels else float("nan")), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--stacks", type=Path, help="a results/ folder with kept per-session stacks (default: RESULTS)")
    ap.add_argument("--paper", type=Path, default=REPO / "config" / "paper.yaml")
    ap.add_argument("--sessions-per-subject", type=float, default=4.5,
                    help="ADNI-sized cohort: ~3,150 sessions of 700 subjects")
    ap.add_argument("--subjects", type=int, default=700, help="main cohort's subjects (a third MCI, excluded)")
    args = ap.parse_args()

    print(f"{args.results} (what the run left on disk)")
    rows = sorted(((tree_bytes(p), p.name) for p in args.results.iterdir()), reverse=True)
    for size, name in rows:
        print(f"  {name:<14} {size / 1e6:9.1f} MB")
    print(f"  {'total':<14} {sum(s for s, _ in rows) / 1e6:9.1f} MB")

    stacks = args.stacks or args.results
    per_voxel = {}
    for kind, name in (("saliency maps", "maps.nii.gz"), ("session masks", "masks.nii.gz")):
        b, n = stack_bytes_per_volume_voxel(stacks, name)
        per_voxel[kind] = b
        print(f"{kind}: {b:.3f} bytes per voxel of a volume (int16 + gzip, {n} stacks under {stacks}; raw 2)")

    paper = rmconfig.load(args.paper)
    voxels = int(np.prod(working_grid(paper).shape))
    cn_ad = args.subjects * 2 / 3
    sessions = cn_ad * args.sessions_per_subject
    test = paper["split"]["test_per_class"]
    methods = [m for m in paper["saliency"]["methods"] if m != "actmax"]
    n_sal = len(rmconfig.saliency_models(paper)) * len(methods) * 2 * test  # test baseline sessions
    n_masks = len(rmconfig.mask_models(paper, "session")) * len(paper["masks"]["targets"]) * test * \
        args.sessions_per_subject
    store_dtype = np.dtype(paper["preprocess"]["dtype"]).itemsize
    est = {
        "cohort store (float16 .npy)": sessions * voxels * store_dtype,
        f"saliency stacks ({n_sal:,.0f} volumes)": n_sal * voxels * per_voxel["saliency maps"],
        f"session-mask stacks ({n_masks:,.0f} volumes)": n_masks * voxels * per_voxel["session masks"],
    }
    same_grid = native_grid(paper).to_config() == working_grid(paper).to_config()
    native = 0 if same_grid else sum(v for k, v in est.items() if "stacks" in k)
    print(f"\npaper protocol ({args.paper.name}): {len(rmconfig.trained_models(paper))} models, "
          f"{len(methods)} per-session methods, {voxels:,} voxels a map, ~{sessions:,.0f} CN/AD sessions")
    for k, v in est.items():
        print(f"  {k:<40} {v / GB:8.1f} GB")
    print(f"  {'native copies (only when kept)':<40} {native / GB:8.1f} GB"
          + (" (working grid = native grid: none)" if same_grid else ""))
    print(f"  peak, default (stacks temp, no native copies): {sum(est.values()) / GB:.1f} GB; "
          f"left after the run: {est['cohort store (float16 .npy)'] / GB:.1f} GB + small files")
    kept = " (its setting)" if paper["storage"]["keep_session_maps"] else ""
    print(f"  kept (storage.keep_session_maps{kept}): {(sum(est.values()) + native) / GB:.1f} GB")
    raw = (n_sal + n_masks) * voxels * 4 / GB
    print(f"  the same stacks as float32 NIfTI, one file per session, uncompressed: {raw:.0f} GB")


if __name__ == "__main__":
    main()
