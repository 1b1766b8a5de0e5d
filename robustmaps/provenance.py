"""Provenance of a finished study: one JSON file with no timestamps.

What made the results: the versions of the packages that compute them, the workflow's git commit,
and per rule a hash of the params Snakemake recorded for the jobs that wrote them. The jobs are
found by walking Snakemake's own metadata records back from the study's final files (each record
names the rule, the params and the inputs of the job that wrote a file), so a rule is listed
exactly when one of its outputs went into the results. Two runs of the same config and code write
the same bytes; a changed setting shows up as a changed hash of the rules that use it.
"""
from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path

from .io import atomic_path

# the distributions whose versions decide the numbers (and the workflow engine that ran them)
PACKAGES = ("robustmaps", "snakemake", "snakemake-executor-plugin-slurm", "torch", "monai", "numpy", "scipy",
            "pandas", "nibabel", "nilearn", "SALib", "optuna", "scikit-learn", "matplotlib", "seaborn")

Record = Callable[[str], "dict | None"]  # path -> {"rule", "params", "input"} of the job that wrote it


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (None where it is not installed)."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(repo: str | Path) -> str:
    """HEAD of the git checkout ``repo`` with "-dirty" when tracked files differ from it;
    "unknown" outside a git checkout (an unpacked archive, no git)."""
    try:
        def git(*args):
            return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True,
                                  timeout=30).stdout.strip()
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def rule_params(targets: Iterable[str], record: Record) -> dict[str, dict]:
    """Per rule: how many distinct param sets its jobs had and the SHA-256 of those sets.

    Walks the records back from ``targets`` through every recorded input. Files without a record
    (the user's data, files written before Snakemake kept records) end the walk there.
    """
    seen: set[str] = set()
    todo = [str(t) for t in targets]
    jobs: dict[str, set[str]] = {}
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        rec = record(path)
        if not rec or not rec.get("rule"):
            continue
        jobs.setdefault(rec["rule"], set()).add(json.dumps(rec.get("params") or [], sort_keys=True))
        todo.extend(str(p) for p in rec.get("input") or [] if str(p) not in seen)
    out = {}
    for rule, params in sorted(jobs.items()):
        digest = hashlib.sha256("\n".join(sorted(params)).encode()).hexdigest()
        out[rule] = {"param_sets": len(params), "params_sha256": digest}
    return out


def provenance(targets: Iterable[str], record: Record, commit: str, config: dict,
               packages: Iterable[str] = PACKAGES) -> dict:
    """The provenance document (see the module docstring)."""
    return {
        "workflow": {"commit": commit,
                     "config_sha256": hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()},
        "python": platform.python_version(),
        "packages": package_versions(packages),
        "rules": rule_params(targets, record),
    }


def write_provenance(path: str | Path, targets: Iterable[str], record: Record, commit: str, config: dict) -> dict:
    """Write :func:`provenance` as sorted, indented JSON (atomically); returns the document."""
    doc = provenance(targets, record, commit, config)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return doc
