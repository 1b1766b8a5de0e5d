"""The masks' sweep (robustmaps.sweep): point ids, the one-parameter series and neighbours from
the points' recorded values, the labels of series."""

import pandas as pd
import pytest

from robustmaps.config import ConfigError
from robustmaps.sweep import neighbours, point_id, points_table, series, shown_fixed, sweep_points, sweep_series


def points(*values, ids=None):
    """A points table: (b1, b2, l1, l2, lr) per point; ids default to point_id's."""
    rows = [dict(zip(("b1", "b2", "l1", "l2", "lr"), v)) for v in values]
    return pd.DataFrame([{"point": (ids[i] if ids else point_id(**r)), **r} for i, r in enumerate(rows)])


def test_point_ids_are_readable_and_distinct():
    assert point_id(0.1, 1, 1e-4, 1e-3) == "b1-0.1_b2-1_l1-1e-04_l2-1e-03"
    assert point_id(2, 3, 0.1, 0.01, lr=0.1) == "b1-2_b2-3_l1-0.1_l2-0.01_lr-0.1"
    grid = [(b1, 1, 1e-4, 1e-3) for b1 in (0.1, 0.5, 1, 2)] + [(0.1, 1, l1, 1e-2) for l1 in (0.1, 0.01, 0.001, 1e-4)]
    assert len({point_id(*p) for p in grid}) == len(grid)


def test_sweep_series_groups_points_that_differ_in_one_parameter():
    rows = [{"b1": b1, "b2": 1, "l1": 1e-4, "l2": 1e-3, "lr": 0.1, "coverage": c} for b1, c in ((2, 0.9), (0.1, 0.1))]
    rows += [{"b1": 0.1, "b2": 1, "l1": 1e-3, "l2": 1e-3, "lr": 0.1, "coverage": 0.05},
             {"b1": 0.5, "b2": 2, "l1": 1e-2, "l2": 1e-2, "lr": 0.1, "coverage": 0.0}]  # alone: no series
    series = sweep_series(pd.DataFrame(rows).assign(target="AD", fold=0, seed=0))
    assert [(p, r[p].tolist()) for p, _, r in series] == [("b1", [0.1, 2]), ("l1", [1e-4, 1e-3])]
    assert series[1][1]["l2"] == 1e-3 and series[1][1]["b1"] == 0.1


def test_neighbours_follow_each_series_from_the_recorded_values_not_the_ids():
    """b1 series 0.1 - 0.5 - 2 (adjacent pairs only) and an l1 series 1e-4 - 1e-3 at b1 0.1; the
    ids are opaque names: only the values decide."""
    t = points((2, 1, 1e-4, 1e-3, 0.1), (0.1, 1, 1e-4, 1e-3, 0.1), (0.5, 1, 1e-4, 1e-3, 0.1),
               (0.1, 1, 1e-3, 1e-3, 0.1), ids=["p", "q", "r", "s"])
    assert neighbours(t) == [("q", "r", "b1"), ("r", "p", "b1"), ("q", "s", "l1")]
    # a different learning rate is another setting: no series joins the two
    t2 = points((0.1, 1, 1e-4, 0.1, 0.01), (0.1, 1, 1e-4, 1e-3, 0.1), (0.1, 1, 1e-4, 1e-2, 0.1), ids=["a", "b", "c"])
    assert neighbours(t2) == [("b", "c", "l2")]


def test_series_keep_first_appearance_order_unless_sorted():
    t = points((0.1, 1, 1e-3, 1e-3, 0.1), (0.5, 1, 1e-3, 1e-3, 0.1), (0.1, 1, 1e-4, 1e-3, 0.1),
               (0.5, 1, 1e-4, 1e-3, 0.1), ids=list("abcd"))
    b1 = [(f["l1"], r.point.tolist()) for p, f, r in series(t, sort=False) if p == "b1"]
    assert b1 == [(1e-3, ["a", "b"]), (1e-4, ["c", "d"])]
    assert [f["l1"] for p, f, _ in series(t) if p == "b1"] == [1e-4, 1e-3]


def test_labels_show_the_learning_rate_only_where_the_sweep_varies_it():
    same = points((0.1, 1, 1e-4, 1e-3, 0.1), (2, 1, 1e-4, 1e-3, 0.1))
    (_, fixed, _), = series(same)
    assert shown_fixed(fixed, same) == {"b2": 1, "l1": 1e-4, "l2": 1e-3}
    varied = points((0.1, 1, 1e-4, 1e-3, 0.1), (2, 1, 1e-4, 1e-3, 0.1), (0.1, 1, 1e-4, 0.1, 0.01))
    (_, fixed, _), = series(varied)
    assert shown_fixed(fixed, varied) == {"b2": 1, "l1": 1e-4, "l2": 1e-3, "lr": 0.1}


def test_points_table_reads_the_masks_summary_and_refuses_two_values_for_one_point():
    summary = pd.DataFrame([
        {"kind": "group", "point": "", "b1": 0.1, "b2": 1, "l1": 1e-4, "l2": 1e-2, "lr": 0.1, "coverage": 0.2},
        {"kind": "sweep", "point": "x", "b1": 2, "b2": 1, "l1": 1e-4, "l2": 1e-3, "lr": 0.1, "coverage": 0.3},
        {"kind": "sweep", "point": "x", "b1": 2, "b2": 1, "l1": 1e-4, "l2": 1e-3, "lr": 0.1, "coverage": 0.4},
        {"kind": "sweep", "point": "y", "b1": 0.1, "b2": 1, "l1": 1e-4, "l2": 1e-3, "lr": 0.1, "coverage": 0.1}])
    t = points_table(summary)
    assert t.point.tolist() == ["x", "y"] and t.b1.tolist() == [2, 0.1]
    with pytest.raises(ValueError, match=r"\['x'\] are recorded with different values"):
        points_table(summary.assign(l2=[1e-2, 1e-3, 1e-4, 1e-3]))
    with pytest.raises(ValueError, match="no column lr"):
        points_table(summary.drop(columns="lr"))


def test_sweep_points_refuse_two_points_that_share_an_id():
    """Ids keep one significant digit below 0.01: 1.2e-4 and 1.4e-4 both print 1e-04."""
    cfg = {"masks": {"lr": 0.1, "sweep": {"points": [{"b1": 0.1, "b2": 1, "l1": 1.2e-4, "l2": 1e-3},
                                                     {"b1": 0.1, "b2": 1, "l1": 1.4e-4, "l2": 1e-3}]}}}
    with pytest.raises(ConfigError, match="two points have the id b1-0.1_b2-1_l1-1e-04_l2-1e-03"):
        sweep_points(cfg)
    cfg["masks"]["sweep"]["points"][1]["l1"] = 1e-3
    assert list(sweep_points(cfg).values())[0] == {"b1": 0.1, "b2": 1, "l1": 1.2e-4, "l2": 1e-3, "lr": 0.1}
