"""Where a job runs and how it is seeded (base layer): the device of a job (CUDA when visible,
CPU otherwise, a clear stop when Slurm gave a GPU that CUDA cannot use) and the seeds and
deterministic switches of torch, numpy and random.

The one private PyTorch call, ``torch._C._set_deterministic_algorithms``, is guarded: the public
wrapper is used when it is absent, and tests/unit/test_devices.py fails when the pinned torch no
longer has it (so that the next upgrade looks at it)."""

from __future__ import annotations

import logging

import numpy as np
import torch

from .io import InputError

log = logging.getLogger(__name__)


# cuBLAS needs a fixed workspace for reproducible matrix products on CUDA >= 10.2 (PyTorch's
# reproducibility notes); read when the first cuBLAS handle is made, so set before any CUDA work.
CUBLAS_WORKSPACE = ":4096:8"


# The documented escape for a scheduler's fake GPUs (the test cluster's gres File=/dev/null
# devices): a job given a GPU by Slurm but no usable CUDA then runs on CPU instead of stopping.
FAKE_GPUS_ENV = "ROBUSTMAPS_FAKE_GPUS"


def seed_everything(seed: int, threads: int | None = None) -> None:
    """Seeds and deterministic mode, on CPU and CUDA: torch's deterministic algorithms (with
    warn_only: an op without a deterministic CUDA kernel warns in the job's log and runs; none of
    the paper CNN's ops is one in torch 2.13, README "Reproducibility" lists them), cuDNN's
    deterministic convolutions without benchmarking, and cuBLAS's fixed workspace
    (CUBLAS_WORKSPACE_CONFIG, unless the environment sets its own)."""
    import os
    import random

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
    try:  # the public wrapper also imports torch._inductor (seconds per job) to set a flag unused here
        torch._C._set_deterministic_algorithms(True, warn_only=True)
    except AttributeError:
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    # deterministic mode would also fill every new tensor with NaN (17% of a CPU step): not needed
    torch.utils.deterministic.fill_uninitialized_memory = False


def slurm_gpus(env=None) -> str:
    """The GPUs Slurm allocated to this job ("" when none, or not in a Slurm job): the ids of
    SLURM_JOB_GPUS / SLURM_STEP_GPUS, or SLURM_GPUS_ON_NODE's count."""
    import os

    env = os.environ if env is None else env
    if not env.get("SLURM_JOB_ID"):
        return ""
    for var in ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):
        if env.get(var, "").strip():
            return f"{var}={env[var].strip()}"
    on_node = env.get("SLURM_GPUS_ON_NODE", "").strip()
    return f"SLURM_GPUS_ON_NODE={on_node}" if on_node.isdigit() and int(on_node) > 0 else ""


def device_for(prefer: str = "auto") -> torch.device:
    """The device of a job: ``cpu`` -> CPU; ``cuda`` or ``auto`` -> CUDA when torch can use it.
    Without usable CUDA, ``auto`` runs on CPU (a machine without a GPU), but ``cuda``, or ``auto``
    in a Slurm job that was allocated a GPU, stops at once with one message naming the host and
    the torch build (a CPU-only build, or a driver it cannot use), instead of training on CPU until
    the time limit. ROBUSTMAPS_FAKE_GPUS=1 (the test cluster's fake GPUs) runs on CPU instead."""
    import os
    import socket

    if prefer == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    allocated = slurm_gpus()
    if prefer == "cuda" or allocated:
        why = f"device '{prefer}'" + (f" and Slurm allocated a GPU ({allocated})" if allocated else "")
        build = f"torch {torch.__version__}, " + (f"CUDA {torch.version.cuda} build" if torch.version.cuda
                                                   else "a CPU-only build")
        if os.environ.get(FAKE_GPUS_ENV) == "1":
            log.warning("%s but no usable CUDA on host %s (%s): %s=1, running on CPU", why,
                        socket.gethostname(), build, FAKE_GPUS_ENV)
            return torch.device("cpu")
        raise InputError(f"{why} but CUDA is not usable on host {socket.gethostname()} ({build}): install the "
                         "CUDA build (make venv TORCH=cuda, requirements-cuda.txt) or check the node's driver "
                         f"(nvidia-smi); `device: cpu` runs on CPU on purpose ({FAKE_GPUS_ENV}=1 only for "
                         "fake GPUs, as on the test cluster)")
    return torch.device("cpu")
