"""Compare two learning procedures run by this workflow (seed 004): the Nadeau-Bengio corrected
resampled t-test over the models both result folders trained (same folds and seeds, paired),
with a bootstrap CI of the mean difference.

    python -m robustmaps.compare RESULTS_A RESULTS_B [--set test] [--metric balanced_accuracy]

Reads ``training/summary.tsv`` of each folder (one row per model and evaluation set) and the
split tables for the training and test sizes of the correction term; prints one table and
writes it with ``--out``. Exit status 1 with one message on bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from .io import InputError, read_tsv, write_tsv
from .stats import corrected_resampled_ttest


def paired_scores(a: Path, b: Path, metric: str = "balanced_accuracy", which: str = "test") -> pd.DataFrame:
    frames = []
    for name, root in (("a", a), ("b", b)):
        t = read_tsv(root / "training" / "summary.tsv", ["fold", "seed", "set", metric, "n"], what="training summary")
        t = t[(t["set"] == which) & pd.to_numeric(t.fold, errors="coerce").notna()]  # not the mean / sd rows
        if t.empty:
            raise InputError(f"{root / 'training' / 'summary.tsv'}: no per-model rows for set {which!r}")
        frames.append(t[["fold", "seed", metric, "n"]].rename(columns={metric: name, "n": f"n_{name}"}))
    paired = frames[0].merge(frames[1], on=["fold", "seed"])
    if len(paired) < 2:
        raise InputError(f"{a} and {b} share {len(paired)} (fold, seed) model(s): at least 2 are needed")
    return paired.astype({"fold": int, "seed": int}).sort_values(["fold", "seed"]).reset_index(drop=True)


def training_size(root: Path, folds) -> float:
    sizes = []
    for f in sorted(set(folds)):
        path = root / "splits" / f"split-{f}" / "train_baseline.tsv"
        sizes.append(len(read_tsv(path, ["participant_id"], what="split table")))
    return float(np.mean(sizes))


def compare(a: Path, b: Path, metric: str = "balanced_accuracy", which: str = "test", n_boot: int = 10000,
            level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    paired = paired_scores(a, b, metric, which)
    n_train, n_test = training_size(a, paired.fold), float(paired.n_a.iloc[0])
    res = corrected_resampled_ttest(paired.a.to_numpy(), paired.b.to_numpy(), n_train=n_train, n_test=n_test)
    d = (paired.a - paired.b).to_numpy()
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, len(d), (n_boot, len(d)))].mean(1)
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return pd.DataFrame([{"metric": metric, "set": which, "n_models": len(d), "mean_a": paired.a.mean(),
                          "mean_b": paired.b.mean(), **res, "ci_low": lo, "ci_high": hi, "n_train": n_train,
                          "n_test": n_test}])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--metric", default="balanced_accuracy")
    ap.add_argument("--set", default="test", dest="which")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    try:
        table = compare(args.a, args.b, args.metric, args.which)
    except InputError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    print(table.T.to_string(header=False))
    if args.out:
        write_tsv(table, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
