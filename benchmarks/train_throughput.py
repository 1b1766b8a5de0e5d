"""Training throughput: the real loop (MONAI dataset over the memory-mapped store, loader,
metrics) vs a bare forward/backward loop over tensors already in memory, same model and batch.

    .venv/bin/python benchmarks/train_throughput.py [--shape 40 48 40] [--n 96] [--epochs 2]

Prints samples/s of both, their ratio (goal >= 0.9 on CPU) and the peak resident memory.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from monai.data import CacheDataset, DataLoader  # noqa: F401  (imported before timing: a one-off cost)
from monai.transforms import Compose  # noqa: F401

from robustmaps.models import build_model
from robustmaps.training import TrainConfig, seed_everything, train


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", type=int, nargs=3, default=[40, 48, 40])
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    arch = {"name": "paper", "n_blocks": 4, "filters": 8}
    rng = np.random.default_rng(0)
    labels = np.arange(args.n) % 2
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store.npy"
        store = np.lib.format.open_memmap(path, "w+", np.float16, (args.n, *args.shape))
        store[:] = rng.random((args.n, *args.shape), dtype=np.float32)
        store.flush()
        store = np.load(path, mmap_mode="r")
        rows = np.arange(args.n)
        n_val = args.n // 4
        cfg = TrainConfig(architecture=arch, batch_size=args.batch, max_epochs=args.epochs, patience=99)

        def real(k):
            t0 = time.perf_counter()
            train(store, rows[n_val:], labels[n_val:], rows[:n_val], labels[:n_val], cfg, seed=0,
                  checkpoint=Path(tmp) / f"ck{k}.pt", threads=args.threads, device="cpu")
            return args.epochs * args.n / (time.perf_counter() - t0)  # train + validation images/s

        def bare(k):
            seed_everything(0, args.threads)
            model = build_model(arch, tuple(args.shape))
            opt = torch.optim.Adam(model.parameters(), 1e-4)
            x = torch.from_numpy(np.asarray(store, dtype=np.float32))[:, None]
            y = torch.as_tensor(labels)
            lossf = torch.nn.CrossEntropyLoss()
            t0 = time.perf_counter()
            for _ in range(args.epochs):
                model.train()
                for i in range(n_val, args.n, args.batch):
                    loss = lossf(model(x[i:i + args.batch]), y[i:i + args.batch])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                model.eval()
                with torch.no_grad():
                    for i in range(0, n_val, args.batch):
                        model(x[i:i + args.batch])
            return args.epochs * args.n / (time.perf_counter() - t0)

        # Interleaved, so that warm-up and background load hit both alike; medians reported.
        results = {"real": [], "bare": []}
        for k in range(args.repeats):
            results["bare"].append(bare(k))
            results["real"].append(real(k))
        real_rate, bare_rate = (float(np.median(results[n])) for n in ("real", "bare"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"shape {tuple(args.shape)}, {args.n} images, batch {args.batch}, {args.threads} threads")
    print(f"real loop  {real_rate:8.1f} images/s  (runs: {', '.join(f'{v:.1f}' for v in results['real'])})")
    print(f"bare loop  {bare_rate:8.1f} images/s  (runs: {', '.join(f'{v:.1f}' for v in results['bare'])})")
    print(f"ratio real/bare {real_rate / bare_rate:.3f}")
    print(f"peak resident memory {peak:.0f} MiB")


if __name__ == "__main__":
    main()
