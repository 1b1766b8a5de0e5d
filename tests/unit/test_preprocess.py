import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from robustmaps.grid import Grid
from robustmaps.io import InputError, save_nifti
from robustmaps.jobs.data import build_store
from robustmaps.preprocess import mark_baseline, open_store, resample_to


def test_baseline_is_the_earliest_session_in_natural_order():
    idx = pd.DataFrame({"participant_id": ["sub-1"] * 3 + ["sub-2"] * 2,
                        "session_id": ["ses-M012", "ses-M006", "ses-M100", "ses-M24", "ses-M6"]})
    assert mark_baseline(idx).tolist() == [False, True, False, False, True]


def test_baseline_by_a_date_column():
    idx = pd.DataFrame({"participant_id": ["sub-1", "sub-1"], "session_id": ["ses-A", "ses-B"],
                        "exam_date": ["2012-05-01", "2010-01-03"]})
    assert mark_baseline(idx, "exam_date").tolist() == [False, True]
    with pytest.raises(InputError, match="baseline_column"):
        mark_baseline(idx, "nope")


def test_resample_keeps_a_constant_image_constant():
    src = Grid((24, 24, 24), 1.5, (0.0, 0.0, 0.0))
    dst = src.coarsened(4.5)
    out = resample_to(np.full(src.shape, 0.5, np.float32), src, dst)
    assert out.shape == dst.shape == (8, 8, 8)
    np.testing.assert_allclose(out[2:-2, 2:-2, 2:-2], 0.5, atol=1e-4)


def test_resample_averages_rather_than_aliases():
    src = Grid((30, 30, 30), 1.0, (0.0, 0.0, 0.0))
    stripes = np.zeros(src.shape, np.float32)
    stripes[::3] = 1.0  # a period equal to the target voxel: naive sampling would see 0 or 1
    out = resample_to(stripes, src, src.coarsened(3.0))
    inner = out[2:-2, 2:-2, 2:-2]
    assert abs(inner.mean() - 1 / 3) < 0.05 and inner.std() < 0.1


def _qc_table(tmp_path, src, n=4):
    rows = []
    for i in range(n):
        path = tmp_path / f"img{i}.nii.gz"
        save_nifti(np.full(src.shape, 0.1 * (i + 1), np.float32), src.affine, path)
        rows.append({"participant_id": f"sub-{i // 2}", "session_id": f"ses-M{12 * (1 - i % 2):03d}",
                     "diagnosis": "CN" if i < 2 else "AD", "label": int(i >= 2), "age": 70.0 + i,
                     "sex": "M", "status": "pass" if i < 3 else "fail", "reason": "", "max_value": 1.0,
                     "path": str(path)})
    qc = pd.DataFrame(rows)
    qc.to_csv(tmp_path / "qc.tsv", sep="\t", index=False)
    return tmp_path / "qc.tsv"


def test_build_store_round_trip(tmp_path):
    src = Grid((12, 12, 12), 2.0, (0.0, 0.0, 0.0))
    dst = src.coarsened(4.0)
    save_nifti(np.ones(dst.shape), dst.affine, tmp_path / "atlas.nii.gz", dtype=np.int16)
    qc = _qc_table(tmp_path, src)
    build_store(str(qc), str(tmp_path / "atlas.nii.gz"), str(tmp_path / "store.npy"),
                str(tmp_path / "index.tsv"), str(tmp_path / "mean.nii.gz"),
                native=src.to_config(), working=dst.to_config(), dtype="float16")
    store, index = open_store(tmp_path / "store.npy", tmp_path / "index.tsv")
    assert store.dtype == np.float16 and store.shape == (3, 6, 6, 6)
    assert index.session_id.tolist() == ["ses-M000", "ses-M012", "ses-M012"]  # sorted naturally
    # sub-1's ses-M000 failed QC: its baseline is its earliest session that passed
    assert index.baseline.tolist() == [True, False, True]
    # row i holds the image of index row i (images were constant 0.1 * (k + 1))
    np.testing.assert_allclose(store[[0, 1, 2]][:, 3, 3, 3].astype(float), [0.2, 0.1, 0.3], atol=1e-3)
    mean = nib.load(tmp_path / "mean.nii.gz")
    assert dst.matches(mean.shape, mean.affine)
    # streamed, not memory-mapped, yet the bytes of np.save of the same array
    np.save(tmp_path / "same.npy", np.asarray(store))
    assert (tmp_path / "store.npy").read_bytes() == (tmp_path / "same.npy").read_bytes()


def test_build_store_refuses_an_atlas_on_another_grid(tmp_path):
    src = Grid((12, 12, 12), 2.0, (0.0, 0.0, 0.0))
    save_nifti(np.ones((5, 5, 5)), np.eye(4), tmp_path / "atlas.nii.gz", dtype=np.int16)
    qc = _qc_table(tmp_path, src)
    with pytest.raises(InputError, match="atlas.nii.gz: atlas grid"):
        build_store(str(qc), str(tmp_path / "atlas.nii.gz"), str(tmp_path / "store.npy"),
                    str(tmp_path / "index.tsv"), str(tmp_path / "mean.nii.gz"),
                    native=src.to_config(), working=src.coarsened(4.0).to_config())
    assert not (tmp_path / "store.npy").exists() and not (tmp_path / "index.tsv").exists()


def test_store_reader_reads_rows_like_numpy_and_survives_pickling(tmp_path):
    import pickle

    from robustmaps.preprocess import StoreReader

    data = np.random.default_rng(0).random((5, 3, 4, 2)).astype(np.float16)
    np.save(tmp_path / "store.npy", data)
    reader = StoreReader(tmp_path / "store.npy")
    assert len(reader) == 5 and reader.shape == data.shape and reader.dtype == np.float16
    np.testing.assert_array_equal(reader[3], data[3])
    np.testing.assert_array_equal(reader[[4, 0, 4]], data[[4, 0, 4]])
    assert reader[[]].shape == (0, 3, 4, 2)
    clone = pickle.loads(pickle.dumps(reader))  # as a DataLoader worker receives it
    np.testing.assert_array_equal(clone[2], data[2])
    with pytest.raises(IndexError, match="row 5 out of range"):
        reader[5]


def test_store_reader_names_a_truncated_store(tmp_path):
    from robustmaps.preprocess import StoreReader

    np.save(tmp_path / "store.npy", np.zeros((4, 8, 8, 8), np.float32))
    raw = (tmp_path / "store.npy").read_bytes()
    (tmp_path / "store.npy").write_bytes(raw[: len(raw) - 100])
    with pytest.raises(InputError, match="store.npy: not a readable .npy store"):
        StoreReader(tmp_path / "store.npy")


FULL_DISK = r"""
set -e
mount -t tmpfs -o size=64k tmpfs "$DISK"
trap 'umount "$DISK"' EXIT
"$PY" - <<'PY'
import json, os, sys
from pathlib import Path
from robustmaps.io import StorageError
from robustmaps.jobs.data import build_store
a = json.loads(os.environ["ARGS"])
disk = Path(os.environ["DISK"])
out = {}
try:
    build_store(*[str(disk / n) if n.endswith(("npy", "tsv", "gz")) and "/" not in n else n for n in a["paths"]], **a["kw"])
except StorageError as exc:
    out["error"] = str(exc)
out["left"] = sorted(p.name for p in disk.iterdir())
print(json.dumps(out))
PY
mount -o remount,size=4m tmpfs "$DISK"
"$PY" - <<'PY'
import json, os
from pathlib import Path
from robustmaps.jobs.data import build_store
a = json.loads(os.environ["ARGS"])
disk = Path(os.environ["DISK"])
build_store(*[str(disk / n) if "/" not in n else n for n in a["paths"]], **a["kw"])
print(json.dumps({"freed": sorted(p.name for p in disk.iterdir()), "bytes": (disk / "store.npy").read_bytes().hex()}))
PY
"""


def test_store_on_a_full_disk_stops_with_one_message_and_completes_once_freed(tmp_path):
    """Issue 'long jobs': the store is written as a stream, so a full disk is an error naming the
    store (no SIGBUS from a sparse memory map), nothing is left at its name or as a temporary, and
    the same call completes once space is freed. A real full file system: a 64 KiB tmpfs in a
    private mount namespace (root only; skipped where mounting is refused), grown to 4 MiB."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) to mount a small tmpfs in a private mount namespace")
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare -m refused: {probe.stderr.decode().strip()}")
    src = Grid((24, 24, 24), 2.0, (0.0, 0.0, 0.0))
    dst = src.coarsened(2.0)  # 12 x 12 x 12 float32 = 6.9 KiB a session: 3 sessions fit in 64 KiB only ...
    save_nifti(np.ones(dst.shape), dst.affine, tmp_path / "atlas.nii.gz", dtype=np.int16)
    qc = _qc_table(tmp_path, src, n=16)
    qc_table = pd.read_csv(qc, sep="\t").assign(status="pass")  # ... of 16
    qc_table.to_csv(qc, sep="\t", index=False)
    disk = tmp_path / "disk"
    disk.mkdir()
    args = {"paths": [str(qc), str(tmp_path / "atlas.nii.gz"), "store.npy", "index.tsv", "mean.nii.gz"],
            "kw": {"native": src.to_config(), "working": dst.to_config(), "dtype": "float32"}}
    env = {**os.environ, "DISK": str(disk), "PY": sys.executable, "ARGS": json.dumps(args)}
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "bash", "-c", FULL_DISK], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    full, freed = (json.loads(line) for line in proc.stdout.strip().splitlines()[-2:])
    assert full["error"].startswith(f"{disk / 'store.npy'}: could not be written: no space left on the device")
    assert full["left"] == []  # no store, no temporary, no index or mean (they come after the store)
    assert freed["freed"] == ["index.tsv", "mean.nii.gz", "store.npy"]
    build_store(str(qc), str(tmp_path / "atlas.nii.gz"), str(tmp_path / "store.npy"), str(tmp_path / "index.tsv"),
                str(tmp_path / "mean.nii.gz"), native=src.to_config(), working=dst.to_config(), dtype="float32")
    assert bytes.fromhex(freed["bytes"]) == (tmp_path / "store.npy").read_bytes()
    assert not disk.exists() or list(disk.iterdir()) == []  # the tmpfs lived in the namespace only
