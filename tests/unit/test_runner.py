"""What every job shares: its log's context line and the GPU request of network rules."""

import logging
import re
import types

import pytest

from robustmaps.runner import gpu_request, job_context, script, visible_gpus


@pytest.fixture
def fake_driver(tmp_path):
    """A /proc/driver/nvidia/gpus with n entries."""
    def make(n):
        root = tmp_path / f"gpus{n}"
        root.mkdir()
        for i in range(n):
            (root / f"0000:0{i}:00.0").mkdir()
        return root
    return make


@pytest.mark.parametrize("visible, expect", [(None, 2), ("0", 1), ("1,0", 2), ("0,1,2,3", 2), ("", 0), ("-1", 0),
                                             ("0,-1,1", 1)])
def test_visible_gpus_counts_driver_gpus_within_cuda_visible_devices(fake_driver, monkeypatch, visible, expect):
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert visible_gpus(fake_driver(2)) == expect


def test_visible_gpus_without_a_driver_is_zero(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # set by a scheduler, but no GPU behind it
    assert visible_gpus(tmp_path / "absent") == 0


@pytest.mark.parametrize("device, local, gpus, expect", [
    ("cpu", True, 2, 0), ("cpu", False, None, 0),   # a stage pinned to the CPU never asks
    ("auto", True, 0, 0),                            # here, without a GPU: runs on CPU
    ("auto", True, 1, 1), ("cuda", True, 4, 1),      # here, with GPUs: one each
    ("auto", False, None, 1), ("auto", False, 0, 1),  # a cluster: the submit host says nothing
])
def test_gpu_request(device, local, gpus, expect):
    assert gpu_request(device, local, gpus) == expect


def test_every_job_log_starts_with_where_it_ran(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert "SLURM_JOB_ID=4242, CUDA_VISIBLE_DEVICES=unset" in job_context()
    smk = types.SimpleNamespace(threads=1, log=[str(tmp_path / "job.log")], rule="train")
    with script(smk) as log:
        log.info("epoch 1")
    logging.shutdown()
    lines = (tmp_path / "job.log").read_text().splitlines()
    assert "SLURM_JOB_ID=4242, CUDA_VISIBLE_DEVICES=unset" in lines[0] and "epoch 1" in lines[1]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert job_context().endswith("CUDA_VISIBLE_DEVICES=1")


JOB = """
import sys, time, types
from robustmaps.runner import script
smk = types.SimpleNamespace(threads=1, log=[sys.argv[2]], rule="train", output=[sys.argv[1]])
with script(smk) as log:
    log.info("started")
    time.sleep(float(sys.argv[3]))
    open(sys.argv[1], "w").write(sys.argv[4])
"""


def test_a_job_still_running_keeps_a_second_job_off_its_output(tmp_path):
    """A job holds a lock on its first output while it runs: the same job started again (by the
    re-run of a Snakemake that was killed while its jobs ran on) stops with one message naming the
    running job, and writes nothing; once the first has finished, it runs."""
    import subprocess
    import sys
    import time

    out = tmp_path / "results" / "model.pt"
    first = subprocess.Popen([sys.executable, "-c", JOB, str(out), str(tmp_path / "a.log"), "30", "first"])
    t0 = time.monotonic()
    while not (tmp_path / "a.log").exists() or "started" not in (tmp_path / "a.log").read_text():
        assert time.monotonic() - t0 < 60 and first.poll() is None
        time.sleep(0.1)
    second = subprocess.run([sys.executable, "-c", JOB, str(out), str(tmp_path / "b.log"), "0", "second"],
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 1
    log = (tmp_path / "b.log").read_text()
    assert f"ERROR: {out} is being written by another job still running" in log and f"pid {first.pid}" in log
    assert not out.exists()
    first.wait(timeout=120)
    assert out.read_text() == "first" and not list(out.parent.glob(".lock-*"))
    third = subprocess.run([sys.executable, "-c", JOB, str(out), str(tmp_path / "c.log"), "0", "third"],
                           capture_output=True, text=True, timeout=120)
    assert third.returncode == 0 and out.read_text() == "third"


@pytest.mark.parametrize("value, local, n, expect", [
    (None, False, 1, {"gpu": 1}),
    ("gpus", False, 1, {"gpu": 1}),
    ("gres", False, 1, {"gres": "gpu:1"}),
    ("gres:a100", False, 1, {"gres": "gpu:a100:1"}),
    ("model:a100", False, 1, {"gpu": 1, "gpu_model": "a100"}),
    ("constraint:a100|h100", False, 1, {"gpu": 1, "constraint": "a100|h100"}),
    ("gres", True, 1, {"gpu": 1}),   # local runs keep the count the local profile caps
    ("gres", False, 0, {"gpu": 0}),  # device cpu: no GPU in any form
    ("model:a100", False, 0, {"gpu": 0}),
])
def test_gpu_request_in_the_sites_form(value, local, n, expect):
    from robustmaps.runner import gpu_form, gpu_resources

    got = {k: v for k, v in gpu_resources(n, gpu_form(value), local).items() if v is not None}
    assert got == expect


@pytest.mark.parametrize("value", ["gpu", "gres:", "model:", "constraint", "gres:a b", "tpu"])
def test_an_unknown_gpu_form_stops_naming_the_variable(value):
    from robustmaps.io import InputError
    from robustmaps.runner import gpu_form

    with pytest.raises(InputError, match=rf"ROBUSTMAPS_SLURM_GPU='{re.escape(value)}': expected one of gpus"):
        gpu_form(value)


def test_resolve_inputs_puts_each_file_back_in_its_record_by_name():
    """rules/common.smk names the files of a rule's records (name_paths); the script resolves the
    names, so a record keeps its own file whatever the order of the inputs."""
    from snakemake.iocontainers import InputFiles as Namedlist

    from robustmaps.runner import resolve_inputs

    inputs = Namedlist(fromdict={"mask_1": "b/summary.tsv", "background": "mean.nii.gz", "mask_0": "a/summary.tsv"})
    records = [{"kind": "group", "fold": 0, "summary": "mask_0"}, {"kind": "sweep", "fold": 1, "summary": "mask_1"}]
    assert resolve_inputs(records, inputs) == [{"kind": "group", "fold": 0, "summary": "a/summary.tsv"},
                                               {"kind": "sweep", "fold": 1, "summary": "b/summary.tsv"}]
    assert resolve_inputs({"gradcam": ["mask_1", "mask_0"]}, inputs) == {"gradcam": ["b/summary.tsv", "a/summary.tsv"]}
    assert resolve_inputs(None, inputs) is None and resolve_inputs({"kind": "group"}, inputs) == {"kind": "group"}
