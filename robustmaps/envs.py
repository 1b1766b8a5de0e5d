"""One set of pins: the conda spec of the rules (envs/robustmaps.yaml) pins exactly what
requirements.txt pins; the CUDA variants (requirements-cuda.txt, envs/robustmaps-cuda.yaml) pin the
same versions with torch's CUDA build from PyTorch's index instead of the CPU/default build.

``python -m robustmaps.envs requirements.txt envs/robustmaps.yaml`` rewrites the spec;
``python -m robustmaps.envs --cuda requirements.txt requirements-cuda.txt envs/robustmaps-cuda.yaml``
the CUDA lock and its conda spec (``make envs`` runs both).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

HEADER = """\
# Conda environment of every rule (snakemake --sdm conda). The pip pins are exactly those of
# requirements.txt (a test checks it); regenerate with `make envs`. On a GPU cluster pip takes
# PyPI's default (CUDA) build of the same torch version.
"""

_PIN = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*==\s*([^\s;#]+)")


# torch's CUDA build: PyTorch's wheel index for one CUDA version. Its CUDA runtime libraries
# (nvidia-* packages, and triton) come as that wheel's own exactly pinned dependencies.
CUDA_TAG = "cu130"
CUDA_INDEX = f"https://download.pytorch.org/whl/{CUDA_TAG}"
CUDA_HEADER = f"""\
# The lock for GPU nodes: requirements.txt's pins with torch's CUDA build ({CUDA_TAG}) from
# PyTorch's index; `make venv TORCH=cuda` installs it. torch's CUDA runtime packages (nvidia-*,
# triton) are exact pins of that wheel's own metadata, so pip installs the same ones everywhere.
# Generated from requirements.txt by `make envs` (a test checks the pins agree); not installable
# on the CPU-only CI machines.
"""
CUDA_CONDA_HEADER = """\
# Conda environment of every rule on GPU nodes (snakemake --sdm conda with
# ROBUSTMAPS_TORCH=cuda): requirements-cuda.txt's pins, torch's CUDA build from PyTorch's index.
# Regenerate with `make envs`; create it on the login node (`--conda-create-envs-only`).
"""
_RUNTIME = re.compile(r"^(nvidia-.*|triton)$")


def pins(lines) -> dict[str, str]:
    """{normalised package name: version} of every ``name==version`` line."""
    out = {}
    for line in lines:
        m = _PIN.match(line)
        if m:
            out[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return out


def requirement_pins(path: str | Path) -> dict[str, str]:
    return pins(Path(path).read_text().splitlines())


def conda_pins(path: str | Path) -> dict[str, str]:
    spec = yaml.safe_load(Path(path).read_text())
    pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict) and "pip" in d)
    return pins(pip)


def write_conda_env(requirements: str | Path, out: str | Path) -> None:
    reqs = [l.strip() for l in Path(requirements).read_text().splitlines() if _PIN.match(l)]
    body = {"channels": ["conda-forge"], "dependencies": ["python=3.11", "pip", {"pip": reqs}]}
    Path(out).write_text(HEADER + yaml.safe_dump(body, sort_keys=False))


def cuda_lines(requirements: str | Path) -> list[str]:
    """requirements.txt's pin lines with torch's CUDA build (``torch==V+cu130``) in torch's place."""
    out = []
    for line in Path(requirements).read_text().splitlines():
        m = _PIN.match(line)
        if not m:
            continue
        if m.group(1).lower() == "torch":
            line = f"torch=={m.group(2).split('+')[0]}+{CUDA_TAG}"
        out.append(line.strip())
    return out


def write_cuda_lock(requirements: str | Path, out: str | Path, conda_out: str | Path) -> None:
    lines = cuda_lines(requirements)
    Path(out).write_text(CUDA_HEADER + f"--extra-index-url {CUDA_INDEX}\n" + "\n".join(lines) + "\n")
    body = {"channels": ["conda-forge"],
            "dependencies": ["python=3.11", "pip", {"pip": [f"--extra-index-url {CUDA_INDEX}", *lines]}]}
    Path(conda_out).write_text(CUDA_CONDA_HEADER + yaml.safe_dump(body, sort_keys=False))


def cuda_differences(requirements: str | Path, cuda_requirements: str | Path) -> dict[str, tuple]:
    """{package: (lock's pin, CUDA lock's pin)} of every disagreement but the allowed ones: torch
    may differ only by its ``+cuXYZ`` build tag, and torch's CUDA runtime packages may be added."""
    cpu, gpu = requirement_pins(requirements), requirement_pins(cuda_requirements)
    diff = {}
    for name in sorted(set(cpu) | set(gpu)):
        a, b = cpu.get(name), gpu.get(name)
        if name == "torch" and a and b and b.split("+")[0] == a.split("+")[0] and re.fullmatch(r"cu\d+", b.partition("+")[2]):
            continue
        if a is None and _RUNTIME.match(name):
            continue
        if a != b:
            diff[name] = (a, b)
    return diff


if __name__ == "__main__":
    if sys.argv[1] == "--cuda":
        write_cuda_lock(*sys.argv[2:5])
    else:
        write_conda_env(sys.argv[1], sys.argv[2])
