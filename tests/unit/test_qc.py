import numpy as np
import pandas as pd
import pytest

from robustmaps.io import InputError
from robustmaps.qc import check_not_empty, map_labels, run_qc

LABELS = {"CN": 0, "AD": 1}


def table(rows):
    return pd.DataFrame(rows, columns=["participant_id", "session_id", "diagnosis", "age", "sex"])


@pytest.fixture
def images(write_image, grid):
    good = np.zeros(grid.shape, np.float32)
    good[2:5, 2:6, 2:5] = 1.0
    nan = good.copy()
    nan[3, 3, 3] = np.nan
    moved = grid.affine.copy()
    moved[0, 3] += 3
    return {
        "good": write_image("good.nii.gz", good, grid.affine),
        "low": write_image("low.nii.gz", good * 0.8, grid.affine),
        "nan": write_image("nan.nii.gz", nan, grid.affine),
        "empty": write_image("empty.nii.gz", np.zeros(grid.shape), grid.affine),
        "4d": write_image("4d.nii.gz", np.stack([good, good], -1), grid.affine),
        "shape": write_image("shape.nii.gz", good[:-1], grid.affine),
        "affine": write_image("affine.nii.gz", good, moved),
    }


def test_qc_rejects_each_bad_image_with_its_reason(images, grid):
    names = list(images)
    sessions = table([(f"sub-{i}", "ses-M000", "AD", 70, "M") for i in range(len(names))])
    qc = run_qc(sessions, [images[n] for n in names], grid, LABELS, 0.95, threads=1)
    got = dict(zip(names, zip(qc.status, qc.reason)))
    assert got["good"] == ("pass", "")
    assert got["low"][0] == "fail" and "maximum GM 0.800 < 0.95" in got["low"][1]
    assert got["nan"][0] == "fail" and "NaN" in got["nan"][1]
    assert got["empty"][0] == "fail" and "empty" in got["empty"][1]
    assert got["4d"][0] == "fail" and "not a 3D image" in got["4d"][1]
    assert got["shape"][0] == "fail" and "differs from the cohort grid" in got["shape"][1]
    assert got["affine"][0] == "fail" and "differs from the cohort grid" in got["affine"][1]


def test_qc_parallel_equals_serial(images, grid):
    sessions = table([(f"sub-{i}", "ses-M000", "CN", 70, "F") for i in range(len(images))])
    a = run_qc(sessions, list(images.values()), grid, LABELS, 0.95, threads=1)
    b = run_qc(sessions, list(images.values()), grid, LABELS, 0.95, threads=2)
    pd.testing.assert_frame_equal(a, b)


def test_unreadable_image_stops_with_its_name(tmp_path, grid):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage")
    sessions = table([("sub-1", "ses-M000", "AD", 70, "M")])
    with pytest.raises(InputError, match="broken.nii.gz.*cannot read"):
        run_qc(sessions, [bad], grid, LABELS, 0.95)
    with pytest.raises(InputError, match="missing.nii.gz: file not found"):
        run_qc(sessions, [tmp_path / "missing.nii.gz"], grid, LABELS, 0.95)


def test_label_mapping_excludes_and_counts_other_diagnoses_and_unstable_subjects():
    sessions = table([
        ("sub-1", "ses-M000", "CN", 70, "M"), ("sub-2", "ses-M000", "MCI", 70, "M"),
        ("sub-3", "ses-M000", "CN", 70, "F"), ("sub-3", "ses-M012", "AD", 71, "F"),
        ("sub-4", "ses-M000", "MCI", 70, "F"), ("sub-4", "ses-M012", "AD", 71, "F"),
    ])
    df = map_labels(sessions, LABELS)
    assert df.status.tolist() == ["todo", "excluded", "excluded", "excluded", "excluded", "todo"]
    assert "MCI" in df.reason[1] and "changes across sessions" in df.reason[2]
    assert df.label[0] == 0 and df.label[5] == 1


def test_empty_class_after_qc_is_an_error():
    qc = pd.DataFrame({"participant_id": ["sub-1", "sub-2"], "session_id": ["ses-M000"] * 2,
                       "diagnosis": ["CN", "AD"], "status": ["pass", "fail"]})
    with pytest.raises(InputError, match="cohort 'main' has no AD session left after QC"):
        check_not_empty(qc, LABELS, "main", "table.tsv")
