"""Similarity families (robustmaps.similarity) on a hand-made ROI-vector table."""

import numpy as np
import pandas as pd
import pytest

from robustmaps.io import InputError
from robustmaps.similarity import similarities, summary

ROIS = ["R1", "R2", "R3"]


def row(kind, vec, method="mask", cohort="main", target="AD", fold=0, seed=0, point="", pid="", ses="",
        baseline=""):
    return {"kind": kind, "method": method, "cohort": cohort, "target": target, "fold": fold, "seed": seed,
            "point": point, "participant_id": pid, "session_id": ses, "baseline": baseline,
            **dict(zip(ROIS, vec))}


def test_families_pick_the_right_pairs_and_cosines():
    rows = [
        row("group", [1, 0, 0], fold=0, seed=0), row("group", [1, 1, 0], fold=1, seed=0),
        row("group", [0, 1, 0], fold=0, seed=1), row("group", [1, 0, 0], fold=1, seed=1),
        row("group", [1, 0, 1], cohort="independent", fold=0, seed=0),
        row("group", [0, 0, 1], target="CN", fold=0, seed=0),  # another target: in no AD family
        row("session", [1, 0, 0], pid="sub-1", ses="ses-M000", baseline=True),
        row("session", [2, 0, 0], pid="sub-1", ses="ses-M012", baseline=False),
        row("session", [0, 1, 0], pid="sub-2", ses="ses-M000", baseline=True),
        row("saliency", [0, 0, 1], method="gradcam"), row("sobol", [1, 0, 0], method="sobol"),
    ]
    table = pd.DataFrame(rows)
    pairs = similarities(table, ROIS)
    fam = pairs.groupby("family").cosine.apply(list).to_dict()
    assert sorted(fam["folds"]) == pytest.approx(sorted([1 / np.sqrt(2), 0.0]))  # seed 0: f0-f1; seed 1: f0-f1
    assert sorted(fam["seeds"]) == pytest.approx(sorted([0.0, 1 / np.sqrt(2)]))  # fold 0; fold 1
    assert fam["cohorts"] == pytest.approx([1 / np.sqrt(2)])
    assert fam["intra_subject"] == pytest.approx([1.0]) and fam["inter_subject"] == pytest.approx([0.0])
    # methods: fold 0 seed 0 AD mask, gradcam, sobol: three pairs
    assert sorted(fam["methods"]) == pytest.approx(sorted([0.0, 1.0, 0.0]))
    s = summary(pairs, n_boot=200)
    assert list(s.family) == ["cohorts", "intra_subject", "inter_subject", "folds", "seeds", "methods"]
    s = s.set_index("family")
    assert s.loc["folds", "mean"] == pytest.approx(np.mean([1 / np.sqrt(2), 0.0]))
    # units: the statistics resample models / subjects, the members of the pairs
    folds = pairs[pairs.family == "folds"]
    assert {(a, b) for a, b in zip(folds.unit_a, folds.unit_b)} == {("fold-0/seed-0", "fold-1/seed-0"),
                                                                      ("fold-0/seed-1", "fold-1/seed-1")}
    assert s.loc["folds", "n_units"] == 4 and s.loc["intra_subject", "n_units"] == 1
    assert s.loc["methods", "n_units"] == 1 and s.loc["inter_subject", "n_units"] == 2
    assert (s.ci_low <= s["mean"] + 1e-12).all() and (s["mean"] <= s.ci_high + 1e-12).all()


def test_roi_table_reads_masks_maps_stacks_and_sobol(tmp_path):
    from robustmaps.io import save_nifti, write_tsv
    from robustmaps.jobs.analysis import roi_table

    affine = np.eye(4)
    atlas = np.zeros((4, 4, 2), np.int16)
    atlas[:2] = 1
    atlas[2:, :2] = 2
    atlas[2:, 2:] = 3
    save_nifti(atlas, affine, tmp_path / "atlas.nii.gz", dtype=np.int16)
    write_tsv(pd.DataFrame({"index": [1, 2, 3], "name": ROIS}), tmp_path / "labels.tsv")
    mask = np.ones(atlas.shape, np.float32)
    mask[atlas == 2] = 0.0  # the mask perturbs ROI R2 only
    save_nifti(mask, affine, tmp_path / "mask.nii.gz")
    stack = np.stack([(atlas == 1).astype(np.float32), (atlas == 3).astype(np.float32)], -1)
    save_nifti(stack, affine, tmp_path / "maps.nii.gz")
    write_tsv(pd.DataFrame({"participant_id": ["sub-1", "sub-1"], "session_id": ["ses-M012", "ses-M000"]}),
              tmp_path / "index.tsv")
    write_tsv(pd.DataFrame({"n": 8, "roi": ROIS * 2, "ST": [0.1, 0.2, 0.7, 9, 9, 9],
                            "images": ["AD"] * 3 + ["CN"] * 3}),
              tmp_path / "sobol.tsv")
    entries = [{"kind": "group", "method": "mask", "source": "mask", "fold": 0, "seed": 0,
                "path": tmp_path / "mask.nii.gz"},
               {"kind": "saliency_session", "method": "gradcam", "source": "map", "fold": 0, "seed": 0,
                "path": tmp_path / "maps.nii.gz", "index": tmp_path / "index.tsv"},
               {"kind": "sobol", "method": "sobol", "source": "sobol", "fold": 0, "seed": 0,
                "path": tmp_path / "sobol.tsv"}]
    # the store index defines the baseline (here a caps.baseline_column made ses-M012 the baseline,
    # not the earliest session id): the ROI table takes it from there, not from the session ids
    store_index = pd.DataFrame({"participant_id": ["sub-1", "sub-1"], "session_id": ["ses-M000", "ses-M012"],
                                "baseline": [False, True]})
    raw = roi_table(entries, tmp_path / "atlas.nii.gz", tmp_path / "labels.tsv", map_normalisation="none",
                    store_index=store_index)
    # masks: the study's sum of 1 - m over the ROI (R2 has 8 voxels); maps: the mean
    np.testing.assert_allclose(raw[ROIS].to_numpy(), [[0, 8, 0], [1, 0, 0], [0, 0, 1], [0.1, 0.2, 0.7]])
    mean = roi_table(entries, tmp_path / "atlas.nii.gz", tmp_path / "labels.tsv", map_normalisation="none",
                     store_index=store_index, mask_reduction="mean")
    np.testing.assert_allclose(mean[ROIS].to_numpy()[0], [0, 1, 0])
    # default: maps (not masks, not Sobol) minus their brain mean (16 / 32 and 8 / 32 of the voxels are 1),
    # clipped at 0
    t = roi_table(entries, tmp_path / "atlas.nii.gz", tmp_path / "labels.tsv", store_index=store_index)
    np.testing.assert_allclose(t[ROIS].to_numpy(), [[0, 8, 0], [0.5, 0, 0], [0, 0, 0.75], [0.1, 0.2, 0.7]])
    with pytest.raises(ValueError, match="map_normalisation"):
        roi_table(entries, tmp_path / "atlas.nii.gz", tmp_path / "labels.tsv", map_normalisation="zscore",
                  store_index=store_index)
    assert list(t.session_id[1:3]) == ["ses-M012", "ses-M000"] and list(t.baseline[1:3]) == [True, False]
    with pytest.raises(InputError, match="sub-1/ses-M000 are not in the cohort's store index"):
        roi_table(entries, tmp_path / "atlas.nii.gz", tmp_path / "labels.tsv", store_index=store_index.iloc[1:])


def test_top_rois_and_planted_roi_recovery():
    from robustmaps.roi import recovery, top_rois

    rois = ["A", "B", "C", "D"]
    table = pd.DataFrame([row("group", []) | dict(zip(rois, v)) for v in
                          ([0.9, 0.1, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0], [0.1, 0.8, 0.2, 0.3])])
    top = top_rois(table, rois, k=2)
    assert list(top.roi) == ["A", "C", "B", "D"] and list(top["rank"]) == [1, 2, 1, 2]  # the zero vector: none
    rec = recovery(table, rois, planted=["A", "C"])
    assert list(rec.roc_auc) == pytest.approx([1.0, 0.5, 0.0])  # row 3: A, C below both other ROIs
    assert list(rec.precision_at_k) == pytest.approx([1.0, 0.5, 0.0])


def test_intra_subject_similarity_is_the_mean_over_subjects_of_their_mean_pair():
    """Study 2.3.4: a subject's intra-subject similarity is the mean over its session pairs; the
    family's is the mean over subjects. sub-1 has 3 sessions (3 pairs), sub-2 has 2 (1 pair): the
    mean over pairs would weigh sub-1 three times."""
    rows = [row("session", [1, 0, 0], pid="sub-1", ses="ses-M000", baseline=True),
            row("session", [2, 0, 0], pid="sub-1", ses="ses-M006", baseline=False),
            row("session", [1, 1, 0], pid="sub-1", ses="ses-M012", baseline=False),
            row("session", [0, 1, 0], pid="sub-2", ses="ses-M000", baseline=True),
            row("session", [0, 0, 1], pid="sub-2", ses="ses-M012", baseline=False)]
    pairs = similarities(pd.DataFrame(rows), ROIS)
    intra = pairs[pairs.family == "intra_subject"]
    assert sorted(intra.cosine) == pytest.approx(sorted([1.0, 1 / np.sqrt(2), 1 / np.sqrt(2), 0.0]))
    sub1, sub2 = (1 + 2 / np.sqrt(2)) / 3, 0.0
    s = summary(pairs, n_boot=500).set_index("family")
    assert s.loc["intra_subject", "mean"] == pytest.approx((sub1 + sub2) / 2)  # not (1 + 2 / sqrt 2) / 4
    assert s.loc["intra_subject", "mean"] != pytest.approx(intra.cosine.mean())
    assert s.loc["intra_subject", "sd"] == pytest.approx(np.std([sub1, sub2], ddof=1))
    assert s.loc["intra_subject", ["n_pairs", "n_units"]].tolist() == [4, 2]
    # the CI: a bootstrap over the 2 subjects of the mean of their means (draws: both sub-1, mixed, both sub-2)
    assert s.loc["intra_subject", "ci_low"] == pytest.approx(sub2) and s.loc["intra_subject", "ci_high"] == \
        pytest.approx(sub1)
    # inter-subject stays the mean over its pairs (baseline sessions of two subjects: one pair here)
    assert s.loc["inter_subject", "mean"] == pytest.approx(0.0)


def test_prob_cnn_intra_subject_family_is_the_mean_over_subjects():
    from robustmaps.transfer import PROB_COLUMNS
    from robustmaps.similarity import prob_cnn_summary

    def pair(family, pa, sa, pb, sb, p):
        return {"family": family, "fold_a": 0, "seed_a": 0, "fold_b": 0, "seed_b": 0, "participant_a": pa,
                "session_a": sa, "participant_b": pb, "session_b": sb, "probability": p, "n_images": 1}

    ses1 = ["ses-M000", "ses-M006", "ses-M012"]
    rows = [pair("intra_subject", "sub-1", a, "sub-1", b, 0.1) for a in ses1 for b in ses1 if a != b]  # 6 pairs
    rows += [pair("intra_subject", "sub-2", "ses-M000", "sub-2", "ses-M012", 0.7),
             pair("intra_subject", "sub-2", "ses-M012", "sub-2", "ses-M000", 0.9)]
    rows += [pair("inter_subject", "sub-1", "ses-M000", "sub-2", "ses-M000", 0.4),
             pair("inter_subject", "sub-2", "ses-M000", "sub-1", "ses-M000", 0.6),
             pair("own", "", "", "", "", 0.01)]
    s = prob_cnn_summary(pd.DataFrame(rows, columns=PROB_COLUMNS)).set_index("family")
    assert s.loc["intra_subject", "mean"] == pytest.approx((0.1 + 0.8) / 2)  # over pairs: (0.6 + 1.6) / 8
    assert s.loc["intra_subject", "sd"] == pytest.approx(np.std([0.1, 0.8], ddof=1))
    assert s.loc["intra_subject", "n_pairs"] == 8
    assert s.loc["inter_subject", "mean"] == pytest.approx(0.5) and s.loc["own", "n_pairs"] == 1
    assert list(s.index) == ["inter_subject", "intra_subject", "own"]


def parse(point: str) -> dict:
    """b1-0.1_b2-1_l1-1e-04_l2-1e-03 -> its values (lr: the masks' 0.1), for hand-made tables."""
    return {"lr": 0.1, **{k: float(v) for k, v in (part.split("-", 1) for part in point.split("_"))}}


def test_sweep_tables_pairs_each_series_points_with_the_studys_printed_value():
    import pandas as pd

    from robustmaps.roi import ID_COLUMNS
    from robustmaps.similarity import published_cosine, sweep_tables

    base = dict.fromkeys(ID_COLUMNS, "")
    vec = {"b1-0.1_b2-1_l1-1e-04_l2-1e-03": [1.0, 0.0], "b1-0.5_b2-1_l1-1e-04_l2-1e-03": [1.0, 1.0],
           "b1-2_b2-1_l1-1e-04_l2-1e-03": [0.0, 1.0]}
    rows = [{**base, "kind": "sweep", "method": "mask", "target": "AD", "fold": f, "seed": 0, "point": p,
             "r1": v[0], "r2": v[1]} for p, v in vec.items() for f in (0, 1)]
    rows.append({**base, "kind": "group", "method": "mask", "target": "AD", "fold": 0, "seed": 0, "r1": 5, "r2": 5})
    pts = pd.DataFrame([{"point": p, **parse(p)} for p in vec])
    t = sweep_tables(pd.DataFrame(rows), ["r1", "r2"], pts)
    assert len(t) == 3 and set(t.parameter) == {"b1"} and set(t.table) == {"Table 2A"}
    got = {(r.a, r.b): r for r in t.itertuples()}
    assert got[(0.1, 0.5)].cosine == pytest.approx(2 ** -0.5) and got[(0.1, 0.5)].n_models == 2
    assert got[(0.1, 2.0)].cosine == pytest.approx(0.0)
    assert got[(0.1, 0.5)].neighbours and got[(0.5, 2.0)].neighbours and not got[(0.1, 2.0)].neighbours
    # the printed values: Table 2A 0.1 vs 0.5 0.98, 0.5 vs 2 0.36, 0.1 vs 2 0.32
    assert [got[k].study_cosine for k in ((0.1, 0.5), (0.5, 2.0), (0.1, 2.0))] == [0.98, 0.36, 0.32]
    assert published_cosine("l1", 1e-4, 0.1) == 0.83 and published_cosine("l2", 1e-4, 1e-3) == 0.96
    assert np.isnan(published_cosine("l1", 3e-3, 1e-4)) and np.isnan(published_cosine("lr", 0.1, 0.01))


def test_sweep_families_pair_points_by_their_recorded_values():
    """sweep_all: every pair of one model's points; sweep_neighbours: adjacent points of a series,
    read from the points' values (the ids here say nothing); a point without values stops."""
    rows = [row("sweep", v, point=p) for p, v in (("p", [1, 0, 0]), ("q", [1, 1, 0]), ("r", [0, 1, 0]))]
    pts = pd.DataFrame({"point": ["q", "p", "r"], "b1": [0.1, 2, 0.5], "b2": 1, "l1": 1e-4, "l2": 1e-3, "lr": 0.1})
    pairs = similarities(pd.DataFrame(rows), ROIS, points=pts)
    assert len(pairs[pairs.family == "sweep_all"]) == 3
    near = pairs[pairs.family == "sweep_neighbours"]
    assert {(a.split("/")[-1], b.split("/")[-1]) for a, b in zip(near.a, near.b)} == {("q", "r"), ("r", "p")}
    assert set(near.detail) == {"b1"} and near.cosine.tolist() == pytest.approx([2 ** -0.5, 0.0])
    with pytest.raises(ValueError, match=r"sweep points \['r'\] have no recorded values"):
        similarities(pd.DataFrame(rows), ROIS, points=pts[pts.point != "r"])


def test_prob_cnn_families_between_models_follow_fold_and_seed():
    """Mask A on model B: own (A = B), folds (other fold, same seed), seeds (same fold, other
    seed), other; the probability is the mean over B's images, NaN when B has none."""
    from robustmaps.transfer import between_models

    class Fixed:  # stands for a transfer.Scorer: B's scores of its images under a mask
        def __init__(self, values):
            self.values = np.asarray(values, float)

        def scores(self, store, mask):
            return self.values * mask

    keys = [(0, 0), (1, 0), (0, 1), (1, 1)]
    scorers = {k: Fixed([0.2, 0.4] if k != (1, 1) else []) for k in keys}
    masks = {k: 1.0 + i for i, k in enumerate(keys)}
    rows = {(r["fold_a"], r["seed_a"], r["fold_b"], r["seed_b"]): r for r in between_models(scorers, masks, None)}
    assert len(rows) == 16
    assert rows[(0, 0, 0, 0)]["family"] == "own" and rows[(0, 0, 1, 0)]["family"] == "folds"
    assert rows[(0, 0, 0, 1)]["family"] == "seeds" and rows[(0, 0, 1, 1)]["family"] == "other"
    assert rows[(1, 0, 0, 0)]["probability"] == pytest.approx(0.3 * 2.0) and rows[(1, 0, 0, 0)]["n_images"] == 2
    assert np.isnan(rows[(0, 0, 1, 1)]["probability"]) and rows[(0, 0, 1, 1)]["n_images"] == 0
