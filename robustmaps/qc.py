"""Quality check of a cohort's gray-matter maps (study 2.3.1) and label mapping.

Every session of the session table gets one row in ``qc.tsv``:
- ``excluded``: its diagnosis is not in ``data.labels`` after ``data.diagnoses`` (e.g. MCI in a
  real ADNI table), the subject's diagnosis changes across sessions (not a stable CN / AD
  subject), its age or sex is blank (``caps.blank_demographics: exclude``), or its GM map is
  missing (``caps.missing: exclude``: Clinica failed on it). Counted, not an error.
- ``fail``: the image is not a usable GM map: not 3D, grid (shape / affine, read on RAS+ storage
  so that any flip or permutation of the cohort grid passes) different from the cohort grid, NaN
  or Inf values, negative values or, for a probability map, values above 1 (beyond
  ``qc.value_tolerance``), empty, or maximum GM below ``qc.min_max_gm`` (0.95).
- ``pass``: used downstream.
A file that cannot be read at all (truncated, corrupt, broken header) is not a QC matter but broken
input: it stops the workflow with a message naming the file.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd

from .grid import Grid, describe_affine
from .io import (
    InputError,
    blank_demographics_reason,
    load_nifti,
    missing_file_reason,
)
from .parallel import pmap

log = logging.getLogger(__name__)

#: Values a GM map may overshoot its range by (interpolation in SPM's normalisation), below 0 and,
#: for a probability map, above 1.
VALUE_TOLERANCE = 0.01

QC_COLUMNS = ["participant_id", "session_id", "diagnosis", "label", "age", "sex", "status",
              "reason", "max_value", "path"]


def check_image(path: str, grid: Grid, min_max: float, probability: bool = True,
                tolerance: float = VALUE_TOLERANCE) -> tuple[str, str, float]:
    """QC one image -> (status, reason, max value). Raises InputError if unreadable.

    The image is read on RAS+ storage (:func:`robustmaps.io.load_nifti`), so an x-flipped or
    axis-permuted storage of the cohort grid passes; another voxel size, shift, shape or an
    oblique affine fails, and the reason prints both affines. Values: a GM map is never negative
    and a probability map (``probability``: modulation off) never exceeds 1, beyond
    ``tolerance`` (interpolation overshoot); a map scaled 0-255 fails here.
    """
    data, affine = load_nifti(path)
    if data.ndim != 3:
        return "fail", f"not a 3D image (shape {data.shape})", np.nan
    if not grid.matches(data.shape, affine):
        vox = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
        return ("fail", f"grid {'x'.join(map(str, data.shape))} at "
                f"{'x'.join(f'{v:g}' for v in vox)} mm differs from the cohort grid {grid.describe()}: "
                f"affine {describe_affine(affine)} (read as RAS+) vs the grid's {describe_affine(grid.affine)}",
                np.nan)
    finite = np.isfinite(data)
    if not finite.all():
        return "fail", f"{int((~finite).sum())} NaN/Inf voxel(s)", np.nan
    vmax, vmin = float(data.max()), float(data.min())
    if vmin < -tolerance:
        return "fail", f"negative values (minimum {vmin:.4g}): not a GM map", vmax
    if probability and vmax > 1 + tolerance:
        return ("fail", f"values above 1 (maximum {vmax:.4g}) in a probability map (modulation off): "
                "scaled (e.g. 0-255) or not a probability map", vmax)
    if vmax <= 0:
        return "fail", "empty image (no positive voxel)", vmax
    if vmax < min_max:
        return "fail", f"maximum GM {vmax:.3f} < {min_max:g}", vmax
    return "pass", "", vmax


def map_labels(sessions: pd.DataFrame, labels: dict[str, int]) -> pd.DataFrame:
    """Add ``label`` and the exclusion reason for diagnoses outside ``labels`` / unstable subjects
    / a blank age or sex (``sessions`` as :func:`robustmaps.io.read_sessions` returns it)."""
    df = sessions.copy()
    df["label"] = df["diagnosis"].map(labels).astype("Int64")
    df["reason"] = np.where(df["label"].isna(),
                            "diagnosis '" + df["diagnosis"] + "' not in data.labels", "")
    kept = df[df["label"].notna()]
    n_labels = kept.groupby("participant_id")["label"].nunique()
    unstable = set(n_labels.index[n_labels > 1])
    mask = df["participant_id"].isin(unstable) & df["label"].notna()
    df.loc[mask, "reason"] = "diagnosis changes across sessions (not a stable subject)"
    blank = blank_demographics_reason(df)
    mask = (df["reason"] == "") & (blank != "")
    df.loc[mask, "reason"] = blank[mask]
    df["status"] = np.where(df["reason"] == "", "todo", "excluded")
    return df


def missing_map_reason(path) -> str:
    """The QC reason of a session whose GM map is absent (Clinica failed on it) or a dangling link."""
    return f"GM map missing: {missing_file_reason(path)}"


def _check(args):
    return check_image(*args)


def run_qc(sessions: pd.DataFrame, paths: list[str], grid: Grid, labels: dict[str, int],
           min_max: float, threads: int = 1, *, probability: bool = True,
           tolerance: float = VALUE_TOLERANCE, missing: str = "error") -> pd.DataFrame:
    """QC table for a cohort (one row per session of ``sessions``; ``paths`` aligned with it).
    ``missing``: ``exclude`` excludes a session whose GM map is absent (its reason says so),
    ``error`` stops naming the file."""
    df = map_labels(sessions, labels)
    df["path"] = [str(p) for p in paths]
    df["max_value"] = np.nan
    if missing == "exclude":
        absent = (df["status"] == "todo") & ~df["path"].map(os.path.exists)
        df.loc[absent, "reason"] = df.loc[absent, "path"].map(missing_map_reason)
        df.loc[absent, "status"] = "excluded"
    todo = np.flatnonzero(df["status"].to_numpy() == "todo")
    args = [(df["path"].iloc[i], grid, min_max, probability, tolerance) for i in todo]
    results = list(pmap(_check, args, threads, chunksize=4))
    for i, (status, reason, vmax) in zip(todo, results):
        df.iloc[i, df.columns.get_loc("status")] = status
        df.iloc[i, df.columns.get_loc("reason")] = reason
        df.iloc[i, df.columns.get_loc("max_value")] = vmax
    for row in df[df.status == "fail"].itertuples():
        log.warning("QC fail: %s: %s", row.path, row.reason)
    for reason, n in df[df.status == "excluded"].groupby("reason").size().items():
        log.info("QC excluded (%d session(s)): %s", n, reason)
    n_missing = int(df["reason"].str.startswith("GM map missing").sum())
    if n_missing:
        log.warning("QC: %d session(s) excluded because their GM map is missing (caps.missing: exclude): %s",
                    n_missing, ", ".join(f"{p}/{s}" for p, s in zip(df.participant_id[df.reason.str.startswith(
                        "GM map missing")], df.session_id[df.reason.str.startswith("GM map missing")])))
    log.info("QC: %d pass, %d fail, %d excluded", *(int((df.status == s).sum()) for s in ("pass", "fail", "excluded")))
    extras = [c for c in sessions.columns if c not in QC_COLUMNS]  # e.g. a date column for the baseline
    return df[QC_COLUMNS + extras]


def check_not_empty(qc: pd.DataFrame, labels: dict[str, int], cohort: str, source: str,
                    diagnoses: dict[str, str] | None = None) -> None:
    """Stop if QC and label mapping leave a class (or the whole cohort) without any subject; the
    message lists the diagnoses found and the mapping used."""
    passed = qc[qc.status == "pass"]
    for dx in labels:
        if not (passed.diagnosis == dx).any():
            counts = qc.groupby("status").size().to_dict()
            raise InputError(f"{source}: cohort '{cohort}' has no {dx} session left after QC and label "
                             f"mapping (sessions by status: {counts}; diagnoses in the table: "
                             f"{sorted(qc.diagnosis.unique())}; mapping used: data.labels {dict(labels)}, "
                             f"data.diagnoses {dict(diagnoses or {})})")


