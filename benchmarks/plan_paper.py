"""Planning the paper's protocol on an ADNI-sized cohort: `snakemake -n` wall time and job count.

    .venv/bin/python benchmarks/plan_paper.py                       # 700 subjects, ~3,150 sessions
    .venv/bin/python benchmarks/plan_paper.py --subjects 700 --max-sessions 8 --repeats 3

Builds a stub Clinica CAPS folder (empty GM files with Clinica's names, enough for planning) with
``--subjects`` ADNI subjects of 1 to ``--max-sessions`` sessions each (CN, AD and MCI in turn;
MCI maps are never read) and 120 AIBL subjects, then times ``snakemake -n --configfile
config/paper.yaml`` on it (medians of ``--repeats`` runs, each in a fresh process, nothing
cached). Prints the plan's job count per rule and the Slurm submissions it makes with
profiles/slurm (whose groups run a model's evaluation inside its training job and the analysis
tables in one job). Goal: planning under 30 s, submissions in the hundreds.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
GM = "{pid}_{ses}_T1w_segm-graymatter_space-Ixi549Space_modulated-off_probability.nii.gz"


def stub_caps(root: Path, cohort: str, n: int, max_sessions: int) -> int:
    rows = []
    for i in range(n):
        pid = f"sub-{cohort}{i:04d}"
        diagnosis = ["CN", "AD", "MCI"][i % 3]
        for k in range(1 + (i * 3) % max_sessions):
            ses = f"ses-M{12 * k:03d}"
            rows.append((pid, ses, diagnosis, 70 + i % 20, "MF"[i % 2]))
            if diagnosis == "MCI":
                continue
            path = root / cohort / "caps" / "subjects" / pid / ses / "t1" / "spm" / "segmentation" / \
                "normalized_space" / GM.format(pid=pid, ses=ses)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    pd.DataFrame(rows, columns=["participant_id", "session_id", "diagnosis", "age", "sex"]).to_csv(
        root / cohort / "labels.tsv", sep="\t", index=False)
    return len(rows)


def job_counts(output: str) -> dict[str, int]:
    block = output.split("Job stats:")[1]
    counts = {}
    for line in block.splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


def submissions(counts: dict[str, int]) -> int:
    """Slurm jobs of a run with profiles/slurm: local rules stay on the login node, a group of
    connected jobs is one submission (model: train + evaluate; analysis: one job)."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    groups = profile.get("groups", {})
    n = sum(c for rule, c in counts.items() if rule not in groups and rule != "all")
    if counts.get("train"):
        n += counts["train"]  # each training job carries its evaluation
    grouped_alone = {g for r, g in groups.items() if r in counts} - {"model"}
    return n + len(grouped_alone)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=700)
    ap.add_argument("--max-sessions", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sessions = stub_caps(work / "data", "ADNI", args.subjects, args.max_sessions)
        aibl = stub_caps(work / "data", "AIBL", 120, 2)
        times, out = [], ""
        for _ in range(args.repeats):
            t = time.perf_counter()
            proc = subprocess.run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(work), "-n", "--quiet",
                                   "rules", "--configfile", str(REPO / "config" / "paper.yaml")],
                                  capture_output=True, text=True)
            times.append(time.perf_counter() - t)
            if proc.returncode != 0:
                sys.exit(proc.stderr[-3000:])
            out = proc.stdout + proc.stderr
        counts = job_counts(out)
    total = sum(counts.values())
    print(f"cohort: ADNI {args.subjects} subjects, {sessions} sessions (MCI excluded by data.labels); "
          f"AIBL 120 subjects, {aibl} sessions")
    print(f"snakemake -n --configfile config/paper.yaml: median {statistics.median(times):.1f} s "
          f"over {args.repeats} runs ({', '.join(f'{t:.1f}' for t in times)}); goal < 30 s")
    print(f"jobs planned: {total}; Slurm submissions with profiles/slurm groups: {submissions(counts)}")
    for rule, c in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"  {rule:20s} {c}")
    if re.search(r"\bsynthetic_cohort\b", out):
        print("warning: the plan generates a synthetic cohort")


if __name__ == "__main__":
    main()
