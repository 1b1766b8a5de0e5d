"""What checkpointing costs a training job: before issue 20 (a checkpoint after every epoch) and
after (every ``resources.checkpoint_minutes``, default 5, after the last epoch, and on SIGTERM).

    .venv/bin/python benchmarks/checkpoint_cost.py [--repeats 3] [--epochs 6] [--threads 2]

1. One checkpoint at full grid (121x145x121) for paper.yaml's network and for Conv5_FC3: bytes
   and write time (what ``robustmaps.training.train`` saves: weights, Adam state, the best
   epoch's weights, history; written through ``atomic_path``: temporary name, fsync, rename),
   medians of ``--repeats``.
2. The training call, side by side in one run (interleaved repeats, medians): the demo CNN
   (40x48x40) on a small store with a checkpoint after every epoch (before) and with the
   5-minute interval (after); the ratio after / before of images per second.
3. The paper protocol's checkpoint writes for training (15 models): before, one per epoch (30
   at the cap); after, one per 5 minutes of a job plus the last, with the job time of the cost
   model's GPU estimate (benchmarks/paper_cost_cpu.json: an estimate until a GPU measures it).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from robustmaps import config as rmconfig  # noqa: E402
from robustmaps.checkpoints import plain  # noqa: E402
from robustmaps.io import atomic_path  # noqa: E402
from robustmaps.models import build_model  # noqa: E402
from robustmaps.preprocess import StoreReader  # noqa: E402
from robustmaps.training import TrainConfig, train  # noqa: E402
from train_throughput import DEMO_ARCH, write_store  # noqa: E402

FULL = (121, 145, 121)
REPO = Path(__file__).resolve().parent.parent


def checkpoint_of(arch: dict) -> dict:
    """A checkpoint as training writes it, for ``arch`` at full grid: Adam's state filled by one
    step (zero gradients: no full-grid forward needed)."""
    model = build_model(arch, FULL)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    best = {k: v.detach().clone() for k, v in model.state_dict().items()}
    history = [{"epoch": e, "train_loss": 0.5, "validation_loss": 0.6} for e in range(30)]
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "scaler": {}, "history": history,
            "best": {"balanced_accuracy": 0.8, "epoch": 3, "state": best}, "epoch": 4}


def write_cost(arch: dict, repeats: int) -> tuple[int, float, int]:
    """(bytes, median seconds per atomic write, parameters) of one full-grid checkpoint."""
    state = plain(checkpoint_of(arch))
    n_params = sum(v.numel() for v in state["model"].values())
    times = []
    with tempfile.TemporaryDirectory(dir=REPO / "results" if (REPO / "results").is_dir() else None) as tmp:
        path = Path(tmp) / "checkpoint.pt"
        for _ in range(repeats):
            t0 = time.perf_counter()
            with atomic_path(path) as t:
                torch.save(state, t)
            times.append(time.perf_counter() - t0)
        size = path.stat().st_size
    return size, float(np.median(times)), n_params


def training_calls(args) -> tuple[float, float, list, list]:
    """Median images/s of the training call with a checkpoint every epoch and every 5 minutes."""
    shape, n = (40, 48, 40), args.n
    labels = np.arange(n) % 2
    rows = np.arange(n)
    n_val = n // 4
    cfg = TrainConfig(architecture=DEMO_ARCH, lr=1e-3, batch_size=8, max_epochs=args.epochs, patience=99)
    runs = {"every epoch": [], "5 minutes": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store.npy"
        write_store(path, n, shape)
        store = StoreReader(path)
        for k in range(args.repeats):  # interleaved: load and warm-up hit both arms alike
            for arm, every in (("every epoch", 0.0), ("5 minutes", 300.0)):
                t0 = time.perf_counter()
                train(store, rows[n_val:], labels[n_val:], rows[:n_val], labels[:n_val], cfg, seed=0,
                      checkpoint=Path(tmp) / f"ck-{arm}-{k}.pt", threads=args.threads, device="cpu",
                      checkpoint_every=every)
                runs[arm].append(args.epochs * n / (time.perf_counter() - t0))
    before, after = (float(np.median(runs[a])) for a in ("every epoch", "5 minutes"))
    return before, after, runs["every epoch"], runs["5 minutes"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--n", type=int, default=64, help="sessions of the training-call store")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--minutes", type=float, default=5.0, help="resources.checkpoint_minutes")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    paper = rmconfig.load(REPO / "config" / "paper.yaml")
    print(f"1. one checkpoint at {FULL[0]}x{FULL[1]}x{FULL[2]} (weights, Adam state, best weights, history; "
          f"atomic write with fsync), median of {args.repeats}")
    sizes = {}
    for label, arch in (("paper.yaml's network", paper["train"]["architecture"]), ("Conv5_FC3", {"name": "conv5fc3"})):
        size, seconds, n_params = write_cost(arch, args.repeats)
        sizes[label] = size
        print(f"   {label:<22} {n_params / 1e6:7.2f} M parameters  {size / 2**20:8.1f} MiB  {seconds:6.2f} s a write")

    before, after, runs_b, runs_a = training_calls(args)
    print(f"2. the training call (demo CNN {DEMO_ARCH}, 40x48x40, {args.n} sessions, {args.epochs} epochs, "
          f"{args.threads} threads; medians of {args.repeats} interleaved runs)")
    print(f"   checkpoint every epoch  {before:7.1f} images/s  (runs: {', '.join(f'{v:.1f}' for v in runs_b)})")
    print(f"   every {args.minutes:g} minutes        {after:7.1f} images/s  (runs: {', '.join(f'{v:.1f}' for v in runs_a)})")
    print(f"   ratio after / before {after / before:.3f}")

    from paper_cost import SLURM_READ_S

    cost = json.loads((REPO / "benchmarks" / "paper_cost_cpu.json").read_text())
    row = next(r for r in cost["tables"]["gpu_estimate_after"]["rows"] if r["rule"] == "train")
    jobs, cap, typical = row["jobs"], row["cap"], row["typical"]
    per_epoch_read = SLURM_READ_S * row["reads"] / cap  # reading the store, as the Slurm runtimes count it
    job_typ, job_cap = row["job_s_typical"] + typical * per_epoch_read, row["job_s_cap"] + cap * per_epoch_read
    size = sizes["paper.yaml's network"]
    print(f"3. paper.yaml's training ({jobs} models; a job's time from the cost model's GPU ESTIMATE with the "
          f"store read at 200 MB/s: {job_typ / 60:.0f} min typical, {job_cap / 60:.0f} min at the cap)")
    for label, epochs, job_s in (("typical", typical, job_typ), ("at the cap", cap, job_cap)):
        writes_after = min(epochs, math.floor(job_s / (60 * args.minutes))) + 1
        print(f"   {label:<11} before: {jobs} x {epochs} writes = {jobs * epochs * size / 2**30:6.1f} GiB;  after: "
              f"{jobs} x {writes_after} writes = {jobs * writes_after * size / 2**30:6.1f} GiB"
              + (" (an epoch is longer than the interval: the interval saves nothing here)"
                 if writes_after > epochs else ""))
    conv = sizes["Conv5_FC3"]
    print(f"   with Conv5_FC3 ({conv / 2**20:.0f} MiB a checkpoint): before {jobs * cap * conv / 2**30:.0f} GiB at the cap")


if __name__ == "__main__":
    main()
