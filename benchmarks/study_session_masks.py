"""The study's session-mask settings (2.3.4: l1 and l2 x 100) on a trained demo model: are the
masks empty (the all-ones mask), full, or in between? A measurement, not a benchmark of speed.

    make demo      # (or any run of config/config.yaml) for results/models and results/cohort
    .venv/bin/python benchmarks/study_session_masks.py results
    .venv/bin/python benchmarks/study_session_masks.py results --subjects 4 --max-epochs 1000 --norms sum mean

Each arm runs the workflow's rule entry (``robustmaps.jobs.masks.session_masks``) on the AD sessions
of the first ``--subjects`` AD test subjects, with the study's values from the schema (score
probability, l1 1e-4, l2 0.01, b1 0.1, b2 1, lr 0.1, penalty_scale 100, threshold 0.95, patience
200, tol 0.01) and only the norm changed. ``--max-epochs`` caps the study's 5,000 epochs (the
cap is printed; a mask still improving at the cap is counted). Prints per arm: masks, how many
are all ones after thresholding (coverage 0), how many cover every voxel (coverage 1), the
coverage range, best epochs, and the mean AD probability before and after masking.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from robustmaps import config as rmconfig
from robustmaps.grid import native_grid, working_grid
from robustmaps.jobs.masks import session_masks


def study_params(norm: str, max_epochs: int) -> dict:
    """config/paper.yaml's mask values (the study's: the schema's defaults) with ``norm`` and the epoch cap."""
    masks = rmconfig.load(Path(__file__).parents[1] / "config" / "paper.yaml")["masks"]
    keys = ("l1", "l2", "b1", "b2", "lr", "score", "threshold", "eps", "batch_size", "seed")
    return {**{k: masks[k] for k in keys}, **masks["session"], "norm": norm, "max_epochs": max_epochs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path, help="a demo run's results/ folder")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--subjects", type=int, default=4, help="AD test subjects (all their sessions)")
    ap.add_argument("--max-epochs", type=int, default=1000, help="the study's cap is 5000")
    ap.add_argument("--norms", nargs="+", default=["sum", "mean"], choices=["sum", "mean"])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    res = args.results
    test = pd.read_csv(res / "splits" / "test.tsv", sep="\t")
    ad = test[test.diagnosis == "AD"]
    keep = ad.participant_id.drop_duplicates().head(args.subjects)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sub = tmp / "test.tsv"
        ad[ad.participant_id.isin(keep)].to_csv(sub, sep="\t", index=False)
        demo = rmconfig.load(Path(__file__).parents[1] / "config" / "config.yaml")
        grids = {"working": working_grid(demo).to_config(), "native": native_grid(demo).to_config()}
        for norm in args.norms:
            params = study_params(norm, args.max_epochs)
            out = {"masks": tmp / f"{norm}.nii.gz", "index": tmp / f"{norm}.tsv", "history": tmp / f"{norm}-h.tsv"}
            t0 = time.perf_counter()
            session_masks(res / "models" / f"fold-{args.fold}" / f"seed-{args.seed}" / "model.pt",
                          res / "cohort" / "main" / "store.npy", res / "cohort" / "main" / "index.tsv", sub, out,
                          target="AD", params=params, grids=grids, device="cpu", threads=args.threads)
            idx = pd.read_csv(out["index"], sep="\t")
            rows.append({"norm": norm, "masks": len(idx), "voxels": int(idx.voxels.iloc[0]),
                         "all_ones": int((idx.coverage == 0).sum()), "full": int((idx.coverage >= 1).sum()),
                         "coverage": f"{idx.coverage.min():.3f}-{idx.coverage.max():.3f}",
                         "coverage_mean": round(idx.coverage.mean(), 3),
                         "best_epoch": f"{idx.best_epoch.min()}-{idx.best_epoch.max()}",
                         "at_cap": int((~idx.stopped_early).sum()),
                         "p_AD_before": round(idx.probability_before.mean(), 3),
                         "p_AD_after": round(idx.probability_after.mean(), 3),
                         "area_penalty": f"{idx.area_penalty.mean():.3g}", "tv_penalty": f"{idx.tv_penalty.mean():.3g}",
                         "minutes": round((time.perf_counter() - t0) / 60, 1)})
    print(f"study's session-mask settings (x{params['penalty_scale']:g}, score {params['score']}, l1 {params['l1']:g}, "
          f"l2 {params['l2']:g}, cap {args.max_epochs} epochs of the study's 5000), fold {args.fold} seed {args.seed}, "
          f"{len(keep)} AD test subjects")
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
