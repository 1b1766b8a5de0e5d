"""Result volumes on disk (data layer): masks and saliency maps written on the working grid and,
resampled, on the native grid for display."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import torch
from nilearn.image import resample_img

from .grid import Grid
from .io import InputError, load_nifti, save_nifti


def to_native(volumes: np.ndarray, working: dict, native: dict, fill: float = 1.0) -> np.ndarray:
    """Masks (X, Y, Z[, K]) from the working grid to the native grid (linear interpolation; outside
    a cropped working box ``fill``: 1 for a mask, unperturbed; 0 for a saliency map)."""
    w, n = Grid.from_config(working), Grid.from_config(native)
    if w == n:
        return volumes
    # pad one voxel by replicating the edges, so that the half-voxel rim between the outermost
    # voxel centres and the box's border interpolates the edge values (resample_img fills 0 there)
    v = np.asarray(volumes, np.float32)
    pad = [(1, 1)] * 3 + [(0, 0)] * (v.ndim - 3)
    affine = w.affine.copy()
    affine[:3, 3] -= w.voxel_size
    img = nib.Nifti1Image(np.pad(v, pad, mode="edge"), affine)
    with warnings.catch_warnings():  # a mask that is still all 0/1 is not a label image: linear is right
        warnings.filterwarnings("ignore", message="Resampling binary images")
        out = resample_img(img, target_affine=n.affine, target_shape=n.shape, interpolation="linear",
                           force_resample=True, copy_header=True, fill_value=fill)
    out = np.clip(np.asarray(out.dataobj, np.float32), 0, 1)
    # outside the working box (a crop): fill
    inside = [(a >= o - w.voxel_size / 2) & (a <= o + (k - 0.5) * w.voxel_size)
              for a, o, k in zip(n.world_axes(), w.origin, w.shape)]
    box = np.ix_(*inside)
    keep = np.zeros(n.shape, bool)
    keep[box] = True
    out[~keep] = fill
    return out


def write_volumes(volumes: np.ndarray, grids: dict, working_nii, native_nii=None, dtype=np.float32,
                  fill: float = 1.0) -> None:
    """Volumes (X, Y, Z[, K]) on the working grid and, resampled, on the native grid (unless
    ``native_nii`` is None: per-session stacks that are not kept, and every file of a run whose
    working grid is the native grid, have no native copy).

    Stacks of per-session maps use ``dtype=np.int16``: 2 bytes a voxel, like float16, which
    NIfTI-1 cannot store. nibabel picks one scale factor per file; masks and the explainers' maps
    lie in [0, 1] per volume, so the error stays below 1/65534 of a volume's peak, finer than
    float16's (tested).
    """
    save_nifti(volumes, Grid.from_config(grids["working"]).affine, working_nii, dtype=dtype)
    if native_nii is not None:
        save_nifti(to_native(volumes, grids["working"], grids["native"], fill),
                   Grid.from_config(grids["native"]).affine, native_nii, dtype=dtype)


def load_reference(reference_nii, shape, device) -> torch.Tensor | float:
    """mu of equation (1): 1 (GM restored) without a reference map, else the map (working grid)."""
    if not reference_nii:
        return 1.0
    data, _ = load_nifti(reference_nii)
    if tuple(data.shape) != tuple(shape):
        raise InputError(f"{reference_nii}: reference map {data.shape} does not match the images {tuple(shape)}")
    return torch.from_numpy(data)[None, None].to(device)
