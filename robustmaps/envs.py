"""The conda spec of the rules (envs/robustmaps.yaml) pins exactly what requirements.txt pins.

``python -m robustmaps.envs requirements.txt envs/robustmaps.yaml`` rewrites the spec.
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


if __name__ == "__main__":
    write_conda_env(sys.argv[1], sys.argv[2])
