"""Validated reading and atomic writing of the files the workflow exchanges.

Every reader turns a broken input into one :class:`InputError` whose message names the file and
the problem; every writer writes to a temporary name in the destination folder and renames it
into place, so that a killed job never leaves a half-written output behind.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import glob
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

from .grid import canonical, to_orientation


class InputError(Exception):
    """Bad input (file, table or config value): the message names the culprit and the problem."""


class StorageError(Exception):
    """An output could not be written (disk full, quota, read-only file system): the message names
    the file and the reason; nothing was left at the output's name."""


# errors of the file system, not of the code: reported as one line naming the file
STORAGE_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                  errno.EROFS: "read-only file system", errno.EACCES: "permission denied"}


# --------------------------------------------------------------------------------------- atomic
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    The temporary name keeps the file's suffixes (``.nii.gz``, ``.tsv``) so that libraries that
    choose a format from the extension behave the same. Works for files and folders.

    Temporaries of ``path`` left by a killed job (``.tmp-<name>-*``) are removed first: only the
    job that makes ``path`` writes them. A file is fsync'ed before the rename and the folder after
    it, so that after a crash or on another node the name holds either the old or the whole new
    content. A full disk, a quota or a read-only file system raises :class:`StorageError` naming
    ``path``, with the temporary removed.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".tmp-{glob.escape(path.name)}-*"):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", suffix="".join(path.suffixes) or None,
                                   dir=path.parent)
    except OSError as exc:
        raise storage_error(exc, path) from None
    os.close(fd)
    os.unlink(tmp)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.is_file():
            _fsync(tmp)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
        _fsync(path.parent)
    except OSError as exc:
        if exc.errno in STORAGE_ERRNOS:
            raise storage_error(exc, path) from None
        raise
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def storage_error(exc: OSError, path: Path) -> Exception:
    """``exc`` as one line naming ``path`` when the file system refused it (StorageError), else as is."""
    if exc.errno not in STORAGE_ERRNOS:
        return exc
    try:
        usage = shutil.disk_usage(path.parent if path.parent.exists() else Path(path.anchor or "."))
        free = f" ({usage.free / 2**20:.0f} MiB free of {usage.total / 2**20:.0f} MiB)"
    except OSError:
        free = ""
    return StorageError(f"{path}: could not be written: {STORAGE_ERRNOS[exc.errno]}{free}; nothing was left at "
                        "this name. Free space (or fix the folder's permissions) and run again")


def _fsync(path: Path) -> None:
    """Flush ``path`` (a file, or a folder's entries) to the disk; file systems that cannot sync a
    folder (some network ones) are skipped."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def write_tsv(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a tidy table (tab-separated, no index) atomically; deterministic bytes."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False, float_format="%.10g", lineterminator="\n")


def save_nifti(data: np.ndarray, affine: np.ndarray, path: str | os.PathLike,
               dtype: str | np.dtype = np.float32, orientation: str = "RAS") -> None:
    """Save an array as NIfTI atomically (gzip mtime 0, so the bytes are reproducible).

    An integer ``dtype`` stores non-integral float data with a scale factor chosen by nibabel
    (integral data, such as labels, is stored as is). The voxel axes are stored along
    ``orientation``: RAS+ (a positive diagonal on an axis-aligned grid) for every file the workflow
    writes; the synthetic cohort stores its CAPS as SPM does (``LAS``: x right-to-left).
    """
    dtype = np.dtype(dtype)
    data, affine = to_orientation(np.asarray(data), affine, orientation)
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
_HEADER_ERRORS = (nib.spatialimages.HeaderDataError, nib.spatialimages.ImageDataError)


def missing_file_reason(path: str | os.PathLike) -> str:
    """Why ``path`` cannot be opened: a dangling symlink is named as such (with its target)."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        return f"dangling symlink (points to {os.readlink(path)}, which does not exist)"
    return "file not found"


def load_nifti(path: str | os.PathLike, squeeze: bool = True, reorient: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI image fully (so truncation is detected here) -> (float32 data, affine).

    ``squeeze`` drops trailing singleton dimensions (SPM often writes X x Y x Z x 1).
    ``reorient`` returns the image on RAS+ storage whatever its voxel order (flips and
    permutations only: the values are identical), so that an x-flipped SPM image and its
    canonical copy are the same image (:func:`robustmaps.grid.canonical`).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: {missing_file_reason(path)}")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes), not a NIfTI image")
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except _HEADER_ERRORS as exc:
        raise InputError(f"{path}: cannot read NIfTI image (broken NIfTI header: {exc})") from None
    except _READ_ERRORS as exc:
        raise InputError(f"{path}: cannot read NIfTI image (truncated or corrupt file: {exc})") from None
    if squeeze:
        while data.ndim > 3 and data.shape[-1] == 1:
            data = data[..., 0]
    affine = np.asarray(img.affine, dtype=float)
    if reorient and data.ndim >= 3:
        data, affine = canonical(data, affine)
    return data, affine


# ------------------------------------------------------------------------------------------ TSV
def _undecodable_line(path: Path) -> tuple[int, str] | None:
    """(line number, error) of the first line that is not UTF-8, or None."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return number, f"byte 0x{raw[exc.start]:02x} at column {exc.start + 1}"
    return None


def read_tsv(path: str | os.PathLike, required: Iterable[str] = (), what: str = "table",
             dtype: dict | None = None) -> pd.DataFrame:
    """Read a tab-separated UTF-8 table (a byte-order mark is accepted, as spreadsheet programs
    write one), checking that it parses and has the ``required`` columns."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: {what} not found" + (f" ({missing_file_reason(path)})" if path.is_symlink() else ""))
    bad_line = _undecodable_line(path)
    if bad_line:
        raise InputError(f"{path}: {what} is not UTF-8 text: line {bad_line[0]} has {bad_line[1]} (save it as "
                         "UTF-8, e.g. iconv -f latin1 -t utf-8)")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            widths = [len(r) for r in csv.reader(fh, delimiter="\t") if r]
        bad = next((i for i, w in enumerate(widths) if w != widths[0]), None)
        if bad is not None:
            raise InputError(f"{path}: malformed {what}: line {bad + 1} has {widths[bad]} tab-separated "
                             f"fields, the header has {widths[0]}")
        df = pd.read_csv(path, sep="\t", dtype=dtype, keep_default_na=True, index_col=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: malformed {what} ({str(exc).strip()})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        hint = " (is it tab-separated?)" if len(df.columns) == 1 else ""
        raise InputError(f"{path}: {what} lacks column(s) {', '.join(missing)}; "
                         f"found {', '.join(map(str, df.columns))}{hint}")
    return df


SESSION_COLUMNS = ("participant_id", "session_id", "diagnosis", "age", "sex")
#: Other names of the age column: ClinicaDL's get-labels keeps the merged table's age column,
#: ``age_bl`` for ADNI (the column nearest to "age" in its ``find_label``).
AGE_ALIASES = ("age_bl",)
#: Columns the workflow adds to the session table itself (qc.tsv, the store index, the splits):
#: a session table that already has one is refused, naming it.
ADDED_COLUMNS = ("label", "status", "reason", "max_value", "path", "row", "baseline", "cohort")
BLANK_DEMOGRAPHICS = ("exclude", "error")
_SEX = {"m": "M", "male": "M", "f": "F", "female": "F"}


def map_diagnoses(diagnosis: pd.Series, labels: dict[str, int], diagnoses: dict[str, str] | None = None) -> pd.Series:
    """The table's diagnoses as class names of ``labels``: a value that equals a class name or a
    key of ``diagnoses`` (a config mapping such as ``{Dementia: AD, NL: CN}``), case-insensitively
    and ignoring surrounding blanks, becomes that class name; any other value is kept as written
    (it is then excluded and counted: MCI, SMC ...)."""
    lookup = {str(k).strip().lower(): str(v) for k, v in (diagnoses or {}).items()}
    lookup |= {name.lower(): name for name in labels}
    text = diagnosis.astype(str).str.strip()
    return text.str.lower().map(lookup).fillna(text)


def read_sessions(path: str | os.PathLike, labels: dict[str, int] | None = None,
                  diagnoses: dict[str, str] | None = None, blank_demographics: str = "error") -> pd.DataFrame:
    """Read and validate a cohort's session table: ClinicaDL's ``labels.tsv`` (participant_id,
    session_id, diagnosis, age, sex; ``age_bl`` accepted for age) or any table with those columns.

    Returns the table with normalised sex (M/F), float age, string ids and, given ``labels``, the
    diagnoses mapped to class names (:func:`map_diagnoses`); extra columns are kept.
    ``blank_demographics``: ``error`` stops at a blank age or sex; ``exclude`` keeps the row with
    NaN there (QC then excludes the session and says why).
    """
    if blank_demographics not in BLANK_DEMOGRAPHICS:
        raise ValueError(f"blank_demographics must be one of {BLANK_DEMOGRAPHICS}")
    df = read_tsv(path, [c for c in SESSION_COLUMNS if c != "age"], what="session table",
                  dtype={"participant_id": str, "session_id": str, "diagnosis": str, "sex": str})
    if "age" not in df.columns:
        alias = next((a for a in AGE_ALIASES if a in df.columns), None)
        if alias is None:
            raise InputError(f"{path}: session table lacks column(s) age (or {', '.join(AGE_ALIASES)}); "
                             f"found {', '.join(map(str, df.columns))}")
        df = df.rename(columns={alias: "age"})
    taken = [c for c in ADDED_COLUMNS if c in df.columns]
    if taken:
        raise InputError(f"{path}: session table has column(s) {', '.join(taken)}, which the workflow adds itself "
                         "(rename or drop them; see config/README.md)")
    if df.empty:
        raise InputError(f"{path}: session table has no rows")
    for col in ("participant_id", "session_id", "diagnosis"):
        bad = df[col].isna() | (df[col].astype(str).str.strip() == "")
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0]) + 2
            raise InputError(f"{path}: empty {col} on line {row}")
    df["participant_id"] = df["participant_id"].str.strip()
    df["session_id"] = df["session_id"].str.strip()
    df["diagnosis"] = df["diagnosis"].str.strip()
    if labels is not None:
        df["diagnosis"] = map_diagnoses(df["diagnosis"], labels, diagnoses)
    for col, prefix in (("participant_id", "sub-"), ("session_id", "ses-")):
        bad = ~df[col].str.startswith(prefix)
        if bad.any():
            raise InputError(f"{path}: {col} '{df[col][bad].iloc[0]}' does not start with '{prefix}' (BIDS)")
    dup = df.duplicated(["participant_id", "session_id"], keep=False)
    if dup.any():
        pairs = sorted(set(zip(df.participant_id[dup], df.session_id[dup])))
        shown = ", ".join(f"{p}/{s}" for p, s in pairs[:5])
        raise InputError(f"{path}: duplicated session(s) {shown}" + (" ..." if len(pairs) > 5 else ""))
    blank_age = df["age"].isna() | (df["age"].astype(str).str.strip() == "")
    blank_sex = df["sex"].isna() | (df["sex"].astype(str).str.strip() == "")
    if blank_demographics == "error" and (blank_age | blank_sex).any():
        row = int(np.flatnonzero((blank_age | blank_sex).to_numpy())[0])
        raise InputError(f"{path}: blank {'age' if blank_age.iloc[row] else 'sex'} on line {row + 2} "
                         "(caps.blank_demographics: exclude would exclude such sessions)")
    age = pd.to_numeric(df["age"].where(~blank_age), errors="coerce")
    bad = age.isna() & ~blank_age
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        value = df["age"].iloc[row]
        raise InputError(f"{path}: age '{'' if pd.isna(value) else value}' on line {row + 2} is not a number")
    df["age"] = age.astype(float)
    sex = df["sex"].astype(str).str.strip().str.lower().map(_SEX)
    bad = sex.isna() & ~blank_sex
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(f"{path}: sex '{df['sex'].iloc[row]}' on line {row + 2} is not one of M, F")
    df["sex"] = sex
    return df


def blank_demographics_reason(sessions: pd.DataFrame) -> pd.Series:
    """Per session: the QC exclusion reason of a blank age or sex ('' when both are given)."""
    age, sex = sessions["age"].isna(), sessions["sex"].isna()
    reason = np.where(age & sex, "blank age and sex", np.where(age, "blank age", np.where(sex, "blank sex", "")))
    return pd.Series(reason, index=sessions.index)


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
