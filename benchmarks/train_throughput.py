"""Training throughput and host memory of the real training loop.

    .venv/bin/python benchmarks/train_throughput.py              # throughput + memory (demo and full grid)
    .venv/bin/python benchmarks/train_throughput.py --skip-full  # without the 1,000-session full-grid store

1. Throughput, measured side by side in one run (interleaved repeats, medians): the real loop
   (``robustmaps.training.train``: MONAI dataset over the on-disk store read row by row, loader,
   per-epoch metrics, validation pass and checkpoint) vs a bare forward/backward loop over
   tensors already in memory, same model, memory format, batch size, threads and validation
   pass. Prints the ratio (goal >= 0.9 on CPU).
2. Peak resident memory of one training epoch in a fresh process, for the demo's store
   (200 sessions, 40x48x40) and for a synthetic full-grid store of ``--full-n`` sessions
   (121x145x121 float16, 4.2 MB each): read row by row (the workflow's reader) and, for
   contrast, through a numpy memory map (whose touched pages stay resident).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from monai.data import CacheDataset, DataLoader  # noqa: F401  (imported before timing: a one-off cost)

from robustmaps.models import build_model
from robustmaps.preprocess import StoreReader
from robustmaps.training import TrainConfig, train
from robustmaps.devices import seed_everything

DEMO_ARCH = {"name": "paper", "n_blocks": 5, "filters": 8}


def write_store(path: Path, n: int, shape: tuple[int, ...]) -> None:
    """A float16 store of ``n`` GM-like volumes (a smooth random base, scaled per row)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    base = gaussian_filter(rng.random(shape, dtype=np.float32), 2).astype(np.float32)
    # written row by row through a file, not a memory map: the writer's resident pages would
    # otherwise be inherited as the high-water mark of the measuring child (fork + exec)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)), "fortran_order": False,
              "shape": (n, *shape)}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        for i in range(n):
            f.write((base * (0.8 + 0.4 * (i % 7) / 6)).astype(np.float16).tobytes())


def peak_rss_mib() -> float:
    """This process's resident high-water mark (VmHWM: per address space, so unlike ru_maxrss it
    does not carry the parent's peak across fork + exec)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def throughput(args) -> None:
    shape = tuple(args.shape)
    labels = np.arange(args.n) % 2
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store.npy"
        write_store(path, args.n, shape)
        store = StoreReader(path)
        rows = np.arange(args.n)
        n_val = args.n // 4
        cfg = TrainConfig(architecture=DEMO_ARCH, lr=1e-3, batch_size=args.batch, max_epochs=args.epochs,
                          patience=99)

        def real(k):
            t0 = time.perf_counter()
            train(store, rows[n_val:], labels[n_val:], rows[:n_val], labels[:n_val], cfg, seed=0,
                  checkpoint=Path(tmp) / f"ck{k}.pt", threads=args.threads, device="cpu")
            return args.epochs * args.n / (time.perf_counter() - t0)  # train + validation images/s

        def bare(k):
            seed_everything(0, args.threads)
            cl = torch.channels_last_3d
            model = build_model(DEMO_ARCH, shape).to(memory_format=cl)
            opt = torch.optim.Adam(model.parameters(), 1e-3)
            x = torch.from_numpy(np.load(path).astype(np.float32))[:, None].contiguous(memory_format=cl)
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
    print(f"throughput: shape {shape}, {args.n} images, {DEMO_ARCH}, batch {args.batch}, {args.threads} threads")
    print(f"  real loop  {real_rate:8.1f} images/s  (runs: {', '.join(f'{v:.1f}' for v in results['real'])})")
    print(f"  bare loop  {bare_rate:8.1f} images/s  (runs: {', '.join(f'{v:.1f}' for v in results['bare'])})")
    print(f"  ratio real/bare {real_rate / bare_rate:.3f}")


def memory_case(path: str, reader: str, arch: dict, threads: int, cache: int) -> dict:
    """One training epoch over every row of the store (in this process): peak RSS."""
    store = StoreReader(path) if reader == "pread" else np.load(path, mmap_mode="r")
    n = store.shape[0]
    labels = np.arange(n) % 2
    rows = np.arange(n)
    cfg = TrainConfig(architecture=arch, lr=1e-3, batch_size=4, max_epochs=1, patience=9, cache_size=cache)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        train(store, rows[8:], labels[8:], rows[:8], labels[:8], cfg, seed=0, checkpoint=Path(tmp) / "ck.pt",
              threads=threads, device="cpu")
    return {"peak_rss_mib": peak_rss_mib(),
            "seconds": time.perf_counter() - t0, "sessions": n, "shape": list(store.shape[1:]),
            "store_mib": n * int(np.prod(store.shape[1:])) * 2 / 2**20}


def memory(args) -> None:
    cases = [("demo", (40, 48, 40), 200, DEMO_ARCH)]
    if not args.skip_full:
        # a light network (stride-2 blocks): the epoch must read every session, and the data path
        # is what is measured; the paper's network adds its activations (per batch, not per cohort)
        cases.append(("full grid", (121, 145, 121), args.full_n,
                      {"name": "paper", "n_blocks": 3, "filters": 2, "downsampling": "stride"}))
    print(f"memory: one epoch in a fresh process, cache_size {args.cache}, {args.threads} threads")
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for name, shape, n, arch in cases:
            path = Path(tmp) / f"{name.replace(' ', '_')}.npy"
            write_store(path, n, shape)
            for reader in ("pread", "mmap"):
                cmd = [sys.executable, __file__, "--memory-case", json.dumps(
                    {"path": str(path), "reader": reader, "arch": arch, "threads": args.threads, "cache": args.cache})]
                out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
                print(f"  {name:9s} {n:5d} sessions x {'x'.join(map(str, shape))} ({out['store_mib']:.0f} MiB float16), "
                      f"{'row reads (workflow)' if reader == 'pread' else 'memory map (contrast)':22s}: "
                      f"peak RSS {out['peak_rss_mib']:7.0f} MiB, epoch {out['seconds']:.0f} s")
            path.unlink()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", type=int, nargs=3, default=[40, 48, 40])
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cache", type=int, default=0, help="train.cache_size of the memory cases")
    ap.add_argument("--full-n", type=int, default=1000)
    ap.add_argument("--skip-full", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--tmp", default=None, help="folder for the benchmark stores (needs 4.3 GB for the full grid)")
    ap.add_argument("--memory-case", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_case:
        print(json.dumps(memory_case(**json.loads(args.memory_case))))
        return
    if not args.skip_throughput:
        throughput(args)
    memory(args)


if __name__ == "__main__":
    main()
