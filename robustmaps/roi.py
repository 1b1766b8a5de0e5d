"""Region-of-interest summaries on the working grid, vectorised over the label image, and the
cosine similarity of ROI vectors (study 2.4).

Every reduction is one sparse matrix product: a (ROI x voxel) indicator matrix built once from
the atlas times the (voxel x map) matrix of the maps, never one boolean mask per ROI.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

REDUCTIONS = ("mean", "sum")
#: the id columns of the ROI-vector table (one row per mask, map or Sobol table)
ID_COLUMNS = ["kind", "method", "cohort", "target", "fold", "seed", "point", "participant_id", "session_id",
              "baseline"]


def roi_means(images: np.ndarray, atlas: np.ndarray, n_labels: int | None = None) -> np.ndarray:
    """Mean of every image over every atlas label -> (n_images, n_labels); column = label id.

    One ``bincount`` pass per image over the label image (no boolean mask per ROI).
    """
    lab = np.asarray(atlas, dtype=np.int64).ravel()
    n_labels = int(lab.max()) + 1 if n_labels is None else n_labels
    counts = np.bincount(lab, minlength=n_labels).astype(np.float64)
    sums = np.stack([np.bincount(lab, weights=np.asarray(img, dtype=np.float64).ravel(), minlength=n_labels)
                     for img in images])
    return sums / np.maximum(counts, 1)


def indicator(atlas: np.ndarray, label_ids, reduction: str = "mean"):
    """Sparse (n_rois, n_voxels) matrix: row r holds 1 (``sum``) or 1 / |ROI r| (``mean``) on the
    voxels of label ``label_ids[r]``; a label absent from the atlas gives an empty row."""
    from scipy import sparse

    if reduction not in REDUCTIONS:
        raise ValueError(f"roi reduction must be one of {REDUCTIONS}, got {reduction!r}")
    lab = np.asarray(atlas, dtype=np.int64).ravel()
    ids = np.asarray(label_ids, dtype=np.int64)
    position = np.full(max(int(lab.max()), int(ids.max(initial=0))) + 1, -1, np.int64)
    position[ids] = np.arange(len(ids))
    rows = position[lab]
    voxels = np.flatnonzero(rows >= 0)
    rows = rows[voxels]
    weights = np.ones(len(voxels))
    if reduction == "mean":
        counts = np.bincount(rows, minlength=len(ids))
        weights = 1.0 / counts[rows]
    return sparse.csr_matrix((weights, (rows, voxels)), shape=(len(ids), lab.size))


def roi_vectors(volumes: np.ndarray, atlas: np.ndarray, label_ids, reduction: str = "mean",
                matrix=None) -> np.ndarray:
    """(n_maps, n_rois) ROI vectors of maps stacked on the LAST axis (X, Y, Z[, N]), as in a 4D
    NIfTI. ``matrix``: a prebuilt :func:`indicator` (reused across calls)."""
    m = indicator(atlas, label_ids, reduction) if matrix is None else matrix
    v = np.asarray(volumes)
    if v.dtype not in (np.float32, np.float64):
        v = v.astype(np.float32)
    flat = v.reshape(int(np.prod(v.shape[:3])), -1)  # (voxels, maps), a view for C-ordered input
    # the product in the maps' precision: a float64 matrix would copy float32 maps to float64
    # (60x slower on 100 full-grid maps); float32 sums over a ROI's voxels stay within 1e-5
    return np.asarray(m.astype(flat.dtype, copy=False) @ flat, dtype=np.float64).T


MAP_NORMALISATIONS = ("above_mean", "none")


def above_mean(vectors: np.ndarray, matrix) -> np.ndarray:
    """Saliency maps' ROI vectors, normalised for comparison (config ``roi.map_normalisation:
    above_mean``): the ROI reduction of (map - the map's mean over the atlas's voxels), negative
    values set to 0, i.e. how much more relevance the ROI holds than the brain's average.

    Without it, a dense map's positive offset dominates every vector and any two maps (a random
    one included) have a cosine near 1. ``vectors``: (n_maps, n_rois) from :func:`roi_vectors`
    with the :func:`indicator` ``matrix`` it used; the brain means come from the same numbers (no
    second pass over the voxels)."""
    v = np.asarray(vectors, dtype=np.float64)
    sizes = np.diff(matrix.indptr).astype(np.float64)          # voxels per ROI
    weight = np.asarray(matrix.sum(axis=1), dtype=np.float64).ravel()  # 1 (mean) or |ROI| (sum); 0 if empty
    per_voxel = np.divide(weight, sizes, out=np.zeros_like(weight), where=sizes > 0)
    roi_sums = np.divide(v, per_voxel, out=np.zeros_like(v), where=per_voxel > 0)
    brain_mean = roi_sums.sum(1) / max(sizes.sum(), 1.0)
    return np.clip(v - brain_mean[:, None] * weight[None, :], 0.0, None)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float64); a zero row stays zero."""
    v = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    """Cosine similarity of every pair of rows; a zero vector has similarity 0 with every row
    (and 1 with itself, so that the diagonal stays 1)."""
    unit = unit_rows(vectors)
    sim = unit @ unit.T
    np.fill_diagonal(sim, 1.0)
    return np.clip(sim, -1.0, 1.0)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two vectors (0 when either is zero)."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(np.dot(a, b) / (na * nb)) if na > 0 and nb > 0 else 0.0


def paint_rois(atlas: np.ndarray, label_ids, values) -> np.ndarray:
    """The ROI-level map of a ROI vector: every voxel of label ``label_ids[r]`` holds ``values[r]``,
    voxels of other labels (and background) 0 (float32, the atlas' shape). NaN values paint 0."""
    lab = np.asarray(atlas, dtype=np.int64)
    ids = np.asarray(label_ids, dtype=np.int64)
    vals = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0)
    if ids.shape != vals.shape:
        raise ValueError(f"paint_rois: {len(ids)} label ids but {len(vals)} values")
    lookup = np.zeros(max(int(lab.max(initial=0)), int(ids.max(initial=0))) + 1, np.float64)
    lookup[ids] = vals
    return lookup[np.clip(lab, 0, None)].astype(np.float32) * (lab > 0)


def roi_outline(atlas: np.ndarray, label_ids) -> np.ndarray:
    """1 inside the ROIs ``label_ids`` of the label image, 0 elsewhere (uint8): the planted ROIs'
    outline is its 0.5 contour."""
    return np.isin(np.asarray(atlas, dtype=np.int64), np.asarray(label_ids, dtype=np.int64)).astype(np.uint8)


def top_rois(table: pd.DataFrame, rois: list[str], k: int = 5) -> pd.DataFrame:
    """The ``k`` ROIs of highest value (mask density, map mean, ST) of every row -> tidy
    (ids..., rank, roi, value); ROIs of value 0 are not ranked."""
    rows = []
    values = table[rois].to_numpy(dtype=np.float64)
    ids = table[ID_COLUMNS].to_dict("records")
    for i, v in enumerate(values):
        order = np.argsort(-v, kind="stable")[:k]
        rows += [{**ids[i], "rank": r + 1, "roi": rois[j], "value": v[j]} for r, j in enumerate(order) if v[j] > 0]
    return pd.DataFrame(rows, columns=ID_COLUMNS + ["rank", "roi", "value"])


def recovery(table: pd.DataFrame, rois: list[str], planted: list[str]) -> pd.DataFrame:
    """How well each row's ROI ranking finds the planted ROIs: ROC AUC (planted = positives,
    ties count half; 0.5 for a zero vector) and precision at k = number of planted ROIs."""
    from sklearn.metrics import roc_auc_score

    positive = np.isin(rois, planted)
    k = int(positive.sum())
    values = table[rois].to_numpy(dtype=np.float64)
    out = table[ID_COLUMNS].copy()
    out["roc_auc"] = [roc_auc_score(positive, v) if positive.any() and not positive.all() else np.nan
                      for v in values]
    out["precision_at_k"] = [positive[np.argsort(-v, kind="stable")[:k]].mean() if k else np.nan for v in values]
    out["k"] = k
    return out
