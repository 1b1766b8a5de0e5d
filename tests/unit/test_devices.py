"""Where a job runs (CUDA when visible, a clear stop when a GPU was expected) and how it is
seeded (robustmaps.devices)."""

import os
import socket

import pytest
import torch

from robustmaps import devices
from robustmaps.devices import seed_everything
from robustmaps.io import InputError


def _no_cuda(monkeypatch, env: dict):
    monkeypatch.setattr(devices.torch.cuda, "is_available", lambda: False)
    for var in ("SLURM_JOB_ID", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "SLURM_GPUS_ON_NODE", devices.FAKE_GPUS_ENV):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    return devices


@pytest.mark.parametrize("prefer, env", [
    ("cuda", {}),
    ("auto", {"SLURM_JOB_ID": "7", "SLURM_JOB_GPUS": "0"}),
    ("auto", {"SLURM_JOB_ID": "7", "SLURM_GPUS_ON_NODE": "1"}),
])
def test_no_usable_cuda_where_a_gpu_is_expected_stops_naming_host_and_build(monkeypatch, prefer, env):
    dev = _no_cuda(monkeypatch, env)
    with pytest.raises(InputError) as err:
        dev.device_for(prefer)
    msg = str(err.value)
    assert f"host {socket.gethostname()}" in msg and f"torch {torch.__version__}" in msg
    assert ("a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda} build") in msg
    assert "\n" not in msg and (prefer == "cuda" or "Slurm allocated a GPU" in msg)


@pytest.mark.parametrize("env", [{}, {"SLURM_JOB_ID": "7"}, {"SLURM_JOB_ID": "7", "SLURM_GPUS_ON_NODE": "0"},
                                 {"CUDA_VISIBLE_DEVICES": "0"}])
def test_auto_without_a_gpu_runs_on_cpu(monkeypatch, env):
    assert _no_cuda(monkeypatch, env).device_for("auto").type == "cpu"


def test_fake_gpus_escape_runs_on_cpu_and_says_so(monkeypatch, caplog):
    dev = _no_cuda(monkeypatch, {"SLURM_JOB_ID": "7", "SLURM_JOB_GPUS": "1", "ROBUSTMAPS_FAKE_GPUS": "1"})
    with caplog.at_level("WARNING"):
        assert dev.device_for("auto").type == "cpu" and dev.device_for("cuda").type == "cpu"
    assert "ROBUSTMAPS_FAKE_GPUS=1, running on CPU" in caplog.text and "SLURM_JOB_GPUS=1" in caplog.text


def test_seed_everything_sets_what_deterministic_cuda_needs(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    seed_everything(0)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # a user's own setting is kept
    seed_everything(0)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_the_private_determinism_switch_still_exists_in_the_pinned_torch():
    """seed_everything calls torch._C._set_deterministic_algorithms (the public wrapper also
    imports torch._inductor, seconds per job) and falls back to the public call without it. This
    fails when a torch upgrade removes or changes the private call, so that the upgrade decides:
    it must still switch what the public call switches."""
    assert callable(getattr(torch._C, "_set_deterministic_algorithms", None))
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        torch._C._set_deterministic_algorithms(False)
        assert not torch.are_deterministic_algorithms_enabled()
        torch._C._set_deterministic_algorithms(True, warn_only=True)
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
