"""The masks' hyperparameter sweep (study 2.3.2, Tables 2-3; methods layer): one id per point,
its parsing, the one-parameter series and neighbouring points, and the study's trends.

Light on purpose (numpy and pandas only): the Snakefile reads the sweep's points from here."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .config import ConfigError


def point_id(b1: float, b2: float, l1: float, l2: float, lr: float | None = None) -> str:
    """Readable, path-safe id of a sweep point, e.g. ``b1-0.1_b2-1_l1-1e-04_l2-1e-03`` (one
    formatting for every rule, so that ids from config and from wildcards agree)."""
    def num(v: float) -> str:
        return f"{v:.0e}" if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e3) else f"{v:g}"

    out = f"b1-{num(b1)}_b2-{num(b2)}_l1-{num(l1)}_l2-{num(l2)}"
    return out if lr is None else f"{out}_lr-{num(lr)}"


def sweep_points(config: dict) -> dict[str, dict]:
    """Sweep point id -> its penalties and learning rate (the masks' lr where a point sets none)."""
    out = {}
    for p in config["masks"]["sweep"]["points"]:
        point = point_id(p["b1"], p["b2"], p["l1"], p["l2"], p.get("lr"))
        if point in out:  # two different points whose values print alike (ids keep 1 significant digit)
            raise ConfigError(f"config: masks.sweep.points: two points have the id {point} (ids keep one "
                              "significant digit below 0.01): make their values differ in it")
        out[point] = {"b1": p["b1"], "b2": p["b2"], "l1": p["l1"], "l2": p["l2"],
                      "lr": p.get("lr", config["masks"]["lr"])}
    return out


SWEEP_PARAMETERS = ("b1", "b2", "l1", "l2", "lr")
#: the values of a point (recorded in the masks' summary, one column each)
POINT_COLUMNS = ["point", *SWEEP_PARAMETERS]


def points_table(points: pd.DataFrame) -> pd.DataFrame:
    """One row per sweep point (:data:`POINT_COLUMNS`) from a table that records them, such as
    the masks' summary (every sweep mask's row), in the order the points first appear. A point
    recorded with two sets of values stops here."""
    sweep = points[points["kind"] == "sweep"] if "kind" in points else points
    missing = [c for c in POINT_COLUMNS if c not in sweep]
    if missing:
        raise ValueError(f"sweep points: no column {', '.join(missing)} in the table")
    table = sweep[POINT_COLUMNS].drop_duplicates().reset_index(drop=True)
    twice = table.point[table.point.duplicated()].tolist()
    if twice:
        raise ValueError(f"sweep points {twice} are recorded with different values")
    return table


def series(table: pd.DataFrame, keys=(), *, sort: bool = True) -> list[tuple[str, dict, pd.DataFrame]]:
    """The one-parameter series of a sweep (Tables 2-3, Figures 3-4): rows of ``table`` (one per
    point, or per point and ``keys``: target, model ...) that differ in exactly one of b1, b2,
    l1, l2, lr, two points or more -> (parameter, the other parameters' and the keys' values, the
    rows sorted by the parameter). Parameters in :data:`SWEEP_PARAMETERS` order; within one, the
    groups sorted by their values (``sort``) or in the order they first appear."""
    out = []
    keys = list(keys)
    for param in SWEEP_PARAMETERS:
        fixed = [p for p in SWEEP_PARAMETERS if p != param]
        for values, rows in table.groupby(keys + fixed, sort=sort):
            if rows[param].nunique() >= 2:
                out.append((param, dict(zip(keys + fixed, values)), rows.sort_values(param, kind="stable")))
    return out


def neighbours(table: pd.DataFrame) -> list[tuple[str, str, str]]:
    """Pairs of sweep points adjacent along a one-parameter series (``table``: :func:`points_table`)
    -> (point a, point b, parameter), a below b."""
    return [(a, b, param) for param, _, rows in series(table, sort=False)
            for a, b in zip(rows.point, rows.point.iloc[1:])]


def shown_fixed(fixed: dict, table: pd.DataFrame) -> dict:
    """The values a series' points share, as figures and tables label them: the penalties, and the
    learning rate only where the sweep's points do not all share it (an optimiser setting, not
    a penalty: most sweeps run every point with the masks' lr)."""
    return {k: v for k, v in fixed.items() if k in SWEEP_PARAMETERS and (k != "lr" or table.lr.nunique() > 1)}


def sweep_series(sweep: pd.DataFrame) -> list[tuple[str, dict, pd.DataFrame]]:
    """:func:`series` of a sweep table with a row per (point, target, model), grouped per target
    and model."""
    return series(sweep, [k for k in ("target", "fold", "seed") if k in sweep])


def sweep_trend_failures(sweep: pd.DataFrame, params=("b1", "l1", "l2")) -> list[str]:
    """The study's sweep trends (3.1) on a sweep table (one row per point: b1, b2, l1, l2, lr,
    coverage), for the series along ``params``: coverage falls as l1 grows and grows with l2
    (monotone, strictly from the first point to the last), and b1 = 2, where a series has it,
    gives the densest mask."""
    fails = []
    for param, fixed, rows in sweep_series(sweep):
        if param not in params:
            continue
        cov = rows.coverage.to_numpy()
        where = f"{param} series at " + ", ".join(f"{k}={v}" for k, v in fixed.items() if k in SWEEP_PARAMETERS)
        shown = ", ".join(f"{v:g}: {c:.4f}" for v, c in zip(rows[param], cov))
        if param == "l1" and not (np.all(np.diff(cov) <= 0) and cov[0] > cov[-1]):
            fails.append(f"{where}: coverage does not fall as l1 grows ({shown})")
        if param == "l2" and not (np.all(np.diff(cov) >= 0) and cov[0] < cov[-1]):
            fails.append(f"{where}: coverage does not grow with l2 ({shown})")
        if param == "b1" and (rows.b1 == 2).any() and rows.coverage[rows.b1 == 2].iloc[0] < cov.max():
            fails.append(f"{where}: b1 = 2 is not the densest mask ({shown})")
    return fails
