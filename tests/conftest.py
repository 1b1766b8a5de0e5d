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


def pytest_collection_modifyitems(config, items):
    """GPU tests are skipped where CUDA is not visible."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="CUDA not visible")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# A tiny cohort whose AD images have lower "GM" in a known box: a CNN learns it in a few epochs,
# and masks / saliency maps have a ground truth to find.
TINY_SHAPE = (16, 20, 16)
TINY_BOX = (slice(4, 9), slice(6, 12), slice(5, 10))


def tiny_cohort(n: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, *TINY_SHAPE) float16 images in [0, 1] and labels (0 CN, 1 AD, alternating)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    base = np.zeros(TINY_SHAPE, np.float32)
    base[2:-2, 2:-2, 2:-2] = 0.7
    base = gaussian_filter(base, 1.0)
    images = base + gaussian_filter(rng.normal(0, 0.08, (n, *TINY_SHAPE)), (0, 1, 1, 1))
    atrophy = np.zeros(TINY_SHAPE, np.float32)
    atrophy[TINY_BOX] = 1
    atrophy = gaussian_filter(atrophy, 0.7)
    severity = rng.uniform(0.4, 0.6, n) * labels
    images = images * (1 - severity[:, None, None, None] * atrophy)
    return np.clip(images, 0, 1).astype(np.float16), labels


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory) -> dict:
    """A small paper CNN trained once on :func:`tiny_cohort` through the rule's entry point:
    {"model": model.pt path, "store": store.npy, "index": index.tsv, "images", "labels",
    "box": the planted region}. For the masks' and saliency tests."""
    import pandas as pd

    from robustmaps.io import write_tsv
    from robustmaps.training import train_model

    root = tmp_path_factory.mktemp("trained")
    images, labels = tiny_cohort()
    np.save(root / "store.npy", images)
    n = len(labels)
    index = pd.DataFrame({"row": np.arange(n), "participant_id": [f"sub-T{i:03d}" for i in range(n)],
                          "session_id": "ses-M000", "diagnosis": np.where(labels == 1, "AD", "CN"),
                          "label": labels, "age": 70.0, "sex": "F", "baseline": True})
    write_tsv(index, root / "index.tsv")
    cols = ["participant_id", "session_id", "diagnosis", "label", "row"]
    write_tsv(index.iloc[:36][cols], root / "train.tsv")
    write_tsv(index.iloc[36:][cols], root / "validation.tsv")
    settings = {"architecture": {"name": "paper", "n_blocks": 3, "filters": 4, "dropout": 0.2},
                "lr": 3e-3, "weight_decay": 0.0, "batch_size": 6, "max_epochs": 15, "patience": 15,
                "normalisation": "none", "cache_size": 64, "amp": False, "augmentation": {}, "workers": 0}
    train_model(root / "store.npy", root / "index.tsv", root / "train.tsv", root / "validation.tsv",
                root / "model.pt", root / "history.tsv", root / "ck" / "checkpoint.pt", fold=0, seed=0,
                settings=settings, labels={"CN": 0, "AD": 1}, device="cpu", threads=2)
    return {"model": root / "model.pt", "store": root / "store.npy", "index": root / "index.tsv",
            "train": root / "train.tsv", "validation": root / "validation.tsv", "history": root / "history.tsv",
            "images": images, "labels": labels, "box": TINY_BOX, "settings": settings, "root": root}


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
