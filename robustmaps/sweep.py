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


def parse_point(point: str) -> dict[str, float]:
    """``b1-0.1_b2-1_l1-1e-04_l2-1e-03[_lr-0.01]`` -> {"b1": 0.1, ...} (inverse of :func:`point_id`)."""
    out = {}
    for part in point.split("_"):
        key, value = part.split("-", 1)
        out[key] = float(value)
    return out


def sweep_neighbours(points: list[str]) -> list[tuple[str, str, str]]:
    """Pairs of sweep points that differ in one parameter and are adjacent along it (among the
    points that share the other values) -> (a, b, parameter)."""
    parsed = {p: parse_point(p) for p in points}
    out = []
    keys = sorted({k for v in parsed.values() for k in v})
    for param in keys:
        groups: dict[tuple, list[str]] = {}
        for p, v in parsed.items():
            rest = tuple((k, v.get(k)) for k in keys if k != param)
            groups.setdefault(rest, []).append(p)
        for members in groups.values():
            ordered = sorted(members, key=lambda p: parsed[p].get(param, np.nan))
            out += [(a, b, param) for a, b in zip(ordered, ordered[1:])]
    return out


def point_series(points: list[str]) -> list[tuple[str, dict, list[str]]]:
    """The one-parameter series among sweep point ids (the study's Figures 3-4 and Tables 2-3):
    points that share every other value, two or more of them, sorted by the varied parameter ->
    (parameter, the fixed values, points). A point without ``lr`` has the masks' default lr."""
    parsed = {p: parse_point(p) for p in points}
    keys = [k for k in ("b1", "b2", "l1", "l2", "lr") if any(k in v for v in parsed.values())]
    out = []
    for param in keys:
        groups: dict[tuple, list[str]] = {}
        for p, v in parsed.items():
            groups.setdefault(tuple((k, v.get(k)) for k in keys if k != param), []).append(p)
        for rest, members in groups.items():
            if len({parsed[m].get(param) for m in members}) >= 2:
                ordered = sorted(members, key=lambda m: parsed[m].get(param, np.nan))
                out.append((param, {k: v for k, v in rest if v is not None}, ordered))
    return out


SWEEP_PARAMETERS = ("b1", "b2", "l1", "l2", "lr")


def sweep_series(sweep: pd.DataFrame) -> list[tuple[str, dict, pd.DataFrame]]:
    """The one-parameter series of a sweep (Tables 2-3): points that differ in exactly one of
    b1, b2, l1, l2, lr, grouped per (model, target). Returns (parameter, fixed values, rows
    sorted by the parameter) for every series of two points or more."""
    out = []
    keys = [k for k in ("target", "fold", "seed") if k in sweep]
    for param in SWEEP_PARAMETERS:
        fixed = [p for p in SWEEP_PARAMETERS if p != param]
        for values, rows in sweep.groupby(keys + fixed, sort=True):
            if rows[param].nunique() >= 2:
                out.append((param, dict(zip(keys + fixed, values)), rows.sort_values(param)))
    return out


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
