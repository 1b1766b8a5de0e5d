"""Acceptance thresholds of the demo's science, read from its result tables (``make check-demo``).

Each stage adds its checks to ``CHECKS``; a check returns a list of failures (empty = holds).
``python -m robustmaps.acceptance results [config.yaml]`` prints every check and exits 1 if any
fails, so a change that breaks the demo's science is caught.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from . import config as rmconfig
from .io import read_tsv


def check_qc(results: Path, config: dict) -> list[str]:
    """Every planted QC defect is rejected; (almost) every healthy session passes."""
    fails = []
    for cohort, spec in config["data"]["cohorts"].items():
        if spec["source"] != "synthetic":
            continue
        qc = read_tsv(results / "cohort" / cohort / "qc.tsv", ["participant_id", "session_id", "status"])
        truth = read_tsv(results / "cohort" / cohort / "truth_sessions.tsv", ["planted_defect"])
        m = qc.merge(truth, on=["participant_id", "session_id"])
        missed = m[m.planted_defect & (m.status == "pass")]
        if len(missed):
            fails.append(f"{cohort}: {len(missed)} planted QC defect(s) passed QC")
        healthy = m[~m.planted_defect]
        rate = (healthy.status == "pass").mean()
        if rate < 0.95:
            fails.append(f"{cohort}: only {rate:.1%} of the sessions without a planted defect pass QC (< 95%)")
    return fails


def check_planted_signal(results: Path, config: dict) -> list[str]:
    """On the working grid, the planted ROIs have lower GM in AD than in CN (baseline sessions),
    clearly more than the ROIs where nothing was planted."""
    import nibabel as nib

    from .preprocess import open_store
    from .roi import roi_means

    fails = []
    atlas = np.asarray(nib.load(results / "atlas" / "atlas.nii.gz").dataobj).astype(int)
    labels = read_tsv(results / "atlas" / "labels.tsv", ["index", "name"])
    for cohort, spec in config["data"]["cohorts"].items():
        if spec["source"] != "synthetic" or max(spec["synthetic"]["atrophy"]["severity"]) == 0:
            continue
        store, index = open_store(results / "cohort" / cohort / "store.npy", results / "cohort" / cohort / "index.tsv")
        base = index[index.baseline.astype(bool)]
        means = roi_means(store[base.row.to_numpy()], atlas, int(atlas.max()) + 1)
        ad, cn = means[base.label.to_numpy() == 1], means[base.label.to_numpy() == 0]
        red = 1 - ad.mean(0) / np.maximum(cn.mean(0), 1e-6)
        truth = read_tsv(results / "cohort" / cohort / "ground_truth.tsv", ["roi_index", "weight"])
        planted = truth[truth.weight >= 1].roi_index.to_numpy()
        others = np.setdiff1d(labels["index"].to_numpy(), truth.roi_index.to_numpy())
        others = others[cn.mean(0)[others] > 0.05]
        if red[planted].min() <= 0.05:
            fails.append(f"{cohort}: GM reduction AD vs CN in a planted ROI is only {red[planted].min():.3f}")
        if red[planted].mean() <= 3 * max(np.abs(red[others]).mean(), 1e-3):
            fails.append(f"{cohort}: planted ROIs ({red[planted].mean():.3f}) do not stand out of the "
                         f"others ({np.abs(red[others]).mean():.3f})")
    return fails


def check_splits(results: Path, config: dict) -> list[str]:
    from .preprocess import read_index
    from .splits import verify

    index = read_index(results / "cohort" / "main" / "index.tsv")
    fails = verify(results / "splits", config["split"]["n_folds"], index)
    summ = read_tsv(results / "splits" / "summary.tsv", ["set", "diagnosis", "p_age", "p_sex"])
    test = summ[(summ.set == "test") & (summ.diagnosis != "all")]
    if len(test) and ((test.p_age < config["split"]["p_age_threshold"]).any()
                      or (test.p_sex < config["split"]["p_sex_threshold"]).any()):
        fails.append("test set not age- and sex-matched at the configured thresholds")
    return fails


def check_training(results: Path, config: dict, min_test_balanced_accuracy: float = 0.80) -> list[str]:
    """Every configured (fold, seed) model is in the summary and reaches the test balanced
    accuracy threshold (the demo's signal is planted)."""
    summary = read_tsv(results / "training" / "summary.tsv", ["fold", "seed", "set", "balanced_accuracy"],
                       dtype={"fold": str, "seed": str})
    folds = config["train"]["folds"]
    folds = range(config["split"]["n_folds"]) if folds is None else folds
    fails = []
    for f in folds:
        for s in config["train"]["seeds"]:
            rows = summary[(summary.fold == str(f)) & (summary.seed == str(s)) & (summary.set == "test")]
            if rows.empty:
                fails.append(f"fold {f} seed {s}: no test row in training/summary.tsv")
            elif not rows.balanced_accuracy.iloc[0] >= min_test_balanced_accuracy:
                fails.append(f"fold {f} seed {s}: test balanced accuracy {rows.balanced_accuracy.iloc[0]:.3f} "
                             f"< {min_test_balanced_accuracy}")
    return fails


def check_masks(results: Path, config: dict) -> list[str]:
    """Every group mask drives the mean target probability of its masked, correctly classified
    validation images below 0.5 and is neither empty nor full (0 < coverage < 0.5); the sweep
    shows the study's trends (coverage falls with l1, b1 = 2 densest; the l2 trend is reported
    by :func:`note_mask_l2_trend`)."""
    from .masks import sweep_trend_failures

    table = read_tsv(results / "masks" / "summary.tsv", ["kind", "cohort", "target", "fold", "seed", "coverage",
                                                         "probability_after"], dtype={"participant_id": str})
    fails = []
    group = table[table.kind == "group"]
    expected = len(config["data"]["cohorts"]) * len(config["masks"]["targets"]) * len(rmconfig.trained_models(config))
    if len(group) != expected:
        fails.append(f"{len(group)} group masks in masks/summary.tsv, expected {expected}")
    for _, r in group.iterrows():
        name = f"group mask {r.cohort} {r.target} fold {r.fold} seed {r.seed}"
        if not r.probability_after < 0.5:
            fails.append(f"{name}: mean masked {r.target} probability {r.probability_after:.3g} >= 0.5")
        if not 0 < r.coverage < 0.5:
            fails.append(f"{name}: coverage {r.coverage:.4f} not in (0, 0.5)")
    return fails + sweep_trend_failures(table[table.kind == "sweep"], params=("b1", "l1"))


def note_mask_l2_trend(results: Path, config: dict) -> list[str]:
    """The study's third sweep trend (coverage grows with l2) does not hold on the demo cohort at
    4.5 mm (docs/development.md, "Figures measured during development"): reported, not failed."""
    from .masks import sweep_trend_failures

    table = read_tsv(results / "masks" / "summary.tsv", ["kind", "coverage"], dtype={"participant_id": str})
    return sweep_trend_failures(table[table.kind == "sweep"], params=("l2",))


def check_saliency(results: Path, config: dict) -> list[str]:
    """Every method has maps for every model, finite, not constant, on the working grid (whether
    each beats Random-CAM is reported by :func:`note_beats_random`)."""
    import numpy as np

    from .grid import working_grid
    from .io import load_nifti
    from .similarity import ID_COLUMNS

    fails = []
    grid = working_grid(config)
    kept = config.get("storage", {}).get("keep_session_maps", False)
    roi = None  # the ROI-vector table, read once if a stack was deleted
    for method in config["saliency"]["methods"]:
        for f, s in rmconfig.saliency_models(config):
            folder = results / "saliency" / method / f"fold-{f}" / f"seed-{s}"
            if not (folder / "maps.nii.gz").exists() and not kept and method != "actmax":
                # a temp() stack, deleted once read: check what the ROI vectors kept of it
                if roi is None:
                    roi = read_tsv(results / "analysis" / "roi_vectors.tsv", ID_COLUMNS,
                                   dtype={"participant_id": str, "point": str})
                fails += _session_rows_failures(roi, folder, method, f, s, ID_COLUMNS)
                continue
            if not (folder / "maps.nii.gz").exists():
                fails.append(f"{method} fold {f} seed {s}: no maps")
                continue
            data, affine = load_nifti(folder / "maps.nii.gz", squeeze=False)
            data = data.reshape(*data.shape[:3], -1)
            if not grid.matches(data.shape[:3], affine):
                fails.append(f"{method} fold {f} seed {s}: maps not on the working grid")
            if not np.isfinite(data).all():
                fails.append(f"{method} fold {f} seed {s}: non-finite values")
            flat = data.reshape(-1, data.shape[-1])
            # Random-CAM ends with the reference implementation's ReLU: a draw whose weighted sum is
            # negative everywhere is an all-zero map, a legitimate chance baseline
            if method != "randomcam" and (flat.std(0) == 0).any():
                fails.append(f"{method} fold {f} seed {s}: {(flat.std(0) == 0).sum()} constant map(s)")
    return fails


def note_beats_random(results: Path, config: dict) -> list[str]:
    """Every real method beats Random-CAM by the paired test of the faithfulness summary (deletion
    AUC significantly lower and insertion AUC significantly higher over (image, model) pairs;
    robustmaps.saliency.maps.faithfulness_table). A method that does not is a finding about the
    method on this cohort, not a broken workflow: reported with its numbers, never failed."""
    cols = ["method", "n_pairs", "deletion_auc", "insertion_auc", "deletion_diff", "deletion_diff_lo",
            "deletion_diff_hi", "deletion_p", "insertion_diff", "insertion_diff_lo", "insertion_diff_hi",
            "insertion_p", "beats_random"]
    table = read_tsv(results / "saliency" / "faithfulness_summary.tsv", cols)
    if "randomcam" not in set(table.method):
        return ["no Random-CAM in saliency.methods: no method is compared with the chance baseline"]
    notes = []
    for r in table.itertuples():
        if r.method == "randomcam" or str(r.beats_random) == "True":
            continue
        notes.append(f"{r.method}: does not beat Random-CAM significantly over {r.n_pairs:.0f} (image, model) pairs: "
                     f"deletion AUC {r.deletion_auc:.3f}, minus Random-CAM's {r.deletion_diff:+.3f} "
                     f"[{r.deletion_diff_lo:+.3f}, {r.deletion_diff_hi:+.3f}] p = {r.deletion_p:.3g}; insertion AUC "
                     f"{r.insertion_auc:.3f}, minus Random-CAM's {r.insertion_diff:+.3f} "
                     f"[{r.insertion_diff_lo:+.3f}, {r.insertion_diff_hi:+.3f}] p = {r.insertion_p:.3g}")
    return notes


def _session_rows_failures(roi, folder: Path, method: str, fold, seed, id_columns) -> list[str]:
    """The ROI vectors (table ``roi``) of one method's per-session maps: one per session of its
    index, finite, not flat."""
    import numpy as np

    what = f"{method} fold {fold} seed {seed}"
    index = read_tsv(folder / "index.tsv", ["session_id"], dtype={"participant_id": str, "session_id": str})
    rows = roi[(roi.kind == "saliency_session") & (roi.method == method) & (roi.fold.astype(str) == str(fold))
               & (roi.seed.astype(str) == str(seed))]
    values = rows.drop(columns=id_columns).to_numpy(float)
    if len(rows) != len(index):
        return [f"{what}: {len(rows)} ROI vectors of per-session maps for {len(index)} sessions"]
    if not np.isfinite(values).all():
        return [f"{what}: non-finite ROI vectors"]
    flat = int((values.std(1) == 0).sum())
    if method == "randomcam":  # all-zero maps are legitimate (see check_saliency)
        return []
    return [f"{what}: {flat} constant ROI vector(s) of per-session maps"] if flat else []


def check_regions(results: Path, config: dict, min_auc: float = 0.8) -> list[str]:
    """Every main-cohort AD group mask has a planted ROI among its top 10, their mean planted-ROI
    ROC AUC is >= 0.8, and intra-subject similarity of session masks exceeds inter-subject."""
    from .analysis import top_rois
    from .similarity import ID_COLUMNS

    fails = []
    analysis = results / "analysis"
    table = read_tsv(analysis / "roi_vectors.tsv", ID_COLUMNS, dtype={"participant_id": str, "point": str})
    rois = [c for c in table.columns if c not in ID_COLUMNS]
    truth = read_tsv(results / "cohort" / "main" / "ground_truth.tsv", ["roi_name", "weight"])
    planted = set(truth.roi_name[truth.weight > 0])
    groups = table[(table.kind == "group") & (table.method == "mask") & (table.cohort == "main")
                   & (table.target == "AD")]
    top = top_rois(groups, rois, k=10)
    for f, s in zip(groups.fold, groups.seed):
        g = top[(top.fold == f) & (top.seed == s)]
        if not planted & set(g.roi):
            fails.append(f"group mask fold {f} seed {s}: no planted ROI among its top 10 "
                         f"({', '.join(g.roi) or 'an empty mask'})")
    rec = read_tsv(analysis / "regions" / "recovery.tsv", ["kind", "roc_auc"], dtype={"participant_id": str})
    g = rec[(rec.kind == "group") & (rec.method == "mask") & (rec.cohort == "main") & (rec.target == "AD")]
    if not g.roc_auc.mean() >= min_auc:
        fails.append(f"mean planted-ROI ROC AUC of the group masks {g.roc_auc.mean():.3f} < {min_auc}")
    summary = read_tsv(analysis / "similarity" / "summary.tsv", ["family", "mean"]).set_index("family")["mean"]
    if {"intra_subject", "inter_subject"} <= set(summary.index):
        if not summary["intra_subject"] > summary["inter_subject"]:
            fails.append(f"intra-subject similarity {summary['intra_subject']:.3f} <= inter-subject "
                         f"{summary['inter_subject']:.3f}")
    else:
        fails.append("no intra- and inter-subject pairs of session masks")
    return fails


CHECKS = {
    "QC rejects planted defects": check_qc,
    "planted atrophy visible on the working grid": check_planted_signal,
    "splits are sound and matched": check_splits,
    "every model reaches test balanced accuracy 0.80": check_training,
    "group masks work; the sweep's l1 and b1 trends are the study's": check_masks,
    "every saliency method maps every model": check_saliency,
    "group masks find the planted ROIs; intra-subject > inter-subject similarity": check_regions,
}

#: Known deviations from the sources on the demo cohort: printed as notes, never failures.
NOTES = {
    "the sweep's l2 trend (coverage grows with l2)": note_mask_l2_trend,
    "every real saliency method beats Random-CAM (paired test, deletion and insertion AUC)": note_beats_random,
}


def main(argv: list[str]) -> int:
    results = Path(argv[0] if argv else "results")
    config = rmconfig.load(argv[1] if len(argv) > 1 else "config/config.yaml")
    failed = 0
    for name, fn in CHECKS.items():
        problems = fn(results, config)
        failed += bool(problems)
        print(f"{'FAIL' if problems else 'ok  '} {name}" + "".join(f"\n     - {p}" for p in problems))
    for name, fn in NOTES.items():
        problems = fn(results, config)
        print(f"{'note' if problems else 'ok  '} {name}" + "".join(f"\n     - {p}" for p in problems))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
