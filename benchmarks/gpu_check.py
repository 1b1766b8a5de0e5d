"""The paper protocol's GPU check (issue 18, item 5): run by benchmarks/gpu_check.sh.

Where CUDA is available, at the full grid (121 x 145 x 121) with the paper network of
config/paper.yaml on the GPU: training steps with AMP through the workflow's own loop
(``robustmaps.training.train``: store read row by row, MONAI dataset and loader, validation,
checkpoint) timed against a bare forward/backward loop of the same network over tensors already
on the GPU (same AMP, batch and validation pass; interleaved repeats, medians; goal >= 0.9), a
group mask (``robustmaps.masks.optimise_group``), session masks (``optimise_independent``, a
batch of masks.session.max_batch), one saliency method (Grad-CAM, ``robustmaps.saliency``), a
check that every one of them ran on CUDA, and the cost model's unit costs
(``benchmarks/paper_cost.py --device cuda``). Data are generated on the machine.

Without CUDA it runs the same steps on the CPU with tiny sizes (a 24 x 29 x 24 grid, a 3-block
network, a few images and epochs): a check of the script, not a measurement.

Writes ``gpu_check.tsv`` (check, value, unit, goal, ok) and ``gpu_check.json`` under ``--out``;
with CUDA also ``paper_cost_cuda.json`` (the units, for ``paper_cost.py --units``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def write_store(path: Path, n: int, shape) -> None:
    """A float16 store of ``n`` GM-like volumes: zero outside an ellipsoid 'brain', a smooth
    random pattern inside, the AD rows (odd) with a darker region (something to learn)."""
    rng = np.random.default_rng(0)
    grids = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij")
    inside = sum(g ** 2 for g in grids) < 0.8
    base = (0.3 + 0.6 * rng.random(shape, dtype=np.float32)) * inside
    lesion = (grids[0] ** 2 + (grids[1] - 0.2) ** 2 + grids[2] ** 2) < 0.1
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)), "fortran_order": False,
              "shape": (n, *shape)}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        for i in range(n):
            v = base * (0.9 + 0.2 * rng.random())
            if i % 2:
                v = np.where(lesion, v * 0.5, v)
            f.write(v.astype(np.float16).tobytes())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--config", default=str(REPO / "config" / "paper.yaml"))
    ap.add_argument("--cpu", action="store_true", help="the CPU fallback even where CUDA is available")
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    sys.path.insert(0, str(REPO / "benchmarks"))
    from paper_cost import load_config

    from robustmaps.masks import optimise_group, optimise_independent, settings_from
    from robustmaps.models import build_model
    from robustmaps.preprocess import StoreReader
    from robustmaps.config import saliency_params
    from robustmaps.saliency import Explainer
    from robustmaps.settings import Saliency
    from robustmaps.training import TrainConfig, train
    from robustmaps.devices import seed_everything

    cfg = load_config(Path(args.config))
    cuda = torch.cuda.is_available() and not args.cpu
    dev = torch.device("cuda" if cuda else "cpu")
    arch = dict(cfg["train"]["architecture"])
    tr = cfg["train"]
    if cuda:
        shape, n, epochs, repeats = tuple(cfg["data"]["grid"]["shape"]), 256, 3, args.repeats or 2
        group_epochs, session_epochs, k_sess = 2, 10, cfg["masks"]["session"]["max_batch"]
        workers, threads = tr["workers"], tr["threads"]
    else:
        shape, n, epochs, repeats = (16, 20, 16), 12, 1, args.repeats or 1
        arch = {**arch, "n_blocks": 3}
        group_epochs, session_epochs, k_sess, workers, threads = 1, 3, 2, 0, 2
    batch, amp = tr["batch_size"], bool(tr["amp"])
    rows = []

    def record(check, value, unit="", goal="", ok=""):
        rows.append({"check": check, "value": value, "unit": unit, "goal": goal, "ok": ok})
        print(f"{check:48s} {value!s:>14} {unit:14s} {goal:10s} {ok}", flush=True)

    record("device", torch.cuda.get_device_name(0) if cuda else "cpu (fallback: tiny sizes)")
    record("torch", torch.__version__)
    record("grid", "x".join(map(str, shape)))
    record("network", json.dumps(arch, sort_keys=True).replace(" ", ""))
    used = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store.npy"
        t = time.perf_counter()
        write_store(path, n, shape)
        record("data generated", f"{time.perf_counter() - t:.1f}", "s", f"{n} sessions")
        store = StoreReader(path)
        labels = np.arange(n) % 2
        all_rows = np.arange(n)
        n_val = n // 4
        tcfg = TrainConfig(architecture=arch, lr=tr["lr"], weight_decay=tr["weight_decay"], batch_size=batch,
                           max_epochs=epochs, patience=99, amp=amp, workers=workers)

        # -- training: the workflow's loop vs a bare loop of the same network, interleaved
        def allocations():  # CUDA allocations so far (train() returns its best state on the CPU)
            return torch.cuda.memory_stats().get("allocation.all.allocated", 0) if cuda else 0

        def real(k):
            if cuda:
                torch.cuda.synchronize()
            a0, t0 = allocations(), time.perf_counter()
            train(store, all_rows[n_val:], labels[n_val:], all_rows[:n_val], labels[:n_val], tcfg,
                  seed=0, checkpoint=Path(tmp) / f"ck{k}.pt", threads=threads, device=dev.type)
            if cuda:
                torch.cuda.synchronize()
            rate = epochs * n / (time.perf_counter() - t0)
            used["train"] = ("cuda" if allocations() - a0 > 100 else "cpu") if cuda else "cpu"
            return rate

        x_all = torch.from_numpy(np.load(path).astype(np.float32))[:, None].to(
            dev, memory_format=torch.channels_last_3d)
        y_all = torch.as_tensor(labels, device=dev)

        def bare(k):
            seed_everything(0, threads)
            model = build_model(arch, shape).to(dev, memory_format=torch.channels_last_3d)
            opt = torch.optim.Adam(model.parameters(), tr["lr"], weight_decay=tr["weight_decay"])
            scaler = torch.amp.GradScaler("cuda") if amp and cuda else None
            lossf = torch.nn.CrossEntropyLoss(reduction="sum")
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(epochs):
                model.train()
                for i in range(n_val, n, batch):
                    with torch.autocast(dev.type, enabled=amp and cuda):
                        loss = lossf(model(x_all[i:i + batch]).float(), y_all[i:i + batch])
                    opt.zero_grad(set_to_none=True)
                    if scaler is not None:
                        scaler.scale(loss).backward()
                        scaler.step(opt)
                        scaler.update()
                    else:
                        loss.backward()
                        opt.step()
                model.eval()
                with torch.no_grad():
                    for i in range(0, n_val, batch):
                        model(x_all[i:i + batch])
            if cuda:
                torch.cuda.synchronize()
            used["bare"] = next(model.parameters()).device.type
            return epochs * n / (time.perf_counter() - t0)

        bare(-1)  # warm-up (cuDNN / oneDNN kernel choice, CUDA context)
        rates = {"real": [], "bare": []}
        for k in range(repeats):
            rates["bare"].append(bare(k))
            rates["real"].append(real(k))
        real_rate, bare_rate = statistics.median(rates["real"]), statistics.median(rates["bare"])
        record("training: workflow loop (AMP)" if amp and cuda else "training: workflow loop",
               f"{real_rate:.1f}", "images/s", f"{n} x {epochs} ep")
        record("training: bare forward/backward loop", f"{bare_rate:.1f}", "images/s")
        ratio = real_rate / bare_rate
        record("training throughput ratio", f"{ratio:.3f}", "workflow/bare", ">= 0.9", "ok" if ratio >= 0.9 else "LOW")
        del x_all

        # -- masks and a saliency method on a trained-looking network (the weights do not matter for timing)
        torch.manual_seed(0)
        model = build_model(arch, shape).to(dev, memory_format=torch.channels_last_3d).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        params = {k: cfg["masks"][k] for k in ("l1", "l2", "b1", "b2", "lr", "score", "threshold", "eps", "norm")}
        ad = all_rows[labels == 1]
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        mask, hist, _ = optimise_group(model, store, ad[n_val // 2:], ad[:n_val // 2], settings_from(params, 1),
                                       batch_size=cfg["masks"]["batch_size"], max_epochs=group_epochs, patience=99)
        if cuda:
            torch.cuda.synchronize()
        used["group_mask"] = mask.device.type
        dt = time.perf_counter() - t
        record("group mask", f"{dt / group_epochs:.2f}", "s/epoch",
               f"{len(ad) - n_val // 2} + {n_val // 2} images")
        imgs = torch.from_numpy(np.asarray(store[list(ad[:k_sess])], dtype=np.float32))[:, None].to(
            dev, memory_format=torch.channels_last_3d)
        t = time.perf_counter()
        masks, _, stats = optimise_independent(model, imgs, settings_from(params, 1, cfg["masks"]["session"]
                                                                          ["penalty_scale"]),
                                               max_epochs=session_epochs, patience=10 ** 6)
        if cuda:
            torch.cuda.synchronize()
        used["session_masks"] = masks.device.type
        dt = time.perf_counter() - t
        record("session masks", f"{1000 * dt / (session_epochs * k_sess):.1f}", "ms/mask-epoch",
               f"batch {k_sess}")
        if cuda:
            record("peak GPU memory (masks)", f"{torch.cuda.max_memory_allocated() / 2**30:.1f}", "GiB")
        explainer = Explainer(model, "gradcam", Saliency.of(saliency_params(cfg, "gradcam")))
        x = imgs[:min(len(imgs), cfg["saliency"]["batch_size"])]
        t = time.perf_counter()
        maps = explainer(x, torch.ones(len(x), dtype=torch.long, device=dev))
        if cuda:
            torch.cuda.synchronize()
        used["gradcam"] = maps.device.type
        record("saliency: Grad-CAM", f"{1000 * (time.perf_counter() - t) / len(x):.1f}", "ms/image",
               f"{len(x)} images", "ok" if bool(torch.isfinite(maps).all()) and tuple(maps.shape[1:]) == shape else
               "BAD MAPS")
    want = "cuda" if cuda else "cpu"
    ran_on = ",".join(f"{k}:{v}" for k, v in used.items())
    record("every step ran on " + want, ran_on, "", want, "ok" if all(v == want for v in used.values()) else "NO")

    # -- the cost model's unit costs on this device (the prediction is made where the template is:
    # paper_cost.py --units <this json>)
    import paper_cost

    cost_json = out / ("paper_cost_cuda.json" if cuda else "paper_cost_quick.json")
    t = time.perf_counter()
    try:
        units = paper_cost.main(["--json", str(cost_json), "--units-only"]
                                + (["--device", "cuda", "--repeats", "3"] if cuda else ["--quick"]))["units"]
        for name, u in units.items():
            record(f"unit: {name}", f"{1000 * u['seconds']:.3f}", "ms/unit", f"batch {u['batch']}")
    except Exception as exc:  # noqa: BLE001  (the table says what failed; the other checks stand)
        record("unit costs (paper_cost.py)", type(exc).__name__, "", "", "FAILED")
        print(exc, file=sys.stderr)
    record("paper_cost.py units", f"{time.perf_counter() - t:.0f}", "s")
    record("gpu_check total", f"{time.perf_counter() - t_start:.0f}", "s", "< 480 s")
    lines = ["check\tvalue\tunit\tgoal\tok"] + ["\t".join(str(r[k]) for k in ("check", "value", "unit", "goal", "ok"))
                                                 for r in rows]
    (out / "gpu_check.tsv").write_text("\n".join(lines) + "\n")
    (out / "gpu_check.json").write_text(json.dumps({"cuda": cuda, "rows": rows, "rates": rates}, indent=1))
    failed = [r["check"] for r in rows if r["ok"] in ("NO", "FAILED", "BAD MAPS")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
