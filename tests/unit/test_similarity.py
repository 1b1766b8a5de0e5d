"""Similarity families (robustmaps.similarity) on a hand-made ROI-vector table."""

import numpy as np
import pandas as pd
import pytest

from robustmaps.similarity import parse_point, similarities, summary, sweep_neighbours

ROIS = ["R1", "R2", "R3"]


def row(kind, vec, method="mask", cohort="main", target="AD", fold=0, seed=0, point="", pid="", ses="",
        baseline=""):
    return {"kind": kind, "method": method, "cohort": cohort, "target": target, "fold": fold, "seed": seed,
            "point": point, "participant_id": pid, "session_id": ses, "baseline": baseline,
            **dict(zip(ROIS, vec))}


def test_parse_point_inverts_point_id_and_neighbours_follow_each_series():
    from robustmaps.config import point_id

    assert parse_point(point_id(0.1, 1, 1e-4, 1e-3)) == {"b1": 0.1, "b2": 1, "l1": 1e-4, "l2": 1e-3}
    assert parse_point(point_id(0.1, 1, 1e-4, 1e-3, 0.01))["lr"] == 0.01
    pts = [point_id(b1, 1, 1e-4, 1e-3) for b1 in (2, 0.1, 0.5)] + [point_id(0.1, 1, 1e-3, 1e-3)]
    pairs = {(parse_point(a)["b1"], parse_point(a)["l1"], parse_point(b)["b1"], parse_point(b)["l1"], p)
             for a, b, p in sweep_neighbours(pts)}
    # b1 series 0.1 - 0.5 - 2 (adjacent only), l1 series 1e-4 - 1e-3 at b1 0.1
    assert pairs == {(0.1, 1e-4, 0.5, 1e-4, "b1"), (0.5, 1e-4, 2, 1e-4, "b1"), (0.1, 1e-4, 0.1, 1e-3, "l1")}


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
    s = summary(pairs)
    assert list(s.family) == ["cohorts", "intra_subject", "inter_subject", "folds", "seeds", "methods"]
    assert s.set_index("family").loc["folds", "mean"] == pytest.approx(np.mean([1 / np.sqrt(2), 0.0]))
