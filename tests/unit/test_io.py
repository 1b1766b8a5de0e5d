
import numpy as np
import pandas as pd
import pytest

from robustmaps.io import (InputError, atomic_path, gm_path, load_nifti, natural_key, read_sessions,
                           read_tsv, save_nifti, write_tsv)


def test_save_nifti_is_byte_reproducible_and_round_trips(tmp_path):
    data = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    save_nifti(data, aff, tmp_path / "a.nii.gz")
    save_nifti(data, aff, tmp_path / "sub" / "b.nii.gz")
    assert (tmp_path / "a.nii.gz").read_bytes() == (tmp_path / "sub" / "b.nii.gz").read_bytes()
    back, back_aff = load_nifti(tmp_path / "a.nii.gz")
    np.testing.assert_array_equal(back, data)
    np.testing.assert_array_equal(back_aff, aff)


def test_save_nifti_integer_dtype_keeps_probabilities_precise(tmp_path):
    data = np.random.default_rng(1).random((4, 4, 4)).astype(np.float32)
    save_nifti(data, np.eye(4), tmp_path / "u.nii.gz", dtype=np.uint16)
    back, _ = load_nifti(tmp_path / "u.nii.gz")
    assert np.abs(back - data).max() < 2e-5


@pytest.mark.parametrize("content,expect", [
    (None, "file not found"),
    (b"", "empty file"),
    (b"not a nifti at all" * 10, "cannot read NIfTI"),
])
def test_load_nifti_names_the_file_and_the_problem(tmp_path, content, expect):
    path = tmp_path / "x.nii.gz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=expect) as err:
        load_nifti(path)
    assert str(path) in str(err.value)


def test_load_nifti_detects_truncated_gzip(tmp_path):
    save_nifti(np.random.default_rng(2).random((20, 20, 20)), np.eye(4), tmp_path / "ok.nii.gz")
    raw = (tmp_path / "ok.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match="truncated or corrupt"):
        load_nifti(tmp_path / "cut.nii.gz")


def test_load_nifti_squeezes_trailing_singleton(tmp_path, write_image):
    path = write_image("four.nii", np.ones((3, 4, 5, 1)))
    assert load_nifti(path)[0].shape == (3, 4, 5)
    path = write_image("real4d.nii", np.ones((3, 4, 5, 2)))
    assert load_nifti(path)[0].shape == (3, 4, 5, 2)


def test_atomic_path_leaves_nothing_when_the_block_fails(tmp_path):
    target = tmp_path / "out.tsv"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_a_folder(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "old").write_text("x")
    with atomic_path(tmp_path / "d") as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("y")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["new"]


def test_atomic_path_removes_stale_temporaries_of_its_own_output_only(tmp_path):
    """A job killed mid-write leaves .tmp-<name>-*: the next write of that output removes them,
    and leaves other outputs' temporaries alone (their jobs may be running)."""
    (tmp_path / ".tmp-out.tsv-dead1.tsv").write_text("half")
    (tmp_path / ".tmp-out.tsv-dead2").mkdir()
    (tmp_path / ".tmp-other.tsv-live.tsv").write_text("someone else's")
    with atomic_path(tmp_path / "out.tsv") as tmp:
        tmp.write_text("whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-other.tsv-live.tsv", "out.tsv"]


def test_atomic_path_syncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    import os

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                 real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(b))), real_replace(a, b)))
    with atomic_path(tmp_path / "out.tsv") as tmp:
        tmp.write_text("x")
    assert [e[0] for e in events] == ["fsync", "replace", "fsync"]
    assert ".tmp-out.tsv-" in events[0][1] and events[2][1] == str(tmp_path)


def test_a_full_disk_is_one_message_naming_the_output(tmp_path):
    import errno

    from robustmaps.io import StorageError

    target = tmp_path / "store.npy"
    with pytest.raises(StorageError, match=r"store.npy: could not be written: no space left on the device \(\d+ MiB"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OSError, match="Is a directory"):  # other errors stay what they are
        with atomic_path(target):
            raise IsADirectoryError(errno.EISDIR, "Is a directory")


def _sessions(tmp_path, rows, header="participant_id\tsession_id\tdiagnosis\tage\tsex"):
    path = tmp_path / "s.tsv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_read_sessions_normalises(tmp_path):
    path = _sessions(tmp_path, ["sub-1\tses-M000\tAD\t70.5\tmale", "sub-1\tses-M012\tAD\t71.5\tM",
                                "sub-2\tses-M000\tCN\t66\tf"])
    df = read_sessions(path)
    assert df.sex.tolist() == ["M", "M", "F"]
    assert df.age.dtype == float


@pytest.mark.parametrize("rows,header,expect", [
    (["sub-1\tses-M000\tAD\t70"], "participant_id\tsession_id\tdiagnosis\tage", "lacks column.*sex"),
    (["sub-1,ses-M000,AD,70,M"], "participant_id,session_id,diagnosis,age,sex", "tab-separated"),
    (["sub-1\tses-M000\tAD\t70\tM", "sub-1\tses-M000\tAD\t70\tM"], None, "duplicated session.*sub-1/ses-M000"),
    (["sub-1\tses-M000\t\t70\tM"], None, "empty diagnosis on line 2"),
    (["sub-1\tses-M000\tAD\told\tM"], None, "age 'old' on line 2"),
    (["sub-1\tses-M000\tAD\t70\tX"], None, "sex 'X' on line 2"),
    (["1\tses-M000\tAD\t70\tM"], None, "does not start with 'sub-'"),
    ([], None, "no rows"),
])
def test_read_sessions_rejects_bad_tables(tmp_path, rows, header, expect):
    kwargs = {} if header is None else {"header": header}
    path = _sessions(tmp_path, rows, **kwargs)
    with pytest.raises(InputError, match=expect) as err:
        read_sessions(path)
    assert str(path) in str(err.value)


def test_read_tsv_malformed(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("a\tb\n1\t2\t3\t4\n")
    with pytest.raises(InputError, match="malformed"):
        read_tsv(path, ["a"])


def test_write_tsv_deterministic(tmp_path):
    df = pd.DataFrame({"a": [1.0 / 3, 2.5], "b": ["x", "y"]})
    write_tsv(df, tmp_path / "a.tsv")
    write_tsv(df.copy(), tmp_path / "b.tsv")
    assert (tmp_path / "a.tsv").read_bytes() == (tmp_path / "b.tsv").read_bytes()


def test_caps_path_and_natural_order():
    p = gm_path("caps", "sub-01", "ses-M006")
    assert str(p) == ("caps/subjects/sub-01/ses-M006/t1/spm/segmentation/normalized_space/"
                      "sub-01_ses-M006_T1w_segm-graymatter_space-Ixi549Space_modulated-off_probability.nii.gz")
    assert sorted(["ses-M012", "ses-M100", "ses-M006", "ses-M000"], key=natural_key) == \
        ["ses-M000", "ses-M006", "ses-M012", "ses-M100"]
    assert sorted(["ses-M12", "ses-M6"], key=natural_key) == ["ses-M6", "ses-M12"]
