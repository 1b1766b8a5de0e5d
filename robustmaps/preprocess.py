"""Preprocessing: the sessions that passed QC, resampled to the working grid, in one array.

The store is ``store.npy`` (N x X x Y x Z, float16 or float32, memory-mappable with
``numpy.load(mmap_mode="r")``) plus ``index.tsv`` (row -> participant, session, diagnosis, label,
age, sex, baseline). Down-sampling smooths first (Gaussian, FWHM = sqrt(v_work^2 - v_native^2))
then interpolates linearly, so the working grid sees the local mean GM, not aliasing.
Intensity normalisation is NOT done here: it is a train-time transform.
"""

from __future__ import annotations

import logging
import math
import os

import nibabel as nib
import numpy as np
import pandas as pd

from .grid import Grid
from .io import InputError, load_nifti, natural_key, read_tsv
from .parallel import pmap

log = logging.getLogger(__name__)

INDEX_COLUMNS = ["row", "participant_id", "session_id", "diagnosis", "label", "age", "sex", "baseline"]


def resample_to(data: np.ndarray, source: Grid, target: Grid) -> np.ndarray:
    """Anti-aliased linear resampling of a native-grid volume to ``target``."""
    from nilearn.image import resample_img, smooth_img

    if source == target:
        return data.astype(np.float32)
    img = nib.Nifti1Image(data.astype(np.float32), source.affine)
    if target.voxel_size > source.voxel_size:
        img = smooth_img(img, fwhm=math.sqrt(target.voxel_size ** 2 - source.voxel_size ** 2))
    res = resample_img(img, target_affine=target.affine, target_shape=target.shape,
                       interpolation="linear", force_resample=True, copy_header=True)
    return np.asarray(res.dataobj, dtype=np.float32)


def mark_baseline(index: pd.DataFrame, column: str | None = None) -> pd.Series:
    """True for each subject's earliest session: natural order of session ids (ses-M000 < ses-M006
    < ses-M012), or the smallest value of ``column`` (a date or age column) when given."""
    if column is None:
        key = index["session_id"].map(natural_key)
        order = sorted(range(len(index)), key=lambda i: (index["participant_id"].iloc[i], key.iloc[i]))
    else:
        if column not in index.columns:
            raise InputError(f"data.cohorts.*.caps.baseline_column: column '{column}' is not in the session table")
        order = list(index.sort_values(["participant_id", column], kind="stable").index)
        order = [index.index.get_loc(i) for i in order]
    first = {}
    for i in order:
        first.setdefault(index["participant_id"].iloc[i], i)
    flags = np.zeros(len(index), dtype=bool)
    flags[list(first.values())] = True
    return pd.Series(flags, index=index.index)


_W: dict = {}


def _load(path: str) -> np.ndarray:
    data, _ = load_nifti(path)
    return resample_to(data, _W["source"], _W["target"]).astype(_W["dtype"])


def resampled(paths: list[str], source: Grid, target: Grid, dtype, threads: int = 1):
    """The GM maps at ``paths`` resampled from ``source`` to ``target`` as ``dtype``, in order
    (``threads`` forked workers)."""
    _W.update(source=source, target=target, dtype=np.dtype(dtype))
    try:
        yield from pmap(_load, paths, threads, chunksize=2)
    finally:
        _W.clear()


def read_index(index_tsv) -> pd.DataFrame:
    """A cohort store's index table (row -> participant, session, diagnosis, label, ...)."""
    return read_tsv(index_tsv, INDEX_COLUMNS, what="store index",
                    dtype={"participant_id": str, "session_id": str})


def baseline_flags(index: pd.DataFrame, participants, sessions, source="table") -> list[bool]:
    """The store index's ``baseline`` flag of each (participant, session): the one definition of a
    subject's baseline session (caps.baseline_column, else the earliest session; see
    :func:`mark_baseline`) for every stage."""
    flags = dict(zip(zip(index["participant_id"], index["session_id"]), index["baseline"].astype(bool)))
    keys = list(zip(participants, sessions))
    unknown = [k for k in keys if k not in flags]
    if unknown:
        raise InputError(f"{source}: session(s) {', '.join('/'.join(k) for k in unknown[:3])} are not in the "
                         "cohort's store index")
    return [bool(flags[k]) for k in keys]


class StoreReader:
    """Rows of a ``store.npy`` read on demand with ``os.pread``: no file mapping, so the process's
    resident memory stays at the rows in use however large the cohort (a memory map would keep
    every page it touched resident). Picklable (the file is reopened in each process), so
    DataLoader workers can share it. ``reader[i]`` is one image, ``reader[[i, j]]`` a stack."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        try:
            head = np.load(self.path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise InputError(f"{self.path}: not a readable .npy store ({exc})") from None
        if not head.flags.c_contiguous:
            raise InputError(f"{self.path}: store must be C-ordered")
        self.shape, self.dtype, self.offset = tuple(head.shape), head.dtype, int(head.offset)
        self.row_bytes = int(np.prod(self.shape[1:])) * self.dtype.itemsize
        del head
        self._fd, self._pid = None, None

    def __len__(self) -> int:
        return self.shape[0]

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def _row(self, i: int) -> np.ndarray:
        i = int(i)
        if not 0 <= i < self.shape[0]:
            raise IndexError(f"{self.path}: row {i} out of range 0..{self.shape[0] - 1}")
        buf = os.pread(self._file(), self.row_bytes, self.offset + i * self.row_bytes)
        if len(buf) != self.row_bytes:
            raise InputError(f"{self.path}: truncated at row {i}")
        return np.frombuffer(buf, self.dtype).reshape(self.shape[1:])

    def __getitem__(self, i):
        if np.ndim(i) == 0:
            return self._row(i)
        return np.stack([self._row(j) for j in i]) if len(i) else np.empty((0,) + self.shape[1:], self.dtype)

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_fd", "_pid")} | {"_fd": None, "_pid": None}

    def __del__(self):
        if getattr(self, "_fd", None) is not None and self._pid == os.getpid():
            os.close(self._fd)


def open_store(store_npy: str, index_tsv: str) -> tuple[StoreReader, pd.DataFrame]:
    """Open a cohort store (rows read on demand) and read its index (checked to agree)."""
    store = StoreReader(store_npy)
    index = read_index(index_tsv)
    if len(index) != len(store):
        raise InputError(f"{index_tsv}: {len(index)} rows but {store_npy} holds {len(store)} images")
    return store, index
