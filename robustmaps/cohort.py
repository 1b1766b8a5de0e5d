"""Synthetic cohort on real anatomy, written exactly as a Clinica CAPS folder.

Anatomy: nilearn's MNI152 gray-matter template on the native grid. Each subject draws a
diagnosis (CN / AD), age, sex, a number of yearly-ish sessions, a smooth deformation (its size in
millimetres, so that every resolution sees the same anatomy) and, for AD, a severity of GM loss
planted in configurable AAL2 regions that grows across sessions. Each session adds a smooth
multiplicative intensity field, an age effect and noise; a site effect (gain and gamma) lets a
second cohort play the independent cohort's role. A few sessions can be planted as QC defects
(GM maximum well below the QC threshold) so that QC has something real to reject. The maps are
stored x-flipped by default (``orientation: LAS``), as SPM writes normalised images whose template
is stored so, so that the demo reads what a real CAPS holds.

Everything is drawn from ``numpy.random.SeedSequence(seed, spawn_key=(cohort, subject))``: the
same seed gives the same bytes whatever the number of worker processes.
"""

from __future__ import annotations

import logging
import zlib

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter, maximum_filter

from .atlas import roi_index
from .grid import Grid
from .io import CLINICA_GM_PATTERN, gm_path, save_nifti
from .parallel import pmap
from .settings import SyntheticCohort

log = logging.getLogger(__name__)

#: World box (mm) on which the random smooth fields live: it contains every MNI field of view, and
#: being fixed, it makes a subject's fields the same at every grid resolution.
FIELD_BOX = np.array([[-120.0, 120.0], [-150.0, 120.0], [-100.0, 130.0]])
#: Template intensity mapped to GM probability 1 (its 75th percentile inside the brain): the
#: gray-matter cores saturate near 1, as in real segmentations, so healthy maps reach max ~ 1
#: (QC's threshold is 0.95) at every resolution.
TEMPLATE_QUANTILE = 0.75


def load_template(grid: Grid) -> np.ndarray:
    """MNI152 GM template (nilearn's bundled copy) on ``grid``, scaled so GM cores exceed 1."""
    from nilearn.datasets import load_mni152_gm_template
    from nilearn.image import resample_img

    tpl = load_mni152_gm_template(resolution=1)
    res = resample_img(tpl, target_affine=grid.affine, target_shape=grid.shape,
                       interpolation="continuous", force_resample=True, copy_header=True)
    data = np.clip(np.asarray(res.dataobj, dtype=np.float64), 0, None)
    scale = np.quantile(data[data > 0.1 * data.max()], TEMPLATE_QUANTILE)
    return (data / scale).astype(np.float32)


def soft_saturate(x: np.ndarray, knee: float = 0.9) -> np.ndarray:
    """Identity below ``knee``, then a smooth monotone approach to 1 (a probability never exceeds 1)."""
    top = 1.0 - knee
    return np.where(x <= knee, x, knee + top * np.tanh((x - knee) / top)).astype(np.float32)


def _interp_matrix(lo: float, step: float, n_coarse: int, targets: np.ndarray) -> np.ndarray:
    """Linear-interpolation weights from a regular coarse axis to target coordinates."""
    pos = np.clip((targets - lo) / step, 0, n_coarse - 1 - 1e-9)
    i0 = np.floor(pos).astype(int)
    frac = pos - i0
    w = np.zeros((targets.size, n_coarse))
    w[np.arange(targets.size), i0] = 1 - frac
    w[np.arange(targets.size), i0 + 1] += frac
    return w


class FieldSampler:
    """Smooth Gaussian random fields (unit SD, correlation length ~ ``smoothness_mm``) on a grid."""

    def __init__(self, grid: Grid, smoothness_mm: float):
        self.step = smoothness_mm / 2.0
        self.coarse_shape = tuple(int(np.ceil((hi - lo) / self.step)) + 1 for lo, hi in FIELD_BOX)
        self.weights = [_interp_matrix(lo, self.step, n, axis).astype(np.float32)
                        for (lo, _), n, axis in zip(FIELD_BOX, self.coarse_shape, grid.world_axes())]

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        coarse = gaussian_filter(rng.standard_normal(self.coarse_shape), sigma=2.0, mode="wrap")
        coarse /= coarse.std()
        wx, wy, wz = self.weights
        return np.einsum("ia,jb,kc,abc->ijk", wx, wy, wz, coarse.astype(np.float32), optimize=True)


def atrophy_map(labels: np.ndarray, table: pd.DataFrame, rois: list[dict], smoothing_mm: float,
                voxel_size: float) -> np.ndarray:
    """Weighted, smoothed indicator of the planted ROIs, in [0, 1] (1 = full severity)."""
    ids = roi_index(table, [r["name"] for r in rois], where="data.cohorts.*.synthetic.atrophy.rois")
    out = np.zeros(labels.shape, dtype=np.float32)
    for idx, roi in zip(ids, rois):
        ind = (labels == idx).astype(np.float32)
        if smoothing_mm > 0:
            ind = gaussian_filter(ind, sigma=smoothing_mm / voxel_size / 2.355)
        out += float(roi["weight"]) * ind
    return np.clip(out, 0, 1)


def warp(volumes: np.ndarray, disp: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
    """Trilinear warp of (C, X, Y, Z) volumes by a displacement field (3, X, Y, Z) in voxels.

    Output voxel u takes the value at u + disp(u), zero outside the volume: scipy's
    map_coordinates with order 1 (identical inside the volume), computed with torch's grid_sample
    (several times faster). ``where`` (boolean, X x Y x Z) restricts the work to the voxels that
    can be non-zero; the others are set to 0.
    """
    import torch

    shape = np.array(volumes.shape[1:], dtype=np.float32)
    idx = np.nonzero(where) if where is not None else tuple(np.indices(volumes.shape[1:]).reshape(3, -1))
    pos = np.stack([i.astype(np.float32) + d[idx] for i, d in zip(idx, disp)])  # (3, N)
    # grid_sample wants (x, y, z) -> (W, H, D) order and coordinates in [-1, 1] (align_corners).
    norm = 2.0 * pos / (shape[:, None] - 1) - 1.0
    grid = torch.from_numpy(np.ascontiguousarray(norm[::-1].T, dtype=np.float32)).view(1, 1, 1, -1, 3)
    vol = torch.from_numpy(np.ascontiguousarray(volumes, dtype=np.float32))[None]
    vals = torch.nn.functional.grid_sample(vol, grid, mode="bilinear", padding_mode="zeros",
                                           align_corners=True)[0, :, 0, 0].numpy()
    out = np.zeros(volumes.shape, dtype=np.float32)
    out[(slice(None),) + tuple(idx)] = vals
    return out


def subject_seed(seed: int, cohort: str, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(seed, spawn_key=(zlib.crc32(cohort.encode()), index))


def draw_subjects(spec: SyntheticCohort, name: str, seed: int) -> tuple[list[dict], set]:
    """The cohort's subjects in a seeded random order of diagnoses (``n_cn`` CN and ``n_ad`` AD;
    ids ``sub-<prefix>0001`` ..., which carry no diagnosis) and the baseline sessions planted as
    QC defects (``qc_defects`` subjects drawn at random): (jobs for :func:`synthesise_subjects`,
    {(participant_id, "ses-M000")})."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(zlib.crc32(name.encode()),)))
    diagnoses = np.array(["CN"] * spec.n_cn + ["AD"] * spec.n_ad)
    rng.shuffle(diagnoses)
    jobs = [{"index": i, "participant_id": f"sub-{spec.id_prefix}{i + 1:04d}", "diagnosis": str(dx)}
            for i, dx in enumerate(diagnoses)]
    n_def = min(spec.qc_defects, len(jobs))
    defects = {(jobs[i]["participant_id"], "ses-M000") for i in rng.choice(len(jobs), n_def, replace=False)}
    return jobs, defects


# Worker state, set before the pool forks (read-only in the workers).
_W: dict = {}


def synthesise_subjects(jobs: list[dict], caps_dir, *, spec: SyntheticCohort, grid, seed: int, name: str, template,
                        atrophy, labels, defects: set, threads: int = 1):
    """Each subject of ``jobs`` drawn (``threads`` forked workers, one subject each, results in
    ``jobs``' order whatever the count) and its GM maps written into the CAPS folder ``caps_dir``
    (the rule's temporary output); yields per subject its session rows and ROI sums."""
    import torch  # noqa: F401  (imported once here, inherited by the forked workers)

    # Voxels a warped template can reach: its support grown by 5 SD of the displacement.
    reach = int(np.ceil(5 * spec.deformation_mm / grid.voxel_size)) + 1
    support = maximum_filter(template > 1e-3, size=2 * reach + 1)
    _W.update(spec=spec, grid=grid, seed=seed, name=name, template=template, atrophy=atrophy, support=support,
              labels=labels, n_labels=int(labels.max()) + 1, defects=defects, caps_tmp=caps_dir,
              deform=FieldSampler(grid, spec.deformation_smoothness_mm),
              intensity=FieldSampler(grid, spec.intensity_smoothness_mm))
    try:
        yield from pmap(_make_subject, jobs, threads)
    finally:
        _W.clear()


def _make_subject(job: dict) -> dict:
    """Generate and write every session of one subject; return its rows and ROI sums."""
    spec, grid = _W["spec"], _W["grid"]
    rng = np.random.default_rng(subject_seed(_W["seed"], _W["name"], job["index"]))
    dx, pid = job["diagnosis"], job["participant_id"]
    sex = "M" if rng.random() < spec.p_male else "F"
    lo, hi = spec.age_range
    age = float(np.clip(rng.normal(spec.age_mean[dx], spec.age_sd), lo, hi))
    n_ses = int(rng.integers(spec.sessions_min, spec.sessions_max + 1))
    atro = spec.atrophy
    severity = float(rng.uniform(*atro.severity)) if dx == "AD" else 0.0

    # One smooth deformation per subject, in mm, applied to template and atrophy map alike.
    disp = np.stack([_W["deform"].sample(rng) for _ in range(3)]) * (spec.deformation_mm / grid.voxel_size)
    template, atrophy = warp(np.stack([_W["template"], _W["atrophy"]]), disp, where=_W["support"])
    brain = template > 0.01
    del disp

    rows, roi_sums = [], None
    for k in range(n_ses):
        months = k * spec.interval_months
        sid = f"ses-M{months:03d}"
        years = months / 12.0
        sev = min(severity * (1.0 + atro.progression_per_year * years), 0.9)
        img = template * max(0.5, 1.0 - spec.age_effect * (age + years - 55.0))
        img *= 1.0 + spec.intensity_sd * _W["intensity"].sample(rng)
        img = spec.site.scale * np.clip(img, 0, None) ** spec.site.gamma
        # GM loss after saturation, so that it shows in the GM cores too.
        img = soft_saturate(img) * (1.0 - sev * atrophy)
        img += brain * (spec.noise_sd * rng.standard_normal(grid.shape, dtype=np.float32))
        img = np.clip(img, 0.0, 1.0)
        defect = (pid, sid) in _W["defects"]
        if defect:
            img *= spec.qc_defect_scale
        # uint16 with a scale factor (as SPM does for probability maps): 1.5e-5 precision, and
        # 2x smaller and much faster to compress than float32 noise.
        # stored as SPM stores it (``orientation: LAS``, x right-to-left) unless configured otherwise,
        # so that every reader takes the path a real cohort takes
        save_nifti(img, grid.affine, gm_path(_W["caps_tmp"], pid, sid, CLINICA_GM_PATTERN,
                                             "Ixi549Space", "off"), dtype=np.uint16,
                   orientation=spec.orientation)
        if k == 0:
            roi_sums = np.bincount(_W["labels"].ravel(), weights=img.ravel(), minlength=_W["n_labels"])
        rows.append({"participant_id": pid, "session_id": sid, "diagnosis": dx,
                     "age": round(age + years, 2), "sex": sex, "severity": round(sev, 4),
                     "planted_defect": defect})
    return {"rows": rows, "roi_sums": roi_sums, "diagnosis": dx}


def ground_truth(subjects: list[dict], labels: np.ndarray, table: pd.DataFrame, rois) -> pd.DataFrame:
    """The synthetic cohort's ground truth, one row per planted ROI (``rois``: {name, weight}):
    its planted effect (weight x the AD subjects' mean baseline severity) and the effect measured
    on the baseline maps (relative GM reduction of the AD mean vs the CN mean inside the ROI of
    the unwarped atlas ``labels``; planted QC defects left out). ``subjects``: the records of
    :func:`synthesise_subjects`."""
    counts = np.bincount(labels.ravel(), minlength=int(labels.max()) + 1).astype(float)
    ids = roi_index(table, [r["name"] for r in rois])
    mean_sev = float(np.mean([res["rows"][0]["severity"] for res in subjects if res["diagnosis"] == "AD"] or [0]))

    def class_mean(dx):
        sums = [res["roi_sums"] for res in subjects if res["diagnosis"] == dx
                and not res["rows"][0]["planted_defect"]]
        return np.mean(sums, axis=0) / np.maximum(counts, 1) if sums else np.full(counts.size, np.nan)

    cn, ad = class_mean("CN"), class_mean("AD")
    return pd.DataFrame({
        "roi_index": ids,
        "roi_name": [r["name"] for r in rois],
        "weight": [float(r["weight"]) for r in rois],
        "planted_reduction": [float(r["weight"]) * mean_sev for r in rois],
        "measured_reduction": [float(1 - ad[i] / cn[i]) if cn[i] > 0 else np.nan for i in ids],
        "n_voxels_native": [int(counts[i]) for i in ids],
    })
