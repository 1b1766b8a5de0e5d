"""Validated reading and atomic writing of the files the workflow exchanges.

Every reader turns a broken input into one :class:`InputError` whose message names the file and
the problem; every writer writes to a temporary name in the destination folder and renames it
into place, so that a killed job never leaves a half-written output behind.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import os
import re
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Iterable, Iterator

import nibabel as nib
import numpy as np
import pandas as pd


class InputError(Exception):
    """Bad input (file, table or config value): the message names the culprit and the problem."""


# --------------------------------------------------------------------------------------- atomic
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    The temporary name keeps the file's suffixes (``.nii.gz``, ``.tsv``) so that libraries that
    choose a format from the extension behave the same. Works for files and folders.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", suffix="".join(path.suffixes) or None,
                               dir=path.parent)
    os.close(fd)
    os.unlink(tmp)
    tmp = Path(tmp)
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_tsv(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a tidy table (tab-separated, no index) atomically; deterministic bytes."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False, float_format="%.10g", lineterminator="\n")


def save_nifti(data: np.ndarray, affine: np.ndarray, path: str | os.PathLike,
               dtype: str | np.dtype = np.float32) -> None:
    """Save an array as NIfTI atomically (gzip mtime 0, so the bytes are reproducible).

    An integer ``dtype`` stores non-integral float data with a scale factor chosen by nibabel
    (integral data, such as labels, is stored as is).
    """
    dtype = np.dtype(dtype)
    data = np.asarray(data)
    if (np.issubdtype(dtype, np.integer) and np.issubdtype(data.dtype, np.floating)
            and not np.array_equal(data, np.round(data))):
        img = nib.Nifti1Image(np.asarray(data, dtype=np.float32), np.asarray(affine, dtype=float))
        img.set_data_dtype(dtype)
    else:
        img = nib.Nifti1Image(np.asarray(data, dtype=dtype), np.asarray(affine, dtype=float))
    img.header.set_xyzt_units("mm")
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    with atomic_path(path) as tmp:
        if str(path).endswith(".gz"):
            # nibabel's gzip writer stores the file name and mtime in the gzip header; write the
            # raw NIfTI bytes ourselves with mtime=0 and no name so that reruns are byte-identical.
            raw = img.to_bytes()  # applies the scale factor for integer dtypes
            with open(tmp, "wb") as fh, gzip.GzipFile(filename="", mode="wb", fileobj=fh,
                                                       compresslevel=1, mtime=0) as gz:
                gz.write(raw)
        else:
            nib.save(img, tmp)


# ---------------------------------------------------------------------------------------- NIfTI
_READ_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile, OSError, ValueError,
                nib.filebasedimages.ImageFileError)


def load_nifti(path: str | os.PathLike, squeeze: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI image fully (so truncation is detected here) -> (float32 data, affine).

    ``squeeze`` drops trailing singleton dimensions (SPM often writes X x Y x Z x 1).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes), not a NIfTI image")
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except _READ_ERRORS as exc:
        raise InputError(f"{path}: cannot read NIfTI image (truncated or corrupt file: {exc})") from None
    if squeeze:
        while data.ndim > 3 and data.shape[-1] == 1:
            data = data[..., 0]
    return data, np.asarray(img.affine, dtype=float)


# ------------------------------------------------------------------------------------------ TSV
def read_tsv(path: str | os.PathLike, required: Iterable[str] = (), what: str = "table",
             dtype: dict | None = None) -> pd.DataFrame:
    """Read a tab-separated table, checking that it parses and has the ``required`` columns."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: {what} not found")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            widths = [len(r) for r in csv.reader(fh, delimiter="\t") if r]
        bad = next((i for i, w in enumerate(widths) if w != widths[0]), None)
        if bad is not None:
            raise InputError(f"{path}: malformed {what}: line {bad + 1} has {widths[bad]} tab-separated "
                             f"fields, the header has {widths[0]}")
        df = pd.read_csv(path, sep="\t", dtype=dtype, keep_default_na=True, index_col=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: malformed {what} ({str(exc).strip()})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        hint = " (is it tab-separated?)" if len(df.columns) == 1 else ""
        raise InputError(f"{path}: {what} lacks column(s) {', '.join(missing)}; "
                         f"found {', '.join(map(str, df.columns))}{hint}")
    return df


SESSION_COLUMNS = ("participant_id", "session_id", "diagnosis", "age", "sex")
_SEX = {"m": "M", "male": "M", "f": "F", "female": "F"}


def read_sessions(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate a cohort's session table (participant_id, session_id, diagnosis, age, sex).

    Returns the table with normalised sex (M/F), float age and string ids; extra columns are kept.
    """
    df = read_tsv(path, SESSION_COLUMNS, what="session table",
                  dtype={"participant_id": str, "session_id": str, "diagnosis": str, "sex": str})
    if df.empty:
        raise InputError(f"{path}: session table has no rows")
    for col in ("participant_id", "session_id", "diagnosis", "sex"):
        bad = df[col].isna() | (df[col].astype(str).str.strip() == "")
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0]) + 2
            raise InputError(f"{path}: empty {col} on line {row}")
    df["participant_id"] = df["participant_id"].str.strip()
    df["session_id"] = df["session_id"].str.strip()
    df["diagnosis"] = df["diagnosis"].str.strip()
    for col, prefix in (("participant_id", "sub-"), ("session_id", "ses-")):
        bad = ~df[col].str.startswith(prefix)
        if bad.any():
            raise InputError(f"{path}: {col} '{df[col][bad].iloc[0]}' does not start with '{prefix}' (BIDS)")
    dup = df.duplicated(["participant_id", "session_id"], keep=False)
    if dup.any():
        pairs = sorted(set(zip(df.participant_id[dup], df.session_id[dup])))
        shown = ", ".join(f"{p}/{s}" for p, s in pairs[:5])
        raise InputError(f"{path}: duplicated session(s) {shown}" + (" ..." if len(pairs) > 5 else ""))
    age = pd.to_numeric(df["age"], errors="coerce")
    if age.isna().any():
        row = int(np.flatnonzero(age.isna().to_numpy())[0])
        raise InputError(f"{path}: age '{df['age'].iloc[row]}' on line {row + 2} is not a number")
    df["age"] = age.astype(float)
    sex = df["sex"].str.strip().str.lower().map(_SEX)
    if sex.isna().any():
        row = int(np.flatnonzero(sex.isna().to_numpy())[0])
        raise InputError(f"{path}: sex '{df['sex'].iloc[row]}' on line {row + 2} is not one of M, F")
    df["sex"] = sex
    return df


# ----------------------------------------------------------------------------------------- CAPS
CLINICA_GM_PATTERN = ("subjects/{participant_id}/{session_id}/t1/spm/segmentation/normalized_space/"
                      "{participant_id}_{session_id}_T1w_segm-graymatter_space-{space}"
                      "_modulated-{modulated}_probability.nii.gz")


def gm_path(caps_dir: str | os.PathLike, participant_id: str, session_id: str,
            pattern: str = CLINICA_GM_PATTERN, space: str = "Ixi549Space",
            modulated: str = "off") -> Path:
    """Path of one session's gray-matter map in a CAPS folder (Clinica t1-volume layout)."""
    rel = pattern.format(participant_id=participant_id, session_id=session_id, space=space,
                         modulated=modulated)
    return Path(caps_dir) / rel


def natural_key(text: str) -> tuple:
    """Sort key that orders ses-M6 < ses-M12 < ses-M100 (digits compared as numbers)."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(text)))
