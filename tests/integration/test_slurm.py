"""The smoke config through `snakemake --profile slurm` (the site profile installed by
`make slurm-profile`, plus the workflow profile profiles/default) on a real one-node Slurm
cluster (tests/slurm/up.sh: slurm-wlm + munge, partitions cpu and gpu, two fake GPUs).

A system test: it installs Debian packages and starts daemons as root, so it runs only when
ROBUSTMAPS_SYSTEM_TESTS=1 (`.ci/run` sets it when it runs as root on Debian; opt in locally
the same way). The cluster and the run are session fixtures (tests/conftest.py); the cluster is
stopped by the PIDs up.sh recorded, also when a test fails.
"""

from __future__ import annotations

import re

import pandas as pd
import pytest

from conftest import GRES_TARGET, RECOVERY_MARK, REPO, job_blocks, profile_runtime

pytestmark = pytest.mark.workflow

# result tables compared with the local run; columns that measure time are left out
TABLES = {
    "splits/summary.tsv": [],
    "splits/split-0/train.tsv": [],
    "splits/test_baseline.tsv": [],
    "training/summary.tsv": [],
    "masks/summary.tsv": [],
    "saliency/faithfulness.tsv": ["runtime_ms"],
    "sobol/indices.tsv": [],
    "analysis/roi_vectors.tsv": [],
    "analysis/similarity/summary.tsv": [],
    "analysis/stats/tests.tsv": [],
    "analysis/prob_cnn/summary.tsv": [],
}


def test_run_used_the_installed_site_profile_and_the_workflow_profile(slurm_run):
    """Both profiles took effect, each for its own keys: the site profile's default-resources
    (runtime 60 min, cpus_per_task = threads) survive the workflow profile, whose per-rule
    set-resources and groups apply; the partition file was found relative to the site profile."""
    work, log = slurm_run
    assert re.search(r"Using profiles? slurm and workflow specific profile "
                     + re.escape(str(REPO / "profiles" / "default")), log), log[:2000]
    by_rule = {}
    for job in job_blocks(log):
        by_rule.setdefault(job["rule"], []).append(job["resources"])
    runtime = f"runtime={profile_runtime('train')}"
    mem = f"mem_mb={profile_runtime('train', 'mem_mb')}"
    assert all(mem in r and runtime in r for r in by_rule["train"])  # workflow profile
    assert all("runtime=60" in r and "cpus_per_task=" in r for r in by_rule["qc"])  # site default-resources
    assert re.search(r"Group job model \(", log) and re.search(r"Group job analysis \(", log)
    # partitions.yaml was read from the profile's folder (the run's directory has none)
    assert re.search(r"Auto-selected partition 'cpu' for job", log) and not (work / "partitions.yaml").exists()


def test_every_job_ran_in_slurm_with_the_gpus_it_asked_for(slurm_run):
    work, log = slurm_run
    # both runs (the killed one and its recovery): every Slurm job id once
    ids = re.findall(r"has been submitted with SLURM jobid (\d+)", log)
    submitted = {"values": set(ids)}
    assert ids and len(set(ids)) == len(ids)
    jobs = [j for j in job_blocks(log) if not j["local"]]
    last = log.split(RECOVERY_MARK)[-1]
    done = re.findall(r"(\d+) of (\d+) steps \(100%\) done", last)
    assert done, last[-3000:]
    # every job of the finishing run but the local rules: the target `all` and the provenance (it
    # reads Snakemake's records)
    blocks = job_blocks(last)
    assert sorted(j["rule"] for j in blocks if j["local"]) == ["all", "provenance"]
    assert len([j for j in blocks if not j["local"]]) + 2 == int(done[-1][1])
    # grouped jobs share one Slurm job; the groups of the workflow profile (profiles/default)
    groups = {"train": "model", "evaluate": "model", "roi_vectors": "analysis", "similarity": "analysis",
              "regions": "analysis", "stats": "analysis"}
    gpu_groups = {groups[j["rule"]] for j in jobs if j["gpu"] and j["rule"] in groups}
    gpu_rules = {j["rule"] for j in jobs if j["gpu"]}
    assert {"train", "hpo_worker", "group_mask", "session_masks", "gradcam", "sobol", "prob_cnn"} <= gpu_rules
    for job in jobs:
        assert job["log"], f"{job['rule']} has no log"
        text = (work / job["log"]).read_text()
        ctx = re.search(r"SLURM_JOB_ID=(\S+), CUDA_VISIBLE_DEVICES=(\S+)", text)
        assert ctx, f"{job['log']}: no job context line"
        slurm_id, cuda = ctx.groups()
        assert slurm_id in submitted["values"], f"{job['rule']} ({job['log']}) ran outside a submitted Slurm job"
        if job["gpu"] or groups.get(job["rule"]) in gpu_groups:
            assert cuda in {"0", "1"}, f"{job['rule']} asked for a GPU and saw CUDA_VISIBLE_DEVICES={cuda}"
        else:
            assert cuda == "unset", f"CPU rule {job['rule']} saw CUDA_VISIBLE_DEVICES={cuda}"
        if job["gpu"] and job["rule"] in {"train", "hpo_worker", "group_mask", "session_masks", "gradcam", "prob_cnn"}:
            # Slurm gave a (fake) GPU, torch has no CUDA: without the escape the job would stop
            assert re.search(r"Slurm allocated a GPU \(SLURM_\w+=\S+\) but no usable CUDA on host .*"
                             r"ROBUSTMAPS_FAKE_GPUS=1, running on CPU", text), f"{job['log']}: no fake-GPU warning"
    # GPU jobs went to the gpu partition, CPU jobs to the cpu partition
    assert re.search(r"Auto-selected partition 'gpu' for job (train|model)", log)
    assert not re.search(r"Auto-selected partition 'gpu' for job (qc|split|preprocess|atlas)\b", log)


def test_recovery_after_the_controlling_snakemake_was_killed(slurm_run):
    """README's recovery: the run was killed with jobs in Slurm; `scancel --name <run id>` (the id
    the first run logged) left none of them; `--unlock` and the same command finished the run
    under a new run id, re-running the cut-off jobs. Its results equal the local run's (next test)
    and, byte for byte, an uninterrupted local run's (test_reproducibility.py)."""
    import json

    work, log = slurm_run
    first, last = log.split(RECOVERY_MARK)
    rec = json.loads((work / ".recovery.json").read_text())
    assert rec["in_slurm_at_kill"] and rec["left_after_scancel"] == []
    assert re.findall(r"SLURM run ID: (\S+)", first) == [rec["run_id"]]
    assert "(100%) done" not in first
    second_id = re.findall(r"SLURM run ID: (\S+)", last)
    assert second_id and second_id != [rec["run_id"]]
    # the preprocessing that was in Slurm at the kill ran again in the recovery
    assert re.search(r"^rule preprocess:$", last, re.M), "the cut-off preprocessing did not run again"


def test_slurm_results_equal_the_local_run(slurm_run, smoke_run):
    work, _ = slurm_run
    for name, skip in TABLES.items():
        local = pd.read_csv(smoke_run / "results" / name, sep="\t").drop(columns=skip)
        slurm = pd.read_csv(work / "results" / name, sep="\t").drop(columns=skip)
        pd.testing.assert_frame_equal(slurm, local, check_exact=False, rtol=1e-6, obj=name)
    # the search draws the same points (seeded per trial slot); with Hyperband, which trials are
    # pruned depends on how the two workers interleave, so states and values may differ
    cols = lambda t: t[["number", *sorted(c for c in t if c.startswith("params_"))]].sort_values("number")  # noqa: E731
    trials = [pd.read_csv(root / "results" / "hpo" / "trials.tsv", sep="\t") for root in (smoke_run, work)]
    pd.testing.assert_frame_equal(cols(trials[1]).reset_index(drop=True), cols(trials[0]).reset_index(drop=True))


def test_a_gpu_asked_for_as_gres_is_placed_too(slurm_gres_run, smoke_run):
    """ROBUSTMAPS_SLURM_GPU=gres (sites where --gpus is not accepted): the job asks for
    --gres=gpu:1 and no `gpu`, lands on the gpu partition, sees one of the two GPUs, and writes
    the same values as the run that asked with --gpus=1."""
    work, log = slurm_gres_run
    jobs = [j for j in job_blocks(log) if not j["local"]]
    assert [j["rule"] for j in jobs] == ["gradcam"], log[-3000:]
    assert "gres=gpu:1" in jobs[0]["resources"] and not re.search(r"\bgpu=", jobs[0]["resources"])
    assert re.search(r"Auto-selected partition 'gpu' for job", log)
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", log)
    ctx = re.search(r"SLURM_JOB_ID=(\S+), CUDA_VISIBLE_DEVICES=(\S+)", (work / jobs[0]["log"]).read_text())
    assert ctx and ctx.group(1) == submitted[0] and ctx.group(2) in {"0", "1"}
    timing = ["runtime_ms", "runtime_ms_sd", "seconds"]
    again, local = (pd.read_csv(root / GRES_TARGET, sep="\t").drop(columns=timing, errors="ignore")
                    for root in (work, smoke_run))
    pd.testing.assert_frame_equal(again, local, check_exact=False, rtol=1e-6)
