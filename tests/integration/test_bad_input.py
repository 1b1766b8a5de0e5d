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


def _victim(root, smoke_run, k=0):
    """The GM map (in the copy ``root``) of the k-th session that passed QC in the smoke run."""
    qc = pd.read_csv(smoke_run / "results" / "cohort" / "main" / "qc.tsv", sep="\t")
    ok = qc[qc.status == "pass"].sort_values(["participant_id", "session_id"]).iloc[2 + k]
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


def broken_header(path):
    """A valid gzip stream whose NIfTI header names an unknown data type."""
    import gzip

    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[70:72] = np.int16(77).tobytes()  # datatype code
    path.write_bytes(gzip.compress(bytes(raw)))


def scaled_0_255(path):
    img = nib.load(path)
    _rewrite(path, 255 * np.asarray(img.dataobj, np.float32), img.affine)


def negative_values(path):
    img = nib.load(path)
    data = np.asarray(img.dataobj, np.float32)
    data[10:12, 10:12, 10:12] = -0.5
    _rewrite(path, data, img.affine)


# image cases: (edit of one GM map, outcome, message)
IMAGES = {
    "NaN voxels": (nan_voxels, "qc-fail", r"8 NaN/Inf voxel\(s\)"),
    "4D image": (four_d, "qc-fail", r"not a 3D image \(shape \(\d+, \d+, \d+, 2\)\)"),
    "other voxel size": (other_voxel_size, "qc-fail", r"grid \d+x\d+x\d+ at [\d.]+x[\d.]+x[\d.]+ mm differs from"),
    "truncated gzip": (truncated_gzip, "stop", r"cannot read NIfTI image \(truncated or corrupt file"),
    "broken header in a valid gzip": (broken_header, "stop",
                                      r"cannot read NIfTI image \(broken NIfTI header: data code 77 not recognized"),
    "probability map scaled 0-255": (scaled_0_255, "qc-fail", r"values above 1 \(maximum 2\d\d(\.\d+)?\) in a "
                                                              r"probability map \(modulation off\)"),
    "negative values": (negative_values, "qc-fail", r"negative values \(minimum -0.5\): not a GM map"),
}


STOPS = [case for case, (_, outcome, _) in IMAGES.items() if outcome == "stop"]
QC_FAILS = [case for case, (_, outcome, _) in IMAGES.items() if outcome == "qc-fail"]


@pytest.mark.parametrize("case", STOPS)
def test_unreadable_image_stops_the_qc_job_naming_it(caps_cohort, smoke_run, case):
    edit, _, message = IMAGES[case]
    root, cfg = bad_copy(caps_cohort, "image-" + case.replace(" ", "-"))
    victim = _victim(root, smoke_run)
    edit(victim)
    qc = root / "work" / "results" / "cohort" / "main" / "qc.tsv"
    proc = run_snakemake(root / "work", str(qc.relative_to(root / "work")), "--cores", "2",
                         "--configfile", str(cfg), check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert re.search(rf"ERROR: {re.escape(str(victim))}: {message}", text), text[-3000:]
    assert not qc.exists() and not list(qc.parent.glob(".tmp-*"))


def test_bad_images_fail_qc_each_with_its_reason(caps_cohort, smoke_run):
    """Every QC-fail case of IMAGES on its own session of one copy, checked in one QC run: each
    fails with its reason in qc.tsv and the log, and the study goes on."""
    root, cfg = bad_copy(caps_cohort, "images-qc-fail")
    victims = {}
    for k, case in enumerate(QC_FAILS):
        victims[case] = _victim(root, smoke_run, k)
        IMAGES[case][0](victims[case])
    qc = root / "work" / "results" / "cohort" / "main" / "qc.tsv"
    proc = run_snakemake(root / "work", str(qc.relative_to(root / "work")), "--cores", "2",
                         "--configfile", str(cfg), check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    table = pd.read_csv(qc, sep="\t")
    log = (root / "work" / "results" / "logs" / "qc" / "main.log").read_text()
    for case, victim in victims.items():
        message = IMAGES[case][2]
        row = table[table.path == str(victim)]
        assert row.status.tolist() == ["fail"] and re.search(message, row.reason.iloc[0]), (case, row.reason.tolist())
        assert re.search(rf"QC fail: {re.escape(str(victim))}: {message}", log), case
    # the same images failed as in the smoke run (whose synthetic CAPS this is), plus these
    smoke_qc = pd.read_csv(smoke_run / "results" / "cohort" / "main" / "qc.tsv", sep="\t")
    assert (table.status == "fail").sum() == len(QC_FAILS) + (smoke_qc.status == "fail").sum()


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
    "a column the workflow adds": (lambda df: df.assign(label=1),
                                   r"participants.tsv: session table has column\(s\) label, which the workflow "
                                   r"adds itself", True),
    "no AD after the diagnosis mapping": (lambda df: df.assign(diagnosis=df.diagnosis.replace({"AD": "Dementia"})),
                                          r"participants.tsv: no AD subject: the diagnoses found are \['CN', "
                                          r"'Dementia', 'MCI'\]; mapping used: data.labels \['CN', 'AD'\], "
                                          r"data.diagnoses \{\}", True),
}


def test_table_in_another_encoding_is_named_with_its_line(caps_cohort):
    root, cfg = bad_copy(caps_cohort, "table-latin1")
    df = pd.read_csv(root / "participants.tsv", sep="\t", dtype=str)
    df["site"] = "Lyon"
    df.loc[df.index[4], "site"] = "Orl\u00e9ans"  # written in Latin-1 below: byte 0xe9
    (root / "participants.tsv").write_bytes(df.to_csv(sep="\t", index=False).encode("latin-1"))
    proc = run_snakemake(root / "work", "-n", "--configfile", str(cfg), check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert re.search(r"ERROR: \S+participants.tsv: session table is not UTF-8 text: line 6 has byte 0xe9", text), text
    assert "Traceback" not in text and not (root / "work" / "results").exists()


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


def test_missing_nifti_is_named_before_anything_runs_when_missing_maps_are_errors(caps_cohort, smoke_run):
    """caps.missing: error keeps the strict behaviour (the default, exclude, is tested on the
    Clinica cohort: tests/integration/test_clinica.py)."""
    root, cfg = bad_copy(caps_cohort, "missing")
    victim = _victim(root, smoke_run)
    victim.unlink()
    config = yaml.safe_load(cfg.read_text())
    config["data"]["cohorts"]["main"]["caps"]["missing"] = "error"
    cfg.write_text(yaml.safe_dump(config))
    proc = run_snakemake(root / "work", "-n", "--configfile", str(cfg), check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert re.search(rf"ERROR: \S+participants.tsv: 1 of \d+ GM map\(s\) missing \(data.cohorts.main.caps.missing: "
                     rf"error\), e.g. {re.escape(str(victim))}: file not found", text), text[-3000:]
    assert not (root / "work" / "results").exists()


def test_many_missing_maps_stop_the_plan_with_one_expected_path(caps_cohort):
    """Sessions named ses-M00 in the table while Clinica wrote ses-M000: every map is 'missing',
    which is a naming problem, not failed sessions."""
    root, cfg = bad_copy(caps_cohort, "many-missing")
    df = pd.read_csv(root / "participants.tsv", sep="\t", dtype=str)
    df["session_id"] = df.session_id.str.replace("ses-M0", "ses-M", regex=False)
    df.to_csv(root / "participants.tsv", sep="\t", index=False)
    proc = run_snakemake(root / "work", "-n", "--configfile", str(cfg), check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert re.search(r"ERROR: \S+participants.tsv: (\d+) of \1 GM maps \(100%\) are missing, more than "
                     r"data.cohorts.main.caps.max_missing_fraction = 0.1: check .*session naming \(ses-M00 vs "
                     r"ses-M000\); expected for example \S+/sub-S0001/ses-M00/t1/spm/segmentation/normalized_space/"
                     r"sub-S0001_ses-M00_T1w_segm-graymatter_space-Ixi549Space_modulated-off_probability.nii.gz: "
                     r"file not found", text), text[-3000:]
    assert "Traceback" not in text and not (root / "work" / "results").exists()


def test_a_model_file_that_is_not_a_trained_model_stops_its_job(smoke_run, tmp_path):
    """A model.pt replaced by another file (here a pickle that would run code) stops the first
    job that loads it, naming the file; the code does not run; the job leaves no output."""
    import pickle
    import shutil

    work = tmp_path / "work"
    shutil.copytree(smoke_run, work, symlinks=True, ignore=shutil.ignore_patterns("report.html"))
    model = work / "results" / "models" / "fold-0" / "seed-0" / "model.pt"
    witness = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(witness), "w"))

    model.write_bytes(pickle.dumps({"state_dict": Payload()}))
    target = work / "results" / "masks" / "group" / "main" / "AD" / "fold-0" / "seed-0" / "mask.nii.gz"
    proc = run_snakemake(work, str(target.relative_to(work)), "--cores", "1", "--configfile", str(SMOKE), check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert re.search(rf"ERROR: {re.escape(str(model.relative_to(work)))}: not a trained model of this workflow",
                     text), text[-3000:]
    assert not witness.exists()
    assert not target.exists() and not list(target.parent.glob(".tmp-*"))


def test_unwritable_results_folder_stops_the_plan(caps_cohort, tmp_path):
    """results/ on a read-only mount (as root, chmod does not stop writes)."""
    import subprocess

    root, cfg = bad_copy(caps_cohort, "read-only")
    results = root / "work" / "results"
    results.mkdir(parents=True)
    mounted = subprocess.run(["mount", "--bind", str(results), str(results)], capture_output=True).returncode == 0
    if mounted:
        mounted = subprocess.run(["mount", "-o", "remount,ro,bind", str(results)], capture_output=True).returncode == 0
        if not mounted:
            subprocess.run(["umount", str(results)], capture_output=True)
    if not mounted:
        pytest.skip("needs a read-only bind mount (root with CAP_SYS_ADMIN): not allowed here")
    try:
        proc = run_snakemake(root / "work", "-n", "--configfile", str(cfg), check=False)
    finally:
        subprocess.run(["umount", str(results)], capture_output=True)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert re.search(rf"ERROR: {re.escape(str(results))}: cannot write there \(Read-only file system\)", text), text[-3000:]
