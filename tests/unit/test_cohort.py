"""The synthetic cohort: determinism, CAPS layout, planted atrophy and QC defects."""

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robustmaps import config as rmconfig
from robustmaps.atlas import atlas_on_grid
from robustmaps.jobs.data import generate_cohort
from robustmaps.cohort import soft_saturate, warp
from robustmaps.grid import Grid
from robustmaps.io import gm_path, load_nifti
from robustmaps.roi import roi_means

GRID = {"shape": [31, 37, 31], "voxel_size": 6.0, "origin": [-90.0, -126.0, -72.0]}


def spec(**over):
    cfg = rmconfig.validate({"data": {"cohorts": {"main": {}}}})
    s = copy.deepcopy(cfg["data"]["cohorts"]["main"]["synthetic"])
    s.update(n_cn=8, n_ad=8, sessions_min=1, sessions_max=2, qc_defects=2, deformation_mm=1.0)
    s.update(over)
    return s


def make(root: Path, seed=1, threads=1, **over) -> Path:
    generate_cohort(str(root / "caps"), str(root / "sessions.tsv"), str(root / "truth.tsv"),
                    str(root / "truth_sessions.tsv"), name="main", spec=spec(**over), grid=GRID,
                    atlas={}, seed=seed, threads=threads)
    return root


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return make(tmp_path_factory.mktemp("c1"), seed=1, threads=1)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_whatever_the_worker_count(cohort, tmp_path):
    again = make(tmp_path, seed=1, threads=2)
    assert files(cohort) == files(again)


def test_other_seed_other_cohort(cohort, tmp_path):
    other = make(tmp_path, seed=2)
    a = pd.read_csv(cohort / "sessions.tsv", sep="\t")
    b = pd.read_csv(other / "sessions.tsv", sep="\t")
    assert not a.equals(b)


def test_caps_layout_and_session_table(cohort):
    sessions = pd.read_csv(cohort / "sessions.tsv", sep="\t")
    assert list(sessions.columns) == ["participant_id", "session_id", "diagnosis", "age", "sex"]
    assert (sessions.groupby("diagnosis").participant_id.nunique() == 8).all()
    assert set(sessions.session_id) <= {"ses-M000", "ses-M012"}
    for p, s in zip(sessions.participant_id, sessions.session_id):
        data, affine = load_nifti(gm_path(cohort / "caps", p, s))
        assert Grid.from_config(GRID).matches(data.shape, affine)
        assert data.min() >= 0 and data.max() <= 1
    n_files = len(list((cohort / "caps").rglob("*.nii.gz")))
    assert n_files == len(sessions)
    # ages grow with the sessions of a subject
    multi = sessions.groupby("participant_id").filter(lambda d: len(d) > 1)
    assert (multi.groupby("participant_id").age.diff().dropna() == 1.0).all()


def test_planted_rois_have_lower_gm_in_ad(cohort):
    """Measured independently of the generator's own bookkeeping, on the written maps."""
    sessions = pd.read_csv(cohort / "sessions.tsv", sep="\t")
    truth_s = pd.read_csv(cohort / "truth_sessions.tsv", sep="\t")
    base = sessions[sessions.session_id == "ses-M000"].merge(
        truth_s[["participant_id", "session_id", "planted_defect"]], on=["participant_id", "session_id"])
    base = base[~base.planted_defect]
    imgs = np.stack([load_nifti(gm_path(cohort / "caps", p, "ses-M000"))[0] for p in base.participant_id])
    labels, table = atlas_on_grid(Grid.from_config(GRID))
    means = roi_means(imgs, labels)
    ad, cn = means[(base.diagnosis == "AD").to_numpy()].mean(0), means[(base.diagnosis == "CN").to_numpy()].mean(0)
    truth = pd.read_csv(cohort / "truth.tsv", sep="\t")
    hippo = truth[truth.roi_name.str.startswith(("Hippocampus", "ParaHippocampal"))].roi_index
    reduction = 1 - ad / np.maximum(cn, 1e-6)
    assert (reduction[hippo] > 0.08).all()
    unplanted = np.setdiff1d(table["index"][table.n_voxels > 5], truth.roi_index)
    assert reduction[hippo].mean() > 3 * np.abs(reduction[unplanted]).mean()
    # the generator's own record agrees
    assert (truth[truth.weight == 1].measured_reduction > 0.08).all()


def test_negative_control_plants_nothing(tmp_path):
    root = make(tmp_path, seed=1, atrophy={**spec()["atrophy"], "severity": [0.0, 0.0]})
    truth = pd.read_csv(root / "truth.tsv", sep="\t")
    assert (truth.planted_reduction == 0).all()
    assert truth.measured_reduction.abs().max() < 0.08
    assert (pd.read_csv(root / "truth_sessions.tsv", sep="\t").severity == 0).all()


def test_planted_defects_fall_below_qc_threshold_and_healthy_maps_reach_one(cohort):
    truth_s = pd.read_csv(cohort / "truth_sessions.tsv", sep="\t")
    assert truth_s.planted_defect.sum() == 2
    for row in truth_s.itertuples():
        vmax = load_nifti(gm_path(cohort / "caps", row.participant_id, row.session_id))[0].max()
        assert (vmax < 0.9) if row.planted_defect else (vmax > 0.95)


def test_atrophy_grows_across_sessions(cohort):
    t = pd.read_csv(cohort / "truth_sessions.tsv", sep="\t")
    ad = t[t.severity > 0].groupby("participant_id").severity
    grown = ad.apply(lambda s: s.is_monotonic_increasing and (len(s) == 1 or s.iloc[-1] > s.iloc[0]))
    assert grown.all()


def test_unknown_roi_is_a_clear_error(tmp_path):
    from robustmaps.io import InputError

    with pytest.raises(InputError, match="unknown ROI name.*Hipocampus_L"):
        make(tmp_path, atrophy={**spec()["atrophy"], "rois": [{"name": "Hipocampus_L", "weight": 1.0}]})
    assert not (tmp_path / "caps").exists()


def test_warp_matches_scipy_inside_the_volume():
    from scipy.ndimage import map_coordinates

    rng = np.random.default_rng(0)
    vols = rng.random((2, 12, 14, 10)).astype(np.float32)
    disp = rng.normal(0, 0.7, (3, 12, 14, 10)).astype(np.float32)
    ref = np.stack([map_coordinates(v, np.indices(v.shape) + disp, order=1) for v in vols])
    np.testing.assert_allclose(warp(vols, disp)[:, 3:-3, 3:-3, 3:-3], ref[:, 3:-3, 3:-3, 3:-3], atol=1e-5)


def test_soft_saturate_is_monotone_and_bounded():
    x = np.linspace(0, 3, 301)
    y = soft_saturate(x)
    assert (np.diff(y) >= 0).all() and y.max() < 1.0 + 1e-6
    np.testing.assert_allclose(y[x <= 0.9], x[x <= 0.9], rtol=1e-6)
