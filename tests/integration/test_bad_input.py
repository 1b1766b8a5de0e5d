"""Broken cohorts and configs, table-driven: each gives one clear message naming the culprit,
before any long computation where it can be known up front, and leaves no partial output.

Three kinds of outcome, by design:
- the plan stops (`snakemake -n` fails) with one `ERROR:` line: malformed session table, bad
  config, a class too small for the test set and the folds;
- the QC job stops with one `ERROR:` line: an image it cannot read (truncated gzip), a cohort
  left without a class after QC;
- a bad session fails QC and the study goes on without it: NaN voxels, a 4D image, another voxel
  size; `qc.tsv` gives the reason and the QC log names the file (a real cohort has a few bad
  scans; one should not stop a study of thousands);
- a diagnosis outside data.labels is excluded, and the plan says so, naming the table.
"""

from __future__ import annotations

import re

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import SMOKE, bad_copy, run_snakemake

pytestmark = pytest.mark.workflow


def _victim(root, smoke_run):
    """The GM map (in the copy ``root``) of a session that passed QC in the smoke run."""
    qc = pd.read_csv(smoke_run / "results" / "cohort" / "main" / "qc.tsv", sep="\t")
    ok = qc[qc.status == "pass"].sort_values(["participant_id", "session_id"]).iloc[2]
    return next((root / "caps" / "subjects" / ok.participant_id / ok.session_id).rglob("*.nii.gz"))


def _rewrite(path, data, affine):
    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), affine), path)


def nan_voxels(path):
    img = nib.load(path)
    data = np.asarray(img.dataobj, np.float32)
    data[10:12, 10:12, 10:12] = np.nan
    _rewrite(path, data, img.affine)


def four_d(path):
    img = nib.load(path)
    data = np.asarray(img.dataobj, np.float32)
    _rewrite(path, np.stack([data, data], axis=-1), img.affine)


def other_voxel_size(path):
    img = nib.load(path)
    affine = img.affine.copy()
    affine[:3, :3] *= 1.5
    _rewrite(path, np.asarray(img.dataobj, np.float32), affine)


def truncated_gzip(path):
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 3])


# image cases: (edit of one GM map, outcome, message)
IMAGES = {
    "NaN voxels": (nan_voxels, "qc-fail", r"8 NaN/Inf voxel\(s\)"),
    "4D image": (four_d, "qc-fail", r"not a 3D image \(shape \(\d+, \d+, \d+, 2\)\)"),
    "other voxel size": (other_voxel_size, "qc-fail", r"grid \d+x\d+x\d+ at [\d.]+x[\d.]+x[\d.]+ mm differs from"),
    "truncated gzip": (truncated_gzip, "stop", r"cannot read NIfTI image \(truncated or corrupt file"),
}


@pytest.mark.parametrize("case", list(IMAGES))
def test_bad_image(caps_cohort, smoke_run, case):
    edit, outcome, message = IMAGES[case]
    root, cfg = bad_copy(caps_cohort, "image-" + case.replace(" ", "-"))
    victim = _victim(root, smoke_run)
    edit(victim)
    qc = root / "work" / "results" / "cohort" / "main" / "qc.tsv"
    proc = run_snakemake(root / "work", str(qc.relative_to(root / "work")), "--cores", "2",
                         "--configfile", str(cfg), check=False)
    text = proc.stdout + proc.stderr
    if outcome == "stop":
        assert proc.returncode != 0
        assert re.search(rf"ERROR: {re.escape(str(victim))}: {message}", text), text[-3000:]
        assert not qc.exists() and not list(qc.parent.glob(".tmp-*"))
        return
    assert proc.returncode == 0, text[-3000:]
    table = pd.read_csv(qc, sep="\t")
    row = table[table.path == str(victim)]
    assert row.status.tolist() == ["fail"] and re.search(message, row.reason.iloc[0])
    # the same images failed as in the smoke run (whose synthetic CAPS this is), plus this one
    smoke_qc = pd.read_csv(smoke_run / "results" / "cohort" / "main" / "qc.tsv", sep="\t")
    assert (table.status == "fail").sum() == 1 + (smoke_qc.status == "fail").sum()
    log = (root / "work" / "results" / "logs" / "qc" / "main.log").read_text()
    assert re.search(rf"QC fail: {re.escape(str(victim))}: {message}", log)


def add_unknown_diagnosis(df):
    df.loc[df.index[:2], "diagnosis"] = "ADD"  # a typo
    return df


def drop_session_id(df):
    df.loc[df.index[3], "session_id"] = ""
    return df


# session-table cases: (edit, message of the plan, does the plan stop)
TABLES = {
    "unknown diagnosis": (add_unknown_diagnosis, r"NOTE: \S+participants.tsv: 2 session\(s\) with diagnosis 'ADD' are "
                                                 r"excluded: not in data.labels \(CN, AD\)", False),
    "missing column": (lambda df: df.drop(columns="sex"),
                       r"participants.tsv: session table lacks column\(s\) sex", True),
    "duplicated session": (lambda df: pd.concat([df, df.head(1)]),
                           r"participants.tsv: duplicated session\(s\) sub-S0001/ses-M000", True),
    "subject with no session": (drop_session_id, r"participants.tsv: empty session_id on line 5", True),
    "class too small for k folds": (lambda df: df[(df.diagnosis != "AD") | df.participant_id.isin(
        sorted(df[df.diagnosis == "AD"].participant_id.unique())[:3])],
        r"participants.tsv: 3 AD subject\(s\): too few for split.test_per_class=\d+ \+ split.n_folds=2", True),
}


@pytest.mark.parametrize("case", list(TABLES))
def test_bad_session_table(caps_cohort, case):
    edit, message, stops = TABLES[case]
    root, cfg = bad_copy(caps_cohort, "table-" + case.replace(" ", "-"))
    df = pd.read_csv(root / "participants.tsv", sep="\t", dtype=str)
    edit(df).to_csv(root / "participants.tsv", sep="\t", index=False)
    proc = run_snakemake(root / "work", "-n", "--configfile", str(cfg), check=False)
    text = proc.stdout + proc.stderr
    assert (proc.returncode != 0) == stops, text[-3000:]
    assert re.search(("ERROR: " if stops else "") + r"\S*" + message, text), text[-3000:]
    assert "Traceback" not in text
    assert not (root / "work" / "results").exists()


# config cases: (overlay on the smoke config, message)
CONFIGS = {
    "unknown key": ({"split": {"n_fold": 3}},
                    r"ERROR: config: split: Additional properties are not allowed \('n_fold' was"),
    "negative lr": ({"train": {"lr": -0.001}},
                    r"ERROR: config: train.lr: -0.001 is less than or equal to the minimum of 0"),
    "fold out of range": ({"train": {"folds": [0, 4]}},
                          r"ERROR: config: train.folds: fold 4 does not exist: split.n_folds is 2"),
    "labels": ({"data": {"labels": {"CN": 0, "AD": 0}}}, r"data.labels: needs one diagnosis mapped to 0 and one to 1"),
}


@pytest.mark.parametrize("case", list(CONFIGS))
def test_bad_config(tmp_path, case):
    data, message = CONFIGS[case]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(data))
    proc = run_snakemake(tmp_path, "-n", "--configfile", str(SMOKE), str(tmp_path / "bad.yaml"), check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert re.search(message, text), text[-2000:]
    assert not (tmp_path / "results").exists()


def test_empty_cohort_after_qc_stops_in_the_qc_job(caps_cohort):
    root, cfg = bad_copy(caps_cohort, "empty-after-qc")
    table = pd.read_csv(root / "participants.tsv", sep="\t")
    for pid in table[table.diagnosis == "AD"].participant_id.unique():  # every AD map too faint to pass
        for path in (root / "caps" / "subjects" / pid).rglob("*.nii.gz"):
            img = nib.load(path)
            _rewrite(path, 0.5 * np.asarray(img.dataobj, np.float32), img.affine)
    proc = run_snakemake(root / "work", "--cores", "2", "--configfile", str(cfg), check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert re.search(r"ERROR: .*cohort 'main' has no AD session left after QC", text), text[-3000:]
    assert not (root / "work" / "results" / "cohort" / "main" / "qc.tsv").exists()
    assert not (root / "work" / "results" / "splits").exists()  # nothing after it started


def test_missing_nifti_is_named_before_anything_runs(caps_cohort, smoke_run):
    root, cfg = bad_copy(caps_cohort, "missing")
    victim = _victim(root, smoke_run)
    victim.unlink()
    proc = run_snakemake(root / "work", "-n", "--configfile", str(cfg), check=False)
    assert proc.returncode != 0
    assert "Missing input files" in proc.stdout + proc.stderr and str(victim) in proc.stdout + proc.stderr
