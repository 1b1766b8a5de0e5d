"""Two runs of the smoke config from scratch, in different directories, give the same bytes.

The second run is the Slurm run where the system tests are on (CI: jobs in other processes, on
other "GPUs", with the same thread counts), and a second local run elsewhere. Compared: every
file under results/ byte for byte, with these documented exceptions:
- logs and the HTML report (times of day);
- measured durations: `seconds` (per training epoch), `runtime_ms` (per saliency map) and the
  summaries' `runtime_ms` / `runtime_ms_sd`: those tables are compared without those columns;
- the hyperparameter search (results/hpo/): workers run side by side and Hyperband prunes on
  what the other workers reported so far, so states, values and durations depend on timing;
  the points it draws do not (tested in test_slurm.py and tests/unit/test_hpo.py).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from conftest import SMOKE, SYSTEM, run_snakemake

pytestmark = pytest.mark.workflow

EXEMPT_DIRS = ("logs", "hpo", "benchmarks")
EXEMPT_FILES = ("report.html",)
TIMING_COLUMNS = {"seconds", "runtime_ms", "runtime_ms_sd"}


@pytest.fixture(scope="module")
def second_run(request, tmp_path_factory) -> Path:
    if SYSTEM:
        return request.getfixturevalue("slurm_run")[0]
    work = tmp_path_factory.mktemp("second-run")
    run_snakemake(work, "--cores", "2", "--configfile", str(SMOKE))
    return work


def result_files(root: Path) -> set[str]:
    out = set()
    for p in (root / "results").rglob("*"):
        rel = p.relative_to(root / "results")
        if p.is_file() and rel.parts[0] not in EXEMPT_DIRS and p.name not in EXEMPT_FILES \
                and not p.name.endswith(".harness.html"):
            out.add(str(rel))
    return out


def test_two_runs_from_scratch_write_the_same_bytes(smoke_run, second_run):
    a, b = result_files(smoke_run), result_files(second_run)
    assert a == b, f"only in one run: {sorted(a ^ b)[:20]}"
    differ = []
    for rel in sorted(a):
        x, y = (smoke_run / "results" / rel).read_bytes(), (second_run / "results" / rel).read_bytes()
        if x == y:
            continue
        if rel.endswith(".tsv"):
            tx, ty = (pd.read_csv(root / "results" / rel, sep="\t", dtype=str) for root in (smoke_run, second_run))
            timing = TIMING_COLUMNS & set(tx.columns)
            if timing and tx.drop(columns=list(timing)).equals(ty.drop(columns=list(timing))):
                continue
        differ.append(rel)
    assert differ == [], f"{len(differ)} of {len(a)} files differ: {differ[:20]}"
    # the comparison is not vacuous: models, masks, maps, splits and tables are all in it
    for must in ("models/fold-0/seed-0/model.pt", "splits/split-0/train.tsv", "masks/summary.tsv",
                 "saliency/gradcam/fold-0/seed-0/maps.nii.gz", "analysis/similarity/pairs.tsv"):
        assert must in a
