"""A cohort as Clinica and ClinicaDL leave it on a user's disk (tests/conftest.py:clinica_cohort):
x-flipped and axis-permuted GM maps, ClinicaDL's labels.tsv with its own diagnosis words, two
sessions without a GM map, ClinicaDL's split layout and Clinica's atlas table. The workflow runs
to the report, and the store is the one canonical storage of the same sessions gives."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import CLINICA_MISSING, SMOKE, run_snakemake
from robustmaps import config as rmconfig
from robustmaps.io import load_nifti, read_tsv, save_nifti, write_tsv
from robustmaps.jobs.data import build_store
from robustmaps.preprocess import open_store
from robustmaps.splits import verify

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def clinica_run(clinica_cohort):
    """The cohort through the whole DAG to the report, with the downstream cut to what the
    check needs (one seed, AD masks, one saliency method, no search, no Sobol)."""
    root = clinica_cohort["root"]
    fast = root / "fast.yaml"
    fast.write_text(yaml.safe_dump({"train": {"seeds": [0]}, "masks": {"targets": ["AD"], "sweep": {"points": []}},
                                    "saliency": {"methods": ["vanilla"]}, "sobol": {"models": []},
                                    "hpo": {"enabled": False}}))
    work = root / "work"
    proc = run_snakemake(work, "--cores", "2", "--configfile", str(clinica_cohort["config"]), str(fast))
    run_snakemake(work, "--configfile", str(clinica_cohort["config"]), str(fast), "--report",
                  str(work / "report.html"))
    return {**clinica_cohort, "work": work, "log": proc.stdout + proc.stderr,
            "config_files": [str(clinica_cohort["config"]), str(fast)]}


def test_clinica_cohort_runs_to_the_report(clinica_run):
    results = clinica_run["work"] / "results"
    assert (clinica_run["work"] / "report.html").stat().st_size > 100_000
    summary = pd.read_csv(results / "training" / "summary.tsv", sep="\t", dtype={"fold": str})
    assert set(summary[summary.fold.isin(["0", "1"])].set) == {"validation", "test"}
    assert "NOTE: cohort 'main': 2 session(s) have no GM map and are excluded" in clinica_run["log"]


def test_missing_maps_excluded_with_their_reason(clinica_run):
    results = clinica_run["work"] / "results"
    qc = pd.read_csv(results / "cohort" / "main" / "qc.tsv", sep="\t", dtype=str)
    by_session = qc.set_index(["participant_id", "session_id"])
    (p0, s0, _), (p1, s1, link) = clinica_run["missing"]
    assert by_session.loc[(p0, s0)].status == "excluded"
    assert by_session.loc[(p0, s0)].reason == "GM map missing: file not found"
    assert by_session.loc[(p1, s1)].status == "excluded"
    assert re.fullmatch(r"GM map missing: dangling symlink \(points to \S+no-such-file.nii.gz, which does not exist\)",
                        by_session.loc[(p1, s1)].reason)
    mci = qc[qc.participant_id.str.startswith("sub-MCI")]
    assert (mci.status == "excluded").all() and mci.reason.str.contains("'MCI' not in data.labels").all()
    # the table's words passed through data.diagnoses (Dementia) and case (cn)
    kept = qc[~qc.participant_id.str.startswith("sub-MCI")]
    assert set(kept.diagnosis) == {"AD", "CN"}
    assert "site" in qc.columns  # extra columns are kept
    table = pd.read_csv(results / "cohort" / "summary.tsv", sep="\t")
    assert table.missing_maps.sum() == CLINICA_MISSING
    log = (results / "logs" / "qc" / "main.log").read_text()
    assert f"QC: {CLINICA_MISSING} session(s) excluded because their GM map is missing" in log


def test_flipped_and_permuted_storage_gives_the_canonical_store_byte_for_byte(clinica_run, smoke_run, tmp_path):
    """The store of the x-flipped CAPS (two sessions axis-permuted) equals, byte for byte, the store
    built from a canonical (RAS+) copy of the same sessions; and its images are the synthetic
    run's, session for session, with the same QC verdicts and splits that hold."""
    results = clinica_run["work"] / "results"
    store, index = open_store(results / "cohort" / "main" / "store.npy", results / "cohort" / "main" / "index.tsv")
    smoke, smoke_index = open_store(smoke_run / "results" / "cohort" / "main" / "store.npy",
                                    smoke_run / "results" / "cohort" / "main" / "index.tsv")
    where = {k: i for i, k in enumerate(zip(smoke_index.participant_id, smoke_index.session_id))}
    rows = [where[k] for k in zip(index.participant_id, index.session_id)]
    assert len(rows) == len(smoke) - CLINICA_MISSING
    np.testing.assert_array_equal(store[list(range(len(store)))], smoke[rows])
    smoke_qc = pd.read_csv(smoke_run / "results" / "cohort" / "main" / "qc.tsv", sep="\t", dtype=str)
    qc_all = pd.read_csv(results / "cohort" / "main" / "qc.tsv", sep="\t", dtype=str)
    verdicts = qc_all.set_index(["participant_id", "session_id"]).status
    missing = {(p, s) for p, s, _ in clinica_run["missing"]}
    for r in smoke_qc.itertuples():
        assert verdicts[(r.participant_id, r.session_id)] == ("excluded" if (r.participant_id, r.session_id) in missing
                                                              else r.status)
    assert verify(results / "splits", 2, index) == []
    qc = read_tsv(results / "cohort" / "main" / "qc.tsv", dtype={"participant_id": str, "session_id": str})
    for pid, ses, codes in clinica_run["permuted"]:
        assert qc.set_index(["participant_id", "session_id"]).loc[(pid, ses)].status == "pass", codes
    canonical = qc.copy()
    for i, row in qc[qc.status == "pass"].iterrows():
        data, affine = load_nifti(row.path)
        path = tmp_path / "caps" / f"{row.participant_id}_{row.session_id}.nii.gz"
        save_nifti(data, affine, path)  # RAS+ storage
        assert np.allclose(load_nifti(path, reorient=False)[1][:3, :3],
                           np.diag([abs(affine[0, 0])] * 3))  # stored canonical
        canonical.loc[i, "path"] = str(path)
    write_tsv(canonical, tmp_path / "qc.tsv")
    cfg = rmconfig.load(*clinica_run["config_files"])
    from robustmaps.grid import native_grid, working_grid

    build_store(tmp_path / "qc.tsv", results / "atlas" / "atlas.nii.gz", tmp_path / "store.npy",
                tmp_path / "index.tsv", tmp_path / "mean.nii.gz", native=native_grid(cfg).to_config(),
                working=working_grid(cfg).to_config(), dtype=cfg["preprocess"]["dtype"])
    assert (tmp_path / "store.npy").read_bytes() == (results / "cohort" / "main" / "store.npy").read_bytes()
    assert (tmp_path / "index.tsv").read_text() == (results / "cohort" / "main" / "index.tsv").read_text()


def test_imported_clinicadl_split_is_the_one_given(clinica_run):
    results = clinica_run["work"] / "results"
    split = clinica_run["split"]
    given = pd.read_csv(split / "test_baseline.tsv", sep="\t", dtype=str)
    used = pd.read_csv(results / "splits" / "test_baseline.tsv", sep="\t", dtype=str)
    assert sorted(used.participant_id) == sorted(given.participant_id)
    for k in range(2):
        given = pd.read_csv(split / "2_fold" / f"split-{k}" / "validation_baseline.tsv", sep="\t", dtype=str)
        used = pd.read_csv(results / "splits" / f"split-{k}" / "validation_baseline.tsv", sep="\t", dtype=str)
        assert sorted(used.participant_id) == sorted(given.participant_id)
    # the atlas came from Clinica's table: 120 AAL2 regions, no background
    labels = pd.read_csv(results / "atlas" / "labels.tsv", sep="\t")
    assert len(labels) == 120 and "Background" not in set(labels.name)


def test_swapped_label_numbers_plan_with_classes_by_name(smoke_run, tmp_path):
    """labels {AD: 0, CN: 1}: the plan holds (the mean-CN reference, the evaluation's positive class
    and every mask and saliency target are names; unit tests check each result) and re-runs the
    data stage, whose label map changed."""
    swap = tmp_path / "swap.yaml"
    swap.write_text(yaml.safe_dump({"data": {"labels": {"AD": 0, "CN": 1}}}))
    out = run_snakemake(smoke_run, "-n", "--configfile", str(SMOKE), str(swap)).stdout
    assert re.search(r"rule qc:\n(\s+\S.*\n)*?\s+reason: .*[Pp]arams have changed", out)
    assert "mask_reference" in out
