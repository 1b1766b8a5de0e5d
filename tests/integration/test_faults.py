"""Faults: the workflow killed (SIGKILL, the whole process group: Snakemake and its jobs) in the
middle of a training, a mask optimisation and a hyperparameter-search worker, then re-run as a
user would (`--unlock`, then `--rerun-incomplete`), ends with the results of an uninterrupted run (the shared smoke run); a job
that fails fails alone with a clear log, and --keep-going finishes every independent branch.

Each test works in a copy of the smoke run and re-runs only the jobs it needs.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import REPO, SMOKE, SNAKEMAKE, run_snakemake

pytestmark = pytest.mark.workflow


def copy_run(smoke_run: Path, dst: Path) -> Path:
    shutil.copytree(smoke_run, dst, symlinks=True, ignore=shutil.ignore_patterns("report.html"))
    return dst


def kill_when(workdir: Path, args: list[str], log: Path, pattern: str, timeout: float = 600) -> None:
    """Start Snakemake in its own process group, wait until the job's ``log`` (written anew)
    matches ``pattern``, then SIGKILL the whole group (Snakemake and the job's processes)."""
    log.unlink(missing_ok=True)
    proc = subprocess.Popen([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "PYTHONHASHSEED": "0"})
    try:
        t0 = time.monotonic()
        while not (log.exists() and re.search(pattern, log.read_text())):
            if proc.poll() is not None:
                raise AssertionError(f"Snakemake ended ({proc.returncode}) before {pattern!r} appeared in {log}")
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"{pattern!r} did not appear in {log} within {timeout} s")
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def rerun(workdir: Path, *args: str) -> None:
    """What a user does after a kill: remove Snakemake's stale lock, re-run the incomplete jobs."""
    run_snakemake(workdir, "--unlock", "--configfile", str(SMOKE))
    run_snakemake(workdir, "--rerun-incomplete", *args, "--configfile", str(SMOKE))


def models_equal(a: Path, b: Path) -> bool:
    ma, mb = (torch.load(p, weights_only=True) for p in (a, b))
    return ma["state_dict"].keys() == mb["state_dict"].keys() and all(
        torch.equal(ma["state_dict"][k], mb["state_dict"][k]) for k in ma["state_dict"])


def test_killed_training_resumes_to_the_same_model(smoke_run, tmp_path):
    work = copy_run(smoke_run, tmp_path / "run")
    target = "results/models/fold-0/seed-0/model.pt"
    log = work / "results" / "logs" / "train" / "fold-0_seed-0.log"
    kill_when(work, ["--cores", "1", "--forcerun", "train", target, "--configfile", str(SMOKE)], log,
              r"epoch 3: train loss")
    assert not (work / target).exists()  # Snakemake removed the old output; nothing half-written
    rerun(work, "--cores", "1", target)
    assert "resuming from" in log.read_text()
    assert models_equal(work / target, smoke_run / target)
    hist = [pd.read_csv(r / "results/models/fold-0/seed-0/history.tsv", sep="\t").drop(columns="seconds")
            for r in (work, smoke_run)]
    pd.testing.assert_frame_equal(hist[0], hist[1])


def test_killed_mask_optimisation_reruns_to_the_same_mask(smoke_run, tmp_path):
    work = copy_run(smoke_run, tmp_path / "run")
    folder = "results/masks/group/main/AD/fold-0/seed-0"
    log = work / "results" / "logs" / "masks" / "group_main_AD_fold-0_seed-0.log"
    kill_when(work, ["--cores", "1", "--forcerun", "group_mask", f"{folder}/mask.nii.gz",
                     "--configfile", str(SMOKE)], log, r"mask epoch 1:")
    assert not (work / folder / "mask.nii.gz").exists()
    rerun(work, "--cores", "1", f"{folder}/mask.nii.gz")
    assert "resuming from results/checkpoints/masks/group/main/AD/fold-0/seed-0/mask.nii.gz.ckpt" in log.read_text()
    assert not (work / "results" / "checkpoints" / "masks" / "group" / "main" / "AD" / "fold-0" / "seed-0").exists() \
        or not any((work / "results" / "checkpoints" / "masks" / "group" / "main" / "AD" / "fold-0" / "seed-0").iterdir())
    for name in ("mask.nii.gz", "summary.tsv", "history.tsv"):
        assert (work / folder / name).read_bytes() == (smoke_run / folder / name).read_bytes(), name


def test_killed_hpo_worker_reruns_to_the_same_trials(smoke_run, tmp_path):
    work = copy_run(smoke_run, tmp_path / "run")
    shutil.rmtree(work / "results" / "hpo")  # a search from scratch
    log = work / "results" / "hpo" / "logs" / "worker-0.log"
    kill_when(work, ["--cores", "2", "results/hpo/trials.tsv", "--configfile", str(SMOKE)], log,
              r"trial \d+ epoch 1:")
    rerun(work, "--cores", "2", "results/hpo/trials.tsv")
    after = pd.read_csv(work / "results" / "hpo" / "trials.tsv", sep="\t")
    before = pd.read_csv(smoke_run / "results" / "hpo" / "trials.tsv", sep="\t")
    dead = after[after.error.astype(str).str.startswith("interrupted")]
    assert len(dead) >= 1  # the killed trial is recorded, and does not count
    done = after.drop(dead.index)
    assert len(done) == len(before)
    params = sorted(c for c in before if c.startswith("params_"))
    # the same points (random search seeded per trial slot), whatever was interrupted
    key = lambda t: sorted(map(str, t[params].itertuples(index=False)))  # noqa: E731
    assert key(done) == key(before)


def test_a_failing_job_fails_alone_and_keep_going_finishes_the_rest(smoke_run, tmp_path):
    work = copy_run(smoke_run, tmp_path / "run")
    bad = work / "results" / "splits" / "split-1" / "train.tsv"
    bad.write_text("participant_id\tsession_id\nsub-NOPE\tses-M000\n")  # fold 1's training table, broken
    proc = run_snakemake(work, "--cores", "2", "--keep-going", "--forcerun", "evaluate", "--configfile",
                         str(SMOKE), check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    # the jobs that read fold 1's training table fail, each with one line naming it
    failed = set(re.findall(r"Error in rule (\w+):", text))
    assert "train" in failed and failed <= {"train", "mask_reference"}, failed
    logs = [work / "results" / "logs" / "train" / f"fold-1_seed-{seed}.log" for seed in (0, 1)]
    if "mask_reference" in failed:
        logs.append(work / "results" / "logs" / "masks" / "reference_fold-1.log")
    for log in logs:
        assert re.search(r"ERROR: \S*results/splits/split-1/train.tsv: ", log.read_text()), log
    for seed in (0, 1):
        assert not (work / "results" / "models" / "fold-1" / f"seed-{seed}" / "model.pt").exists()
    # fold 0's branch ran to its end: its evaluations were forced and finished
    for seed in (0, 1):
        assert f"results/models/fold-0/seed-{seed}/metrics.tsv" in text
        rel = Path("results") / "models" / "fold-0" / f"seed-{seed}" / "metrics.tsv"
        assert (work / rel).read_bytes() == (smoke_run / rel).read_bytes()


def test_controller_killed_alone_its_running_job_is_not_run_twice(smoke_run, tmp_path):
    """Snakemake killed alone (its job runs on, as jobs of a dead controller do on a cluster): the
    re-run's job for the same output stops with one line naming the running job instead of writing
    the same files; once that job has finished, the re-run completes with the uninterrupted model."""
    work = copy_run(smoke_run, tmp_path / "run")
    target = "results/models/fold-0/seed-0/model.pt"
    log = work / "results" / "logs" / "train" / "fold-0_seed-0.log"
    log.unlink()
    proc = subprocess.Popen([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(work), "--cores", "1",
                             "--forcerun", "train", target, "--configfile", str(SMOKE)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "PYTHONHASHSEED": "0"})
    t0 = time.monotonic()
    while not (log.exists() and re.search(r"epoch 1: train loss", log.read_text())):
        assert proc.poll() is None and time.monotonic() - t0 < 600
        time.sleep(0.2)
    orphan = int(re.search(r'"pid": (\d+)', next((work / "results" / "models" / "fold-0" / "seed-0").glob(
        ".lock-*")).read_text()).group(1))
    os.kill(orphan, signal.SIGSTOP)  # held until the re-run has tried (a smoke training lasts seconds)
    os.kill(proc.pid, signal.SIGKILL)  # the controller only: its training job lives on
    proc.wait()
    run_snakemake(work, "--unlock", "--configfile", str(SMOKE))
    second = run_snakemake(work, "--cores", "1", "--rerun-incomplete", target, "--configfile", str(SMOKE),
                           check=False)
    text = second.stdout + second.stderr + log.read_text()
    assert second.returncode != 0
    assert "is being written by another job still running (host" in text and f"pid {orphan}" in text
    os.kill(orphan, signal.SIGCONT)
    while True:  # the orphan finishes its training
        try:
            os.kill(orphan, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() - t0 < 900
        time.sleep(0.5)
    run_snakemake(work, "--unlock", "--configfile", str(SMOKE))
    run_snakemake(work, "--cores", "1", "--rerun-incomplete", target, "--configfile", str(SMOKE))
    assert models_equal(work / target, smoke_run / target)
