"""Shared fixtures: the repository, tiny images, and ONE smoke run of the workflow per session."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

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
    """The smoke config run once through every implemented stage; tests only read its results.
    For development, ROBUSTMAPS_SMOKE_DIR names a finished smoke run of the same code to reuse."""
    if os.environ.get("ROBUSTMAPS_SMOKE_DIR"):
        return Path(os.environ["ROBUSTMAPS_SMOKE_DIR"])
    workdir = tmp_path_factory.mktemp("smoke")
    run_snakemake(workdir, "--cores", "2", "--configfile", str(SMOKE))
    return workdir


# ------------------------------------------------------------ the paper protocol at full grid
FULLGRID = [REPO / "config" / "paper.yaml", REPO / "config" / "rehearsal.yaml", REPO / "tests" / "config" / "fullgrid.yaml"]
_FULLGRID_RUN: dict = {}


def _start_fullgrid(workdir: Path) -> None:
    """Start the minimal full-grid run (tests/integration/test_fullgrid.py) in the background: one
    job at a time (about 3.5 GB at most), niced, so that it fills the cores the rest of the suite
    leaves idle (the suite used 37% of 2 cores, 2026-11-29) without slowing the tests much."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = open(workdir / ".run.log", "w")
    proc = subprocess.Popen(["nice", "-n", "10", SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
                             "--cores", "1", "--configfile", *map(str, FULLGRID)], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONHASHSEED": "0"})
    _FULLGRID_RUN.update(proc=proc, workdir=workdir, log=log)


def pytest_collection_finish(session):
    import tempfile

    if SYSTEM and any(name in item.nodeid for item in session.items for name in SLURM_TESTS):
        _start_slurm(Path(tempfile.mkdtemp(prefix="robustmaps-slurm-")))
    if os.environ.get("ROBUSTMAPS_FULLGRID_DIR") or not any(
            "test_fullgrid.py" in item.nodeid for item in session.items):
        return
    _start_fullgrid(Path(tempfile.mkdtemp(prefix="robustmaps-fullgrid-")))


def pytest_sessionfinish(session, exitstatus):
    _stop_slurm()
    proc = _FULLGRID_RUN.get("proc")
    if proc is not None and proc.poll() is None:  # the run's test was deselected or interrupted
        proc.terminate()
        proc.wait(timeout=120)
    if proc is not None:
        shutil.rmtree(_FULLGRID_RUN["workdir"], ignore_errors=True)


@pytest.fixture(scope="session")
def fullgrid_run() -> Path:
    """The minimal full-grid run, started in the background when the tests were collected; waits
    for it. ROBUSTMAPS_FULLGRID_DIR names a finished run to reuse (development)."""
    if os.environ.get("ROBUSTMAPS_FULLGRID_DIR"):
        return Path(os.environ["ROBUSTMAPS_FULLGRID_DIR"])
    if not _FULLGRID_RUN:
        import tempfile

        _start_fullgrid(Path(tempfile.mkdtemp(prefix="robustmaps-fullgrid-")))
    proc, workdir = _FULLGRID_RUN["proc"], _FULLGRID_RUN["workdir"]
    proc.wait(timeout=3600)
    _FULLGRID_RUN["log"].close()
    if proc.returncode != 0:
        raise AssertionError(f"full-grid run failed ({proc.returncode}):\n"
                             f"{(workdir / '.run.log').read_text()[-6000:]}")
    return workdir


# ----------------------------------------------------------------------- a real CAPS cohort
@pytest.fixture(scope="session")
def caps_cohort(smoke_run, tmp_path_factory):
    """The smoke run's synthetic CAPS used as a real one, plus MCI subjects (to be excluded)."""
    root = tmp_path_factory.mktemp("caps")
    shutil.copytree(smoke_run / "results" / "cohort" / "main" / "caps", root / "caps")
    sessions = pd.read_csv(smoke_run / "results" / "cohort" / "main" / "sessions.tsv", sep="\t")
    mci = sessions.head(3).copy()
    mci["participant_id"] = ["sub-MCI01", "sub-MCI02", "sub-MCI03"]
    mci["diagnosis"] = "MCI"
    for old, new in zip(sessions.head(3).participant_id, mci.participant_id):
        src = next((root / "caps" / "subjects" / old).rglob("*.nii.gz"))
        dst = Path(str(src).replace(old, new))
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    mci["session_id"] = "ses-M000"
    pd.concat([sessions, mci]).to_csv(root / "participants.tsv", sep="\t", index=False)
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["data"]["cohorts"] = {"main": {"name": "real", "source": "caps",
                                       "caps": {"caps_dir": str(root / "caps"), "tsv": str(root / "participants.tsv")}}}
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    return root


def bad_copy(caps_cohort: Path, name: str) -> tuple[Path, Path]:
    """A copy of the real-CAPS cohort (folder, participants.tsv, config) to break: (root, config)."""
    root = caps_cohort / name
    shutil.copytree(caps_cohort / "caps", root / "caps")
    shutil.copy(caps_cohort / "participants.tsv", root / "participants.tsv")
    cfg = yaml.safe_load((caps_cohort / "config.yaml").read_text())
    cfg["data"]["cohorts"]["main"]["caps"] = {"caps_dir": str(root / "caps"), "tsv": str(root / "participants.tsv")}
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    return root, root / "config.yaml"


# ------------------------------------------------------------------ a real one-node Slurm cluster
# System tests (root on Debian: they install packages and start daemons): on when
# ROBUSTMAPS_SYSTEM_TESTS=1, which .ci/run sets as root on Debian.
SYSTEM = os.environ.get("ROBUSTMAPS_SYSTEM_TESTS") == "1"


def install_site_profile(config_home: Path) -> Path:
    """`make slurm-profile` with XDG_CONFIG_HOME=config_home, as a user installs the Slurm site
    profile once: returns the installed folder (config_home/snakemake/slurm)."""
    proc = subprocess.run(["make", "-s", "-C", str(REPO), "slurm-profile"], capture_output=True, text=True,
                          env={**os.environ, "XDG_CONFIG_HOME": str(config_home)}, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return config_home / "snakemake" / "slurm"


def user_command(cwd: Path, config_home: Path, *args: str, env: dict | None = None) -> tuple[list, dict]:
    """`snakemake --profile slurm -s <repo>/Snakefile ...` and its environment: the site profile
    of ``config_home`` (XDG_CONFIG_HOME), the venv's bin first on PATH, as an activated venv has it."""
    cmd = ["snakemake", "--profile", "slurm", "-s", str(REPO / "Snakefile"), *args]
    path = os.pathsep.join([str(Path(SNAKEMAKE).parent), os.environ.get("PATH", "")])
    return cmd, {**os.environ, "PATH": path, "XDG_CONFIG_HOME": str(config_home), "PYTHONHASHSEED": "0",
                 **(env or {})}


def snakemake_as_user(cwd: Path, config_home: Path, *args: str, timeout: int = 3600,
                      env: dict | None = None) -> subprocess.CompletedProcess:
    """`snakemake --profile slurm ...` literally, from ``cwd`` (not the repository), with the site
    profile of ``config_home``; the workflow profile (profiles/default) is found beside the
    Snakefile."""
    cmd, full_env = user_command(cwd, config_home, *args, env=env)
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)


# The Slurm run below waits on Slurm most of its time (its jobs take seconds; each DAG level waits
# for the plugin's next status check, 10 s or more): about 11 minutes of which half are idle
# (2026-11-30). Where a test needs it, it starts in a thread when the tests are collected, beside
# the rest of the suite, its jobs niced (slurmd started with `nice -n 10`, which its jobs inherit)
# so that they take the cores the suite leaves idle; the fixture waits for it.
_SLURM: dict = {}
SLURM_TESTS = ("test_slurm.py", "test_reproducibility.py")


def _cluster_up(root: Path) -> None:
    env = {**os.environ, "SLURM_CI_DIR": str(root), "SLURMD_NICE": "10"}
    _SLURM["cluster"] = root  # down.sh stops whatever up.sh started, also after a failure
    proc = subprocess.run(["bash", str(REPO / "tests" / "slurm" / "up.sh")], env=env, capture_output=True,
                          text=True, timeout=900)
    if proc.returncode != 0:
        raise AssertionError(f"tests/slurm/up.sh failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def _cluster_down() -> None:
    root = _SLURM.get("cluster")
    if root is not None:
        subprocess.run(["bash", str(REPO / "tests" / "slurm" / "down.sh")], capture_output=True, timeout=120,
                       env={**os.environ, "SLURM_CI_DIR": str(root)})


def _start_slurm(root: Path) -> None:
    def body():
        try:
            _cluster_up(root / "cluster")
            _SLURM["result"] = _slurm_run(root / "run")
        except BaseException as exc:  # noqa: BLE001 - handed to the fixture, raised there
            _SLURM["error"] = exc

    import threading

    thread = threading.Thread(target=body, name="slurm-run", daemon=True)
    _SLURM.update(thread=thread, root=root)
    thread.start()


def _stop_slurm() -> None:
    thread = _SLURM.get("thread")
    if thread is not None and thread.is_alive():  # its tests were deselected or interrupted
        _SLURM["stopping"] = True  # the thread starts no further snakemake
        proc = _SLURM.get("proc")
        if proc is not None and proc.poll() is None:
            proc.terminate()  # snakemake cancels its Slurm jobs on SIGTERM
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        thread.join(timeout=60)
    _cluster_down()
    if "root" in _SLURM:
        shutil.rmtree(_SLURM["root"], ignore_errors=True)


RECOVERY_MARK = "\n===== recovery: the same command after scancel and --unlock =====\n"


def _squeue_names(name: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "--name", name, "-o", "%i %T"], capture_output=True, text=True)
    return out.stdout.split("\n")[:-1] if out.returncode == 0 else [f"squeue failed: {out.stderr}"]


def _snakemake_as_user_killable(cwd: Path, config_home: Path, *args: str, env: dict) -> tuple[int, str]:
    """snakemake_as_user, its process kept where the session's end can kill it."""
    _check_not_stopping()
    cmd, full_env = user_command(cwd, config_home, *args, env=env)
    proc = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _SLURM["proc"] = proc
    out, _ = proc.communicate(timeout=3600)
    return proc.returncode, out


def _check_not_stopping() -> None:
    if _SLURM.get("stopping"):
        raise RuntimeError("the test session ended before the Slurm run")


def _slurm_run(work: Path) -> tuple[Path, str]:
    """The smoke config run on the test cluster as README says (see the fixture ``slurm_run``)."""
    import json
    import signal
    import time

    work.mkdir(parents=True)
    config_home = work / ".config"  # outside results/
    install_site_profile(config_home)
    # the cluster's GPUs are fake (gres on /dev/fakegpu*) and torch is the CPU build: the
    # documented escape lets the jobs Slurm gave a GPU run on CPU (sbatch --export=ALL passes it)
    env = {"ROBUSTMAPS_FAKE_GPUS": "1"}
    args = ("--configfile", str(SMOKE))
    cmd, full_env = user_command(work, config_home, *args, env=env)
    first_log = work / ".first-run.log"
    with open(first_log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=work, env=full_env, stdout=fh, stderr=subprocess.STDOUT)
    _SLURM["proc"] = proc
    deadline, run_id, in_slurm = time.time() + 900, None, []
    try:
        while time.time() < deadline and proc.poll() is None:
            text = first_log.read_text()
            run_id = run_id or next(iter(re.findall(r"SLURM run ID: (\S+)", text)), None)
            after = text.split("rule preprocess:", 1)
            if run_id and len(after) == 2 and "has been submitted with SLURM jobid" in after[1]:
                in_slurm = _squeue_names(run_id)
                if in_slurm:
                    break
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)  # the controlling snakemake only: its jobs stay in Slurm
        proc.wait()
    _check_not_stopping()
    assert run_id and in_slurm, f"no job of the run in Slurm to recover from:\n{first_log.read_text()[-4000:]}"
    subprocess.run(["scancel", "--name", run_id], check=True, capture_output=True)
    for _ in range(120):
        left = _squeue_names(run_id)
        if not left:
            break
        time.sleep(0.5)
    unlock = snakemake_as_user(work, config_home, *args, "--unlock", env=env, timeout=300)
    assert unlock.returncode == 0, unlock.stderr[-3000:]
    code, out = _snakemake_as_user_killable(work, config_home, *args, env=env)
    if code != 0:
        raise AssertionError(f"snakemake failed ({code}):\n{out[-8000:]}")
    (work / ".recovery.json").write_text(json.dumps({"run_id": run_id, "in_slurm_at_kill": in_slurm,
                                                     "left_after_scancel": left}))
    return work, first_log.read_text() + RECOVERY_MARK + out


@pytest.fixture(scope="session")
def slurm_run():
    """The smoke config run on the test cluster as README says: the site profile installed by
    `make slurm-profile` into a temporary XDG_CONFIG_HOME (used as installed: the test cluster's
    partitions are named like the template's, the account is left to the plugin), then
    `snakemake --profile slurm` from the run's directory with the repository's Snakefile, with
    ROBUSTMAPS_FAKE_GPUS=1 in its environment for the cluster's fake GPUs.

    With README's recovery on the way: the controlling snakemake is killed (SIGKILL) while its
    first preprocessing job is in Slurm (before the search and training start, whose interrupted
    trials would be recorded), its jobs are cancelled by the run id it logged (`scancel --name`),
    then `--unlock` and the same command finish the run. Returns (workdir, log of both runs joined
    by RECOVERY_MARK); work/.recovery.json records what the recovery saw. Started in the
    background when the tests were collected (above); waits for it."""
    if not SYSTEM:
        pytest.skip("system test: set ROBUSTMAPS_SYSTEM_TESTS=1 (root on Debian; .ci/run does)")
    if not _SLURM:
        import tempfile

        _start_slurm(Path(tempfile.mkdtemp(prefix="robustmaps-slurm-")))
    _SLURM["thread"].join(timeout=3600)
    if "error" in _SLURM:
        raise _SLURM["error"]
    if "result" not in _SLURM:
        raise AssertionError("the Slurm run did not finish within an hour")
    return _SLURM["result"]


# one GPU job of the finished Slurm run, run again with another form of GPU request
GRES_TARGET = "results/saliency/gradcam/fold-0/seed-0/faithfulness.tsv"


@pytest.fixture(scope="session")
def slurm_gres_run(slurm_run):
    """The Grad-CAM job of one model submitted again on the same cluster with the GPU asked for as
    a gres (ROBUSTMAPS_SLURM_GPU=gres: --gres=gpu:1 instead of --gpus=1), as sites without --gpus
    do: (workdir, Snakemake's log). Its outputs get the same values (deterministic)."""
    work, _ = slurm_run
    # the target first: --forcerun and --configfile take every value that follows them
    proc = snakemake_as_user(work, work / ".config", GRES_TARGET, "--forcerun", "gradcam", "--configfile", str(SMOKE),
                             env={"ROBUSTMAPS_FAKE_GPUS": "1", "ROBUSTMAPS_SLURM_GPU": "gres"}, timeout=900)
    if proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return work, proc.stdout + proc.stderr


def profile_runtime(rule: str, key: str = "runtime") -> int:
    """The workflow profile's runtime (minutes, first attempt) of ``rule`` (profiles/default), or
    another of its resources (``key="mem_mb"``)."""
    import yaml

    spec = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())["set-resources"][rule]
    return int(str(spec[key]).split("*")[0])


def job_blocks(log: str) -> list[dict]:
    """Every job a Snakemake log (of a run or a dry run) shows, also inside group jobs, where the
    job blocks are indented: rule, log file, gpu resource, the resources line, local or not."""
    jobs = []
    lines = log.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)(local)?rule (\w+):$", line)
        if not m:
            continue
        body = []
        for nxt in lines[i + 1:]:
            if not nxt.strip() or len(nxt) - len(nxt.lstrip()) <= len(m.group(1)):
                break
            body.append(nxt.strip())
        logfile = next((b[len("log: "):] for b in body if b.startswith("log: ")), None)
        resources = next((b for b in body if b.startswith("resources: ")), "")
        gpu = re.search(r"\bgpu=(\d+)", resources) or re.search(r"\bgres=gpu(?::\w+)?:(\d+)", resources)
        jobs.append({"rule": m.group(3), "log": logfile, "gpu": int(gpu.group(1)) if gpu else 0,
                     "resources": resources, "local": bool(m.group(2))})
    return jobs


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
    from robustmaps.jobs.train import train_model

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


# ------------------------------------------------- a Clinica + ClinicaDL cohort as a user has it
CLINICA_MISSING = 2  # sessions whose GM map Clinica "failed" to write (one absent, one dangling link)


@pytest.fixture(scope="session")
def clinica_cohort(smoke_run, tmp_path_factory):
    """The smoke run's main cohort as Clinica and ClinicaDL leave it on a user's disk:
    - the CAPS as the generator wrote it (x-flipped, as SPM writes it) with two sessions stored
      axis-permuted (another tool's voxel order; the same images);
    - ``labels.tsv`` as ClinicaDL's get-labels writes it (participant_id, session_id, age, sex,
      diagnosis, with a UTF-8 byte-order mark and an extra column), diagnoses written ``Dementia``
      and ``cn`` (mapped by data.diagnoses), plus MCI subjects (excluded);
    - two QC-passed follow-up sessions of training subjects without a GM map: one absent, one a
      dangling symlink;
    - the smoke run's own split in ClinicaDL's layout (split/test_baseline.tsv, split/test.tsv,
      split/2_fold/split-<k>/{train,train_baseline,validation_baseline}.tsv);
    - the atlas given by path with a Clinica label table (roi_value, roi_name, background row 0).
    Returns {"root", "config", "missing": [(participant, session, path)], "permuted": [...]}."""
    import nibabel as nib

    from robustmaps.atlas import aal2_files, load_labels
    from robustmaps.grid import to_orientation
    from robustmaps.io import load_nifti

    root = tmp_path_factory.mktemp("clinica")
    results = smoke_run / "results"
    shutil.copytree(results / "cohort" / "main" / "caps", root / "caps")
    sessions = pd.read_csv(results / "cohort" / "main" / "sessions.tsv", sep="\t", dtype=str)
    qc = pd.read_csv(results / "cohort" / "main" / "qc.tsv", sep="\t", dtype=str)
    test = set(pd.read_csv(results / "splits" / "test.tsv", sep="\t", dtype=str).participant_id)

    def gm(pid, ses):
        return next((root / "caps" / "subjects" / pid / ses).rglob("*.nii.gz"))

    passed = qc[(qc.status == "pass") & ~qc.participant_id.isin(test)]
    follow_up = passed[passed.session_id != "ses-M000"].sort_values(["participant_id", "session_id"])
    missing = [(r.participant_id, r.session_id, gm(r.participant_id, r.session_id))
               for r in follow_up.head(CLINICA_MISSING).itertuples()]
    missing[0][2].unlink()
    missing[1][2].unlink()
    missing[1][2].symlink_to(root / "caps" / "no-such-file.nii.gz")
    baseline = passed[passed.session_id == "ses-M000"].sort_values("participant_id")
    permuted = []
    for r, codes in zip(baseline.head(2).itertuples(), ("ASL", "PIR")):
        path = gm(r.participant_id, r.session_id)
        data, affine = load_nifti(path)
        data, affine = to_orientation(data, affine, codes)
        nib.save(nib.Nifti1Image(data, affine), path)
        permuted.append((r.participant_id, r.session_id, codes))

    labels = sessions.assign(diagnosis=sessions.diagnosis.map({"AD": "Dementia", "CN": "cn"}), site="site-1")
    mci = sessions.head(3).assign(participant_id=["sub-MCI01", "sub-MCI02", "sub-MCI03"], session_id="ses-M000",
                                  diagnosis="MCI", site="site-2")
    table = pd.concat([labels, mci])[["participant_id", "session_id", "age", "sex", "diagnosis", "site"]]
    (root / "labels.tsv").write_text(table.to_csv(sep="\t", index=False, lineterminator="\n"), encoding="utf-8-sig")

    split = root / "split"
    for name in ("test_baseline", "test"):
        split.mkdir(exist_ok=True)
        clinicadl_columns(results / "splits" / f"{name}.tsv", split / f"{name}.tsv")
    for k in range(2):
        for name in ("train", "train_baseline", "validation_baseline"):
            (split / "2_fold" / f"split-{k}").mkdir(parents=True, exist_ok=True)
            clinicadl_columns(results / "splits" / f"split-{k}" / f"{name}.tsv",
                              split / "2_fold" / f"split-{k}" / f"{name}.tsv")

    image, csv = aal2_files()
    atlas = load_labels(csv)
    clinica = pd.concat([pd.DataFrame({"roi_value": [0], "roi_name": ["Background"]}),
                         atlas.rename(columns={"index": "roi_value", "name": "roi_name"})])
    clinica.to_csv(root / "atlas-AAL2_dseg.tsv", sep="\t", index=False)

    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["data"]["cohorts"] = {"main": {"name": "ADNI-like", "source": "caps",
                                       "caps": {"caps_dir": str(root / "caps"), "tsv": str(root / "labels.tsv")}}}
    cfg["data"]["diagnoses"] = {"Dementia": "AD"}
    cfg["atlas"] = {"image": str(image), "labels": str(root / "atlas-AAL2_dseg.tsv")}
    cfg["split"]["import_dir"] = str(split)
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    return {"root": root, "config": root / "config.yaml", "missing": missing, "permuted": permuted,
            "split": split}


def clinicadl_columns(src: Path, dst: Path) -> None:
    """A split table of this workflow as ClinicaDL writes one (its columns, the table's words)."""
    df = pd.read_csv(src, sep="\t", dtype=str)
    df["diagnosis"] = df.diagnosis.map({"AD": "Dementia", "CN": "cn"})
    df[["participant_id", "session_id", "diagnosis", "age", "sex"]].to_csv(dst, sep="\t", index=False)
