"""`masks.norm` at the study's grid: `sum` against `mean` on the rehearsal's models, judged by the
criteria config/README.md fixed before this measurement ("Choosing `masks.norm` at 1.5 mm";
issue 18, item 2).

    make rehearsal                                        # its masks use paper.yaml's norm (sum)
    .venv/bin/python benchmarks/mask_norm.py rehearsal    # ~20 minutes on 2 cores

The rehearsal's run directory is copied to ``<dir>-norm-<other>`` and every mask (group,
independent, sweep, session) and the analysis that reads them are re-run there with the other
norm and nothing else changed (Snakemake's params trigger; the models, maps and splits are the
rehearsal's). Then, for each norm, the four criteria with their measured values, and the winner by
the README's rule: more criteria met wins; on a tie, the first criterion on which they differ;
then `sum` (the text as written). A criterion that fails for both is a finding of the measurement.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from robustmaps import config as rmconfig  # noqa: E402
from robustmaps.io import read_tsv  # noqa: E402
from robustmaps.sweep import sweep_series, sweep_trend_failures

CONFIGS = [REPO / "config" / "paper.yaml", REPO / "config" / "rehearsal.yaml"]
TARGETS = ["results/masks/summary.tsv", "results/analysis/regions/recovery.tsv"]


def criteria(results: Path) -> list[tuple[str, bool, str]]:
    """The README's four criteria on one run: (name, holds, measured values)."""
    masks = read_tsv(results / "masks" / "summary.tsv", ["kind", "coverage", "probability_after"],
                     dtype={"participant_id": str})
    group, sweep, session = (masks[masks.kind == k] for k in ("group", "sweep", "session"))
    flip = pd.concat([group, sweep]).probability_after.to_numpy(float)
    c1 = (bool(len(flip)) and bool((flip < 0.5).all()),
          f"masked AD probability of {len(flip)} group + sweep masks: max {flip.max():.3g}, "
          f"median {np.median(flip):.3g}; {(flip >= 0.5).sum()} at or above 0.5")
    gcov, scov = group.coverage.to_numpy(float), session.coverage.to_numpy(float)
    empty, full = int((scov <= 0).sum()), int((scov >= 1).sum())
    c2 = (bool(len(gcov)) and bool(((gcov > 0) & (gcov < 0.5)).all()) and len(scov) > 0 and empty == full == 0,
          f"group coverage {', '.join(f'{c:.4f}' for c in gcov)}; {len(scov)} session masks: coverage "
          f"{scov.min():.4f}-{scov.max():.4f}, {empty} all ones, {full} all zeros" if len(scov) else
          f"group coverage {', '.join(f'{c:.4f}' for c in gcov)}; no session mask")
    trend = sweep_trend_failures(sweep, params=("l1", "l2", "b1"))
    series = "; ".join(f"{p}: " + ", ".join(f"{v:g}={c:.4f}" for v, c in zip(r[p], r.coverage))
                       for p, r in _series(sweep))
    c3 = (not trend and bool(len(sweep)), series + ("" if not trend else " | " + " | ".join(trend)))
    rec = read_tsv(results / "analysis" / "regions" / "recovery.tsv", ["kind", "roc_auc"],
                   dtype={"participant_id": str})
    auc = rec[(rec.kind == "group") & (rec.method == "mask") & (rec.cohort == "main") & (rec.target == "AD")]
    c4 = (bool(len(auc)) and bool((auc.roc_auc >= 0.9).all()),
          "planted-ROI ROC AUC " + ", ".join(f"fold {r.fold}: {r.roc_auc:.3f}" for r in auc.itertuples()))
    names = ["1. the masks remove the class evidence", "2. neither empty nor the whole brain",
             "3. the study's sweep trends", "4. the planted regions are found"]
    return [(n, ok, text) for n, (ok, text) in zip(names, (c1, c2, c3, c4))]


def _series(sweep):
    return [(p, rows) for p, _, rows in sweep_series(sweep) if p in ("l1", "l2", "b1")]


def winner(results: dict[str, list[tuple[str, bool, str]]]) -> tuple[str, str]:
    """The README's rule: more criteria met wins; on a tie the first criterion on which they
    differ; else `sum`."""
    met = {norm: sum(ok for _, ok, _ in rows) for norm, rows in results.items()}
    if met["sum"] != met["mean"]:
        best = max(met, key=met.get)
        return best, f"{best} meets {met[best]} of 4 criteria, the other {min(met.values())}"
    for (name, a, _), (_, b, _) in zip(results["sum"], results["mean"]):
        if a != b:
            best = "sum" if a else "mean"
            return best, f"a tie at {met['sum']} of 4; criterion {name.split('.')[0]} decides"
    return "sum", f"a tie at {met['sum']} of 4 on every criterion: sum stays (the text as written)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rehearsal", type=Path, help="the finished rehearsal's run directory")
    ap.add_argument("--cores", default="all")
    ap.add_argument("--skip-run", action="store_true", help="judge the two runs as they are")
    a = ap.parse_args()
    ran = rmconfig.load(*CONFIGS)["masks"]["norm"]
    other = "mean" if ran == "sum" else "sum"
    copy = a.rehearsal.parent / f"{a.rehearsal.name}-norm-{other}"
    if not a.skip_run:
        if copy.exists():
            shutil.rmtree(copy)
        shutil.copytree(a.rehearsal, copy, symlinks=True)
        overlay = copy / "norm.yaml"
        overlay.write_text(yaml.safe_dump({"masks": {"norm": other}}))
        cmd = [str(Path(sys.executable).parent / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(copy),
               "--cores", a.cores, *TARGETS, "--configfile", *map(str, CONFIGS), str(overlay.resolve())]
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    found = {ran: criteria(a.rehearsal / "results"), other: criteria(copy / "results")}
    for norm in ("sum", "mean"):
        print(f"\nmasks.norm: {norm}")
        for name, ok, text in found[norm]:
            print(f"  {'ok     ' if ok else 'finding'} {name}: {text}")
    best, why = winner(found)
    print(f"\nwinner: {best} ({why})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
