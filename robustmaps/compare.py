"""Compare two learning procedures run by this workflow (seed 004: evaluating a learning
procedure vs evaluating trained models). Two numbers, for two questions:

1. ``procedure (over training sets)``: would A beat B again if both were trained on other
   training sets from the same population? Nadeau & Bengio's (2003) corrected resampled t-test
   of the VALIDATION scores (``--metric`` of each model on its fold's held-out subjects) of the
   models both folders trained, paired by (fold, seed). The seeds of one fold are averaged
   first (they share the fold's training and held-out sets: not new resamples), so J = the
   number of folds, and var(d) over folds is corrected by 1/J + n_val/n_train (subjects of the
   split tables), the correlation the overlapping training sets cause. This is the variability
   of the procedure over training sets; with 5 folds the test has few degrees of freedom and
   little power.
2. ``these models (on the test set)``: do the models the two folders trained differ on the
   population the fixed test set (``--set``: ``test`` or an independent cohort) was drawn from?
   A paired test over its subjects: per subject the difference of the two procedures' scores
   averaged over their (paired) models (``--score correct``: the fraction of models that
   classify it correctly; ``probability``: the mean probability of its true class), subjects
   weighted 1 / (n_classes x n_class) so the statistic is the difference of the models' mean
   balanced accuracy on the set; p from sign flips over subjects, CI from a bootstrap of the
   subjects (robustmaps.stats.paired_subject_test). It is conditional on the trained models:
   the training-set variability is not in it, so a small p says these models differ on such
   subjects, not that the procedures would again on other training sets.

Why the corrected test is not run on test-set scores: its correction assumes each score comes
from the complement of a resampled training set. The test set here is one fixed set shared by
every model; its sampling variance is common to all models' scores, never enters var(d) over
models, and n_test/n_train does not stand for it.

    python -m robustmaps.compare RESULTS_A RESULTS_B [--metric balanced_accuracy] [--set test]
                                 [--score correct] [--out table.tsv]

RESULTS_* are ``results`` folders: ``training/summary.tsv`` (one row per model and evaluation
set), ``splits/split-<k>/{train,validation}_baseline.tsv`` and
``models/fold-<k>/seed-<s>/predictions-<set>.tsv``. Prints one table (a column per question) and
writes it with ``--out`` (a row per question). A question the design cannot answer (e.g. one
fold) gets a ``note`` instead of numbers. Exit status 1 with one message on bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from .io import InputError, read_tsv, write_tsv
from .stats import corrected_resampled_ttest, paired_subject_test

PROCEDURE = "procedure (over training sets)"
MODELS = "these models (on the test set)"
COLUMNS = ["question", "set", "unit", "n_units", "n_models", "metric", "mean_a", "mean_b", "mean_difference", "t",
           "df", "p_value", "ci_low", "ci_high", "n_train", "n_test", "test", "note"]
SCORES = {"correct": "balanced accuracy (per-subject correctness)", "probability": "probability of the true class"}


def paired_scores(a: Path, b: Path, metric: str = "balanced_accuracy", which: str = "test") -> pd.DataFrame:
    """The per-model ``metric`` on set ``which`` of the (fold, seed) models both folders hold ->
    fold, seed, a, b, n_a, n_b."""
    frames = []
    for name, root in (("a", a), ("b", b)):
        t = read_tsv(root / "training" / "summary.tsv", ["fold", "seed", "set", metric, "n"], what="training summary")
        t = t[(t["set"] == which) & pd.to_numeric(t.fold, errors="coerce").notna()]  # not the mean / sd rows
        if t.empty:
            raise InputError(f"{root / 'training' / 'summary.tsv'}: no per-model rows for set {which!r}")
        frames.append(t[["fold", "seed", metric, "n"]].rename(columns={metric: name, "n": f"n_{name}"}))
    paired = frames[0].astype({"fold": int, "seed": int}).merge(frames[1].astype({"fold": int, "seed": int}),
                                                                on=["fold", "seed"])
    if len(paired) < 2:
        raise InputError(f"{a} and {b} share {len(paired)} (fold, seed) model(s): at least 2 are needed")
    return paired.sort_values(["fold", "seed"]).reset_index(drop=True)


def split_sizes(a: Path, b: Path, folds) -> tuple[float, float]:
    """Mean number of training and of validation subjects over ``folds`` (split tables of ``a``);
    the folds must hold the same validation subjects in ``b`` (else the scores are not paired)."""
    n_train, n_val = [], []
    for f in sorted(set(folds)):
        ids = {}
        for root in (a, b):
            path = root / "splits" / f"split-{f}" / "validation_baseline.tsv"
            ids[root] = set(read_tsv(path, ["participant_id"], what="split table", dtype={"participant_id": str})
                            .participant_id)
        if ids[a] != ids[b]:
            raise InputError(f"split-{f}: {a} and {b} validate on other subjects; their scores are not paired")
        path = a / "splits" / f"split-{f}" / "train_baseline.tsv"
        n_train.append(len(read_tsv(path, ["participant_id"], what="split table")))
        n_val.append(len(ids[a]))
    return float(np.mean(n_train)), float(np.mean(n_val))


def subject_scores(root: Path, models, which: str = "test", score: str = "correct") -> pd.DataFrame:
    """Per subject of set ``which``: its label and ``score`` averaged over its sessions, then over
    ``models`` ((fold, seed) pairs): the fraction of models that classify it correctly
    (``correct``) or their mean probability of its true class (``probability``)."""
    if score not in SCORES:
        raise InputError(f"score must be one of {', '.join(SCORES)}, got {score!r}")
    frames = []
    for i, (f, s) in enumerate(models):
        path = root / "models" / f"fold-{f}" / f"seed-{s}" / f"predictions-{which}.tsv"
        t = read_tsv(path, ["participant_id", "label", "predicted"], what="predictions",
                     dtype={"participant_id": str})
        label = t.label.astype(int).to_numpy()
        if score == "correct":
            value = (t.predicted.astype(int).to_numpy() == label).astype(float)
        else:
            proba = [c for c in t.columns if c.startswith("proba_")]
            if len(proba) < 2 or label.max(initial=0) >= len(proba):
                raise InputError(f"{path}: no proba_<class> column for every label")
            value = t[proba].to_numpy(float)[np.arange(len(t)), label]
        frames.append(pd.DataFrame({"participant_id": t.participant_id, "label": label, "value": value, "model": i}))
    first = set(frames[0].participant_id)
    for (f, s), frame in zip(models, frames):
        if set(frame.participant_id) != first:
            raise InputError(f"{root}: model fold-{f}/seed-{s} scored other subjects of set {which!r} than "
                             f"fold-{models[0][0]}/seed-{models[0][1]}: not one fixed set shared by every model")
    rows = pd.concat(frames, ignore_index=True)
    if rows.groupby("participant_id").label.nunique().gt(1).any():
        raise InputError(f"{root}: a subject of set {which!r} has two labels")
    per_model = rows.groupby(["participant_id", "model"]).agg(label=("label", "first"), value=("value", "mean"))
    return per_model.groupby("participant_id").agg(label=("label", "first"), value=("value", "mean"))


def _row(question: str, fn) -> dict:
    try:
        return {"question": question, **fn(), "note": ""}
    except ValueError as exc:  # the design cannot answer this question (e.g. a single fold)
        return {"question": question, "note": f"not tested: {exc}"}


def compare(a: Path, b: Path, metric: str = "balanced_accuracy", which: str = "test", score: str = "correct",
            n_perm: int = 9999, n_boot: int = 10000, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Both numbers of the module docstring -> a row per question (:data:`COLUMNS`)."""
    a, b = Path(a), Path(b)
    if which == "validation":
        raise InputError("--set names a fixed evaluation set (test or an independent cohort); the validation "
                         "scores enter the corrected resampled t-test already")
    val = paired_scores(a, b, metric, "validation")
    n_train, n_val = split_sizes(a, b, val.fold)

    def procedure():
        r = corrected_resampled_ttest(val.a.to_numpy(), val.b.to_numpy(), n_train=n_train, n_test=n_val,
                                      groups=val.fold.to_numpy(), level=level)
        return {"set": "validation", "unit": "fold", "n_units": r["df"] + 1, "n_models": len(val), "metric": metric,
                "mean_a": float(val.a.mean()), "mean_b": float(val.b.mean()), **r, "n_train": n_train,
                "n_test": n_val, "test": "corrected resampled t-test (Nadeau-Bengio), seeds averaged per fold"}

    fixed = paired_scores(a, b, metric, which)
    models = list(zip(fixed.fold, fixed.seed))
    sa, sb = subject_scores(a, models, which, score), subject_scores(b, models, which, score)
    if set(sa.index) != set(sb.index) or not sa.label.equals(sb.label.loc[sa.index]):
        raise InputError(f"{a} and {b}: set {which!r} is not the same subjects with the same labels "
                         f"({len(set(sa.index) - set(sb.index))} only in A, {len(set(sb.index) - set(sa.index))} "
                         "only in B)")
    sb = sb.loc[sa.index]

    def these_models():
        r = paired_subject_test(sa.value.to_numpy(), sb.value.to_numpy(), sa.label.to_numpy(), n_perm=n_perm,
                                n_boot=n_boot, level=level, seed=seed)
        return {"set": which, "unit": "subject", "n_units": r["n"], "n_models": len(models), "metric": SCORES[score],
                "mean_a": r["mean_a"], "mean_b": r["mean_b"], "mean_difference": r["difference"],
                "p_value": r["p_value"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                "test": "paired sign-flip test over subjects, models averaged per subject"}

    return pd.DataFrame([_row(PROCEDURE, procedure), _row(MODELS, these_models)], columns=COLUMNS)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--metric", default="balanced_accuracy", help="validation metric of the procedure test")
    ap.add_argument("--set", default="test", dest="which", help="the fixed evaluation set of the test-set test")
    ap.add_argument("--score", default="correct", choices=sorted(SCORES), help="per-subject score of that test")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    try:
        table = compare(args.a, args.b, args.metric, args.which, args.score)
    except InputError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    print(table.set_index("question").T.to_string())
    if args.out:
        write_tsv(table, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
