"""Shared fixtures: the repository, tiny images, and ONE smoke run of the workflow per session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "tests" / "config" / "smoke.yaml"
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def run_snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 1800) -> subprocess.CompletedProcess:
    """Run the workflow of this repository in ``workdir`` (results land in workdir/results)."""
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONHASHSEED": "0"})
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """The smoke config run once through every implemented stage; tests only read its results."""
    workdir = tmp_path_factory.mktemp("smoke")
    run_snakemake(workdir, "--cores", "2", "--configfile", str(SMOKE))
    return workdir


@pytest.fixture
def grid():
    from robustmaps.grid import Grid

    return Grid((8, 9, 7), 6.0, (-20.0, -25.0, -15.0))


@pytest.fixture
def write_image(tmp_path):
    """write_image(name, data, affine) -> path of a NIfTI written with nibabel."""
    import nibabel as nib

    def _write(name, data, affine=None):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), np.eye(4) if affine is None else affine), path)
        return path

    return _write


def copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, dirs_exist_ok=True)
