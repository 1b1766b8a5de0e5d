"""Voxel grids: the native grid of the cohorts and the working grid where all analysis happens.

Grids are axis-aligned (diagonal affine), as Clinica's t1-volume outputs in MNI space are. The
working grid covers the same field of view as the native grid with larger voxels (box edges
aligned), optionally cropped to a box given in world millimetres. Both are pure functions of the
config, so every cohort lands on the same working grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Clinica t1-volume grid (Ixi549Space): 121 x 145 x 121 voxels of 1.5 mm.
CLINICA_GRID = {"shape": [121, 145, 121], "voxel_size": 1.5, "origin": [-90.0, -126.0, -72.0]}


@dataclass(frozen=True)
class Grid:
    shape: tuple[int, int, int]
    voxel_size: float
    origin: tuple[float, float, float]  # world coordinates (mm) of voxel (0, 0, 0)'s centre

    @classmethod
    def from_config(cls, spec: dict) -> "Grid":
        return cls(tuple(int(s) for s in spec["shape"]), float(spec["voxel_size"]),
                   tuple(float(o) for o in spec["origin"]))

    def to_config(self) -> dict:
        return {"shape": list(self.shape), "voxel_size": self.voxel_size, "origin": list(self.origin)}

    @property
    def affine(self) -> np.ndarray:
        aff = np.diag([self.voxel_size] * 3 + [1.0])
        aff[:3, 3] = self.origin
        return aff

    @property
    def n_voxels(self) -> int:
        return int(np.prod(self.shape))

    def world_axes(self) -> list[np.ndarray]:
        """World coordinate (mm) of the voxel centres along each axis."""
        return [o + self.voxel_size * np.arange(n) for o, n in zip(self.origin, self.shape)]

    def matches(self, shape, affine, atol: float = 1e-3) -> bool:
        return tuple(shape) == self.shape and np.allclose(affine, self.affine, atol=atol)

    def describe(self) -> str:
        return (f"{'x'.join(map(str, self.shape))} voxels of {self.voxel_size:g} mm, origin "
                f"({', '.join(f'{o:g}' for o in self.origin)})")

    def coarsened(self, voxel_size: float | None) -> "Grid":
        """Same field of view (box edges aligned) with larger voxels; ``None`` keeps the grid."""
        if voxel_size is None or math.isclose(voxel_size, self.voxel_size):
            return self
        if voxel_size < self.voxel_size:
            raise ValueError(f"working voxel size {voxel_size} mm is smaller than the native "
                             f"{self.voxel_size} mm: up-sampling adds no information")
        extent = [n * self.voxel_size for n in self.shape]
        shape = tuple(int(math.floor(e / voxel_size + 1e-6)) for e in extent)
        origin = tuple(o - self.voxel_size / 2 + voxel_size / 2 for o in self.origin)
        return Grid(shape, float(voxel_size), origin)

    def cropped(self, box_mm) -> "Grid":
        """Keep the voxels whose centres lie in ``box_mm`` = [[x0, x1], [y0, y1], [z0, z1]] (mm)."""
        if box_mm is None:
            return self
        shape, origin = [], []
        for axis, (lo, hi) in zip(self.world_axes(), box_mm):
            keep = np.flatnonzero((axis >= lo - 1e-6) & (axis <= hi + 1e-6))
            if keep.size == 0:
                raise ValueError(f"crop box [{lo}, {hi}] mm leaves no voxel on an axis of {self.describe()}")
            shape.append(int(keep.size))
            origin.append(float(axis[keep[0]]))
        return Grid(tuple(shape), self.voxel_size, tuple(origin))


def native_grid(config: dict) -> Grid:
    return Grid.from_config(config["data"]["grid"])


def working_grid(config: dict) -> Grid:
    pre = config["preprocess"]
    return native_grid(config).coarsened(pre.get("voxel_size")).cropped(pre.get("crop_mm"))


# ---------------------------------------------------------------------------------- orientation
def to_orientation(data: np.ndarray, affine: np.ndarray, codes: str = "RAS") -> tuple[np.ndarray, np.ndarray]:
    """The same image stored with its voxel axes along ``codes`` (e.g. ``RAS``, or ``LAS`` as SPM
    writes normalised images when its template is stored so) -> (data, affine).

    Only flips and permutations of the voxel axes (nibabel's orientation utilities): the voxel
    values are moved, never interpolated, so the image is identical, value for value, in any
    storage. An oblique affine is brought to the closest orientation and stays oblique (it then
    does not match an axis-aligned grid: QC says so). Extra dimensions (4D) follow the first three.
    """
    import nibabel.orientations as nio

    data = np.asarray(data)
    current = nio.io_orientation(affine)
    transform = nio.ornt_transform(current, nio.axcodes2ornt(tuple(codes)))
    if np.array_equal(transform, [[0, 1], [1, 1], [2, 1]]):
        return data, np.asarray(affine, dtype=float)
    out = nio.apply_orientation(data, transform)
    new_affine = np.asarray(affine, dtype=float) @ nio.inv_ornt_aff(transform, data.shape[:3])
    return np.ascontiguousarray(out), new_affine


def canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The image on RAS+ storage (positive diagonal for an axis-aligned grid): how every image is
    read and every NIfTI the workflow writes is stored."""
    return to_orientation(data, affine, "RAS")


def describe_affine(affine: np.ndarray) -> str:
    """A 4 x 4 affine's top three rows on one line (for messages that print two affines)."""
    rows = np.asarray(affine, dtype=float)[:3]
    return "[" + "; ".join(" ".join(f"{v:g}" for v in r) for r in rows) + "]"
