"""Rule entries of the analysis stage (study 2.4 and 3): ROI vectors of every mask and map, the
similarity families, and the regions the masks point at.

ROI vectors (``results/analysis/roi_vectors.tsv``): one row per mask or map, id columns
(robustmaps.similarity.ID_COLUMNS) and one column per atlas ROI (its name). Masks: the ROI
reduction (``mean`` or ``sum`` over the ROI's voxels) of the perturbation 1 - m (the study's
density); saliency maps: the same reduction of the map, each per-session map min-max normalised
to [0, 1] when it was written (a group map is the mean of those); Sobol: the total-order index
ST of each ROI (one value per ROI already).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .similarity import ID_COLUMNS

log = logging.getLogger(__name__)


def _baseline_flags(pids, sessions) -> list[bool]:
    """True for each subject's earliest session (natural order of the session ids)."""
    from .io import natural_key

    first = {}
    for p, s in zip(pids, sessions):
        if p not in first or natural_key(s) < natural_key(first[p]):
            first[p] = s
    return [first[p] == s for p, s in zip(pids, sessions)]


def roi_table(entries: list[dict], atlas_nii, labels_tsv, reduction: str = "mean",
              group_class: str = "AD") -> pd.DataFrame:
    """The tidy ROI-vector table of ``entries``: dicts with the id columns and ``path`` (a 3D or 4D
    NIfTI on the working grid; a Sobol ``indices.tsv``), ``source`` (``mask``, ``map`` or
    ``sobol``) and, for 4D files, ``index`` (their index TSV)."""
    from .atlas import load_labels
    from .io import InputError, load_nifti, read_tsv
    from .roi import indicator, roi_vectors

    atlas, _ = load_nifti(atlas_nii)
    labels = load_labels(labels_tsv)
    names, ids = labels["name"].tolist(), labels["index"].tolist()
    matrix = indicator(atlas, ids, reduction)
    rows = []
    for e in entries:
        base = {c: e.get(c, "") for c in ID_COLUMNS}
        if e["source"] == "sobol":
            t = read_tsv(e["path"], ["roi", "ST", "images"], what="Sobol table")
            t = t[t["images"] == group_class].set_index("roi")
            rows.append({**base, **{n: float(t.ST.get(n, 0.0)) for n in names}})
            continue
        data, _ = load_nifti(e["path"], squeeze=False)
        if tuple(data.shape[:3]) != tuple(atlas.shape):
            raise InputError(f"{e['path']}: {data.shape[:3]} is not the atlas's grid {atlas.shape}")
        data = data.reshape(*atlas.shape, -1)
        values = 1.0 - data if e["source"] == "mask" else data
        vectors = roi_vectors(values, atlas, ids, reduction, matrix=matrix)
        if "index" in e:
            idx = read_tsv(e["index"], ["participant_id", "session_id"], what="index",
                           dtype={"participant_id": str, "session_id": str})
            if len(idx) != len(vectors):
                raise InputError(f"{e['path']}: {len(vectors)} volumes but {e['index']} lists {len(idx)}")
            flags = _baseline_flags(idx.participant_id, idx.session_id)
            for v, p, s, b in zip(vectors, idx.participant_id, idx.session_id, flags):
                rows.append({**base, "participant_id": p, "session_id": s, "baseline": b, **dict(zip(names, v))})
        else:
            rows.append({**base, **dict(zip(names, vectors[0]))})
    return pd.DataFrame(rows, columns=ID_COLUMNS + names)


def roi_vectors_entry(entries: list[dict], atlas_nii, labels_tsv, out_tsv, *, reduction: str = "mean",
                      group_class: str = "AD") -> None:
    """Rule entry: ``results/analysis/roi_vectors.tsv``."""
    from .io import write_tsv

    table = roi_table(entries, atlas_nii, labels_tsv, reduction, group_class)
    write_tsv(table, out_tsv)
    log.info("ROI vectors: %d rows (%s)", len(table),
             ", ".join(f"{k} {v}" for k, v in table.kind.value_counts().sort_index().items()))


def similarity_entry(roi_tsv, out: dict, *, group_class: str = "AD") -> None:
    """Rule entry: every family's pairs with their cosine, the summary and its figure."""
    from .io import read_tsv, write_tsv
    from .plots import similarity_families_figure
    from .similarity import similarities, summary

    table = read_tsv(roi_tsv, ID_COLUMNS, what="ROI-vector table",
                     dtype={"participant_id": str, "session_id": str, "point": str})
    rois = [c for c in table.columns if c not in ID_COLUMNS]
    pairs = similarities(table, rois, group_class)
    summ = summary(pairs)
    write_tsv(pairs, out["pairs"])
    write_tsv(summ, out["summary"])
    similarity_families_figure(pairs, out["figure"])
    for r in summ.itertuples():
        log.info("%-17s %4d pairs  cosine %.3f +- %.3f", r.family, r.n_pairs, r.mean, r.sd)
