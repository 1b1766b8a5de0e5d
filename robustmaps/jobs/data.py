"""Rule entries of the data stage (rules/data.smk): the synthetic cohort, quality control, the
cohort store, the atlas on the working grid, and the cohort table."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from ..atlas import atlas_on_grid
from ..cohort import atrophy_map, draw_subjects, ground_truth, load_template, synthesise_subjects
from ..grid import Grid
from ..io import InputError, atomic_path, gm_path, natural_key, read_sessions, read_tsv, save_nifti, write_tsv
from ..preprocess import INDEX_COLUMNS, mark_baseline, resampled
from ..qc import QC_COLUMNS, VALUE_TOLERANCE, check_not_empty, run_qc
from ..settings import SyntheticCohort

log = logging.getLogger(__name__)


def generate_cohort(caps_dir: str, sessions_tsv: str, ground_truth_tsv: str, truth_sessions_tsv: str,
                    *, name: str, spec, grid: dict, atlas: dict, seed: int, threads: int = 1) -> None:
    """Write a synthetic cohort: CAPS folder, session table and ground truth (see
    robustmaps.cohort). ``spec``: its settings (:class:`robustmaps.settings.SyntheticCohort` or the
    config's ``data.cohorts.<name>.synthetic`` mapping)."""
    spec = SyntheticCohort.of(spec, name)
    g = Grid.from_config(grid)
    labels, table = atlas_on_grid(g, atlas.get("image"), atlas.get("labels"))
    template = load_template(g)
    atro = spec.atrophy
    amap = atrophy_map(labels, table, atro.rois, atro.smoothing_mm, g.voxel_size)

    jobs, defects = draw_subjects(spec, name, seed)
    log.info("cohort %s: %d CN + %d AD subjects on %s, %d planted QC defect(s)", name,
             spec.n_cn, spec.n_ad, g.describe(), len(defects))

    with atomic_path(caps_dir) as caps_tmp:
        (Path(caps_tmp) / "subjects").mkdir(parents=True)
        results = []
        subjects = synthesise_subjects(jobs, caps_tmp, spec=spec, grid=g, seed=seed, name=name, template=template,
                                       atrophy=amap, labels=labels, defects=defects, threads=threads)
        for i, res in enumerate(subjects):
            results.append(res)
            if (i + 1) % 10 == 0 or i + 1 == len(jobs):
                log.info("cohort %s: %d/%d subjects written", name, i + 1, len(jobs))

    rows = [r for res in results for r in res["rows"]]
    sessions = pd.DataFrame(rows)
    write_tsv(sessions[["participant_id", "session_id", "diagnosis", "age", "sex"]], sessions_tsv)
    write_tsv(sessions[["participant_id", "session_id", "diagnosis", "severity", "planted_defect"]],
              truth_sessions_tsv)

    truth = ground_truth(results, labels, table, spec.atrophy.rois)
    write_tsv(truth, ground_truth_tsv)
    log.info("cohort %s: %d sessions; measured GM reduction in planted ROIs: %s", name, len(sessions),
             ", ".join(f"{n} {v:.3f}" for n, v in zip(truth.roi_name, truth.measured_reduction)))


def qc_cohort(sessions_tsv: str, caps_dir: str, out_tsv: str, *, cohort: str, grid: dict,
              labels: dict[str, int], min_max_gm: float, gm: dict, threads: int = 1,
              diagnoses: dict[str, str] | None = None, blank_demographics: str = "error",
              missing: str = "error", value_tolerance: float = VALUE_TOLERANCE) -> None:
    """Rule entry point: read the session table, QC every image, write ``qc.tsv``."""
    sessions = read_sessions(sessions_tsv, labels, diagnoses, blank_demographics)
    paths = [gm_path(caps_dir, p, s, gm["pattern"], gm["space"], gm["modulated"])
             for p, s in zip(sessions.participant_id, sessions.session_id)]
    qc = run_qc(sessions, paths, Grid.from_config(grid), labels, min_max_gm, threads,
                probability=gm["modulated"] == "off", tolerance=value_tolerance, missing=missing)
    check_not_empty(qc, labels, cohort, sessions_tsv, diagnoses)
    write_tsv(qc, out_tsv)


def cohort_table(qc_tsvs: list[str], index_tsvs: list[str], out_tsv: str, *, cohorts: list[str],
                 names: dict[str, str]) -> None:
    """Rule entry point: demographics at baseline per cohort and diagnosis (the study's Table 1),
    with the sessions QC rejected and the sessions excluded by label mapping."""
    rows = []
    for cohort, qc_tsv, index_tsv in zip(cohorts, qc_tsvs, index_tsvs):
        qc = read_tsv(qc_tsv, QC_COLUMNS, what="QC table")
        index = read_tsv(index_tsv, ["participant_id", "diagnosis", "age", "sex", "baseline"], what="store index")
        for dx in sorted(qc.diagnosis.unique()):
            sel = index[index.diagnosis == dx]
            base = sel[sel.baseline.astype(bool)]
            q = qc[qc.diagnosis == dx]
            rows.append({
                "cohort": cohort, "name": names.get(cohort, cohort), "diagnosis": dx,
                "n_subjects": int(base.participant_id.nunique()), "n_sessions": len(sel),
                "age_mean": base.age.mean(), "age_sd": base.age.std(), "age_min": base.age.min(),
                "age_max": base.age.max(), "n_male": int((base.sex == "M").sum()),
                "n_female": int((base.sex == "F").sum()),
                "qc_failed_sessions": int((q.status == "fail").sum()),
                "excluded_sessions": int((q.status == "excluded").sum()),
                "missing_maps": int(q.reason.fillna("").str.startswith("GM map missing").sum()),
            })
    write_tsv(pd.DataFrame(rows), out_tsv)


def build_store(qc_tsv: str, atlas_nii: str, store_npy: str, index_tsv: str, mean_nii: str, *,
                native: dict, working: dict, dtype: str = "float16", baseline_column: str | None = None,
                threads: int = 1) -> None:
    """Rule entry point: write the memory-mappable store, its index and the mean image."""
    source, target = Grid.from_config(native), Grid.from_config(working)
    atlas = nib.load(atlas_nii)
    if not target.matches(atlas.shape, atlas.affine):
        raise InputError(f"{atlas_nii}: atlas grid {atlas.shape} / affine does not match the working grid "
                         f"{target.describe()}: re-run the atlas rule with the same preprocess settings")
    qc = read_tsv(qc_tsv, ["participant_id", "session_id", "status", "path"], what="QC table",
                  dtype={"participant_id": str, "session_id": str})
    passed = qc[qc.status == "pass"].copy()
    passed["_key"] = passed["session_id"].map(natural_key)
    passed = passed.sort_values(["participant_id", "_key"], kind="stable").drop(columns="_key")
    passed = passed.reset_index(drop=True)
    passed["baseline"] = mark_baseline(passed, baseline_column)
    passed["label"] = passed["label"].astype(int)
    passed.insert(0, "row", np.arange(len(passed)))
    log.info("store: %d sessions of %d subjects, %s -> %s, %s", len(passed),
             passed.participant_id.nunique(), source.describe(), target.describe(), dtype)

    total = np.zeros(target.shape, dtype=np.float64)
    # Written as a stream (the .npy header, then one volume after another), never through a
    # memory map: on a full disk a write fails with an error (StorageError, naming the store)
    # instead of a SIGBUS when a page of a sparse map is touched. The bytes are those of np.save.
    dt = np.dtype(dtype)
    header = {"descr": np.lib.format.dtype_to_descr(dt), "fortran_order": False,
              "shape": (len(passed),) + target.shape}
    with atomic_path(store_npy) as tmp, open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        paths = passed["path"].tolist()
        for i, vol in enumerate(resampled(paths, source, target, dt, threads)):
            f.write(np.ascontiguousarray(vol, dtype=dt).tobytes())
            total += vol
            if (i + 1) % 50 == 0 or i + 1 == len(paths):
                log.info("store: %d/%d sessions", i + 1, len(paths))
    save_nifti(total / max(len(passed), 1), target.affine, mean_nii)
    write_tsv(passed[INDEX_COLUMNS], index_tsv)


def write_atlas(image_out: str, labels_out: str, *, grid: dict, atlas: dict) -> None:
    """Rule entry point: the atlas on the working grid + its label table (with voxel counts)."""
    import logging

    g = Grid.from_config(grid)
    data, table = atlas_on_grid(g, atlas.get("image"), atlas.get("labels"))
    lost = table[table.n_voxels == 0]
    if len(lost):
        logging.getLogger(__name__).warning(
            "atlas: %d ROI(s) have no voxel at %g mm: %s", len(lost), g.voxel_size, ", ".join(lost.name))
    save_nifti(data, g.affine, image_out, dtype=np.int16)
    write_tsv(table, labels_out)
