"""Cost model of the paper protocol (config/paper.yaml): unit costs measured at full grid, then
every rule's jobs, time per job and total on a stated device (issue 18, item 3).

    .venv/bin/python benchmarks/paper_cost.py                         # CPU units, 3 repeats, full grid
    .venv/bin/python benchmarks/paper_cost.py --device cuda --json gpu.json   # on a GPU machine
    .venv/bin/python benchmarks/paper_cost.py --quick --json out.json  # small grid, 1 repeat (tests)
    .venv/bin/python benchmarks/paper_cost.py --units cuda_units.json  # predict from measured units

Units (seconds per unit, medians of ``--repeats`` interleaved repeats in one process, the paper
network of config/paper.yaml built with ``robustmaps.models.build_model``, the workflow's
memory format and, for training on CUDA, its AMP):

- ``forward``: eval forward per image at the inference batch (evaluation.batch_size)
- ``train``: forward + backward + Adam step per image at train.batch_size (AMP on CUDA)
- ``group_mask``: one mask epoch per training image: forward + backward to one shared mask and
  its penalties, batches of masks.batch_size (validation images cost a ``forward`` each)
- ``session_mask``: one epoch of one session mask: masks.session.max_batch masks as one batch
- ``occlusion``: one occlusion window, batched as the workflow batches them (4 x saliency.batch_size)
- ``grad``: forward + backward per image at saliency.batch_size (a CAM, a LOTS step, one
  activation-maximisation step); ``grad1``: the same one image at a time (vanilla gradient and a
  SmoothGrad sample: monai's VanillaGrad / SmoothGrad take one image)
- ``sobol``: one Sobol model output (factor row x image), batches of sobol.batch_size

The plan: job counts per rule from ``snakemake -n --configfile config/paper.yaml`` on
benchmarks/plan_paper.py's stub CAPS (``--plan``), else from the config (models = folds x
seeds). Work per job from the study's cohort (Table 1 of the study: ADNI 336 AD subjects /
1,106 sessions, 330 CN / 1,830; AIBL 76 AD / 108, 429 CN / 730; 100 + 100 test subjects) and
the configured caps, each with an assumed typical count (ASSUMED in the table). Device
columns: measured units on ``--device``; without measured GPU units a GPU column comes from
``--gpu-tflops`` (an assumed effective throughput scaling the CPU units: an ESTIMATE, labelled
so). The search (hpo) is costed apart from the protocol: its space's worst network and its
mean network, scaled from the baseline's measured training cost by their multiply-accumulate
counts (an ESTIMATE).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# The study's cohort (Thibeau-Sutre et al. 2020, Table 1)
ADNI = {"AD": (336, 1106), "CN": (330, 1830)}
AIBL = {"AD": (76, 108), "CN": (429, 730)}
TEST_PER_CLASS = 100
ACCURACY = 0.9            # ASSUMED fraction of AD images correctly classified (masks use those)
GOAL_GPU_HOURS = 24.0


def schema_defaults(config: dict, schema: dict, node: dict | None = None) -> dict:
    """The schema's defaults filled into ``config`` (objects and $refs followed), without
    validating: for machines without jsonschema (the lent GPU machine)."""
    node = schema if node is None else node
    if "$ref" in node:
        node = schema["$defs"][node["$ref"].split("/")[-1]]
    for key, sub in node.get("properties", {}).items():
        if key not in config and "default" in sub:
            config[key] = copy.deepcopy(sub["default"])
        if isinstance(config.get(key), dict) and ("properties" in sub or "$ref" in sub):
            schema_defaults(config[key], schema, sub)
    return config


def load_config(path: Path) -> dict:
    """paper.yaml with the schema's defaults (robustmaps.config.validate; without jsonschema,
    :func:`schema_defaults`)."""
    config = yaml.safe_load(Path(path).read_text())
    try:
        import jsonschema  # noqa: F401
    except ImportError:
        return schema_defaults(config, yaml.safe_load((REPO / "config" / "schema.yaml").read_text()))
    from robustmaps.config import validate

    return validate(config)


# ----------------------------------------------------------------------------------------------
# Unit costs


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _model(arch: dict, shape, device):
    from robustmaps.models import build_model

    torch.manual_seed(0)
    return build_model(arch, shape).to(device, memory_format=torch.channels_last_3d)


def _images(n, shape, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, 1, *shape), generator=g)
    return x.to(device, memory_format=torch.channels_last_3d)


def unit_functions(cfg: dict, shape, device, sizes: dict) -> dict:
    """name -> (callable doing one measured call, units per call)."""
    from robustmaps.masks import masked, penalty_terms, settings_from
    from robustmaps.models import class_score
    from robustmaps.saliency.gradients import occlusion_windows

    arch = cfg["train"]["architecture"]
    amp = bool(cfg["train"]["amp"]) and device.type == "cuda"
    model = _model(arch, shape, device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    train_model = _model(arch, shape, device).train()
    opt = torch.optim.Adam(train_model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda") if amp else None
    lossf = torch.nn.CrossEntropyLoss(reduction="sum")
    settings = settings_from({k: cfg["masks"][k] for k in ("l1", "l2", "b1", "b2", "lr", "score", "threshold",
                                                             "eps", "norm")}, target=1)
    b_inf, b_train, b_mask = sizes["inference"], sizes["train"], sizes["mask"]
    k_sess, b_sal, b_occ, b_sob = sizes["session"], sizes["saliency"], sizes["occlusion"], sizes["sobol"]
    x_inf = _images(b_inf, shape, device)
    x_train = _images(b_train, shape, device, 1)
    y_train = torch.arange(b_train, device=device) % 2
    x_mask = _images(b_mask, shape, device, 2)
    x_sess = _images(k_sess, shape, device, 3)
    x_sal = _images(b_sal, shape, device, 4)
    x_one = x_sal[:1]
    x_occ = _images(1, shape, device, 5)
    m_group = torch.ones((1, 1, *shape), device=device, requires_grad=True)
    opt_group = torch.optim.Adam([m_group], lr=settings.lr)
    m_sess = torch.ones_like(x_sess, requires_grad=True)
    opt_sess = torch.optim.Adam([m_sess], lr=settings.lr)
    # the occlusion windows of the workflow's grid (every window, none skipped: a random image)
    corners = occlusion_windows(shape, cfg["saliency"]["occlusion"]["patch"], cfg["saliency"]["occlusion"]["stride"])
    patch = cfg["saliency"]["occlusion"]["patch"]

    def forward():
        with torch.no_grad():
            model(x_inf)

    def train():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, enabled=amp):
            loss = lossf(train_model(x_train).float(), y_train)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()

    def mask_step(m, x, o, per_mask):
        o.zero_grad(set_to_none=True)
        f = class_score(model(masked(x, m)).float(), 1, settings.score)
        area, tv = penalty_terms(m, settings)
        loss = settings.l1 * area + settings.l2 * tv
        loss = (loss + f).sum() if per_mask else loss[0] + f.mean()
        loss.backward()
        o.step()
        with torch.no_grad():
            m.clamp_(0, 1)

    def group_mask():
        mask_step(m_group, x_mask, opt_group, False)

    def session_mask():
        mask_step(m_sess, x_sess, opt_sess, True)

    def occlusion():
        from robustmaps.saliency.gradients import log_odds, occlude_batch

        with torch.no_grad():
            log_odds(model(occlude_batch(x_occ, corners[:b_occ], patch, "mean_patch")).float())

    def grad(x):
        def run():
            xi = x.detach().clone().requires_grad_(True)
            out = model(xi)
            out[:, 1].sum().backward()
        return run

    def sobol():
        with torch.no_grad():
            scale = torch.rand((b_sob, 1, *shape), device=device)
            class_score(model(scale * x_inf[:1]).float(), 1, "probability")

    return {"forward": (forward, b_inf), "train": (train, b_train), "group_mask": (group_mask, b_mask),
            "session_mask": (session_mask, k_sess), "occlusion": (occlusion, b_occ),
            "grad": (grad(x_sal), b_sal), "grad1": (grad(x_one), 1), "sobol": (sobol, b_sob)}


def measure_units(cfg: dict, shape, device, repeats: int, sizes: dict) -> dict:
    """Median seconds per unit of every unit, repeats interleaved (one warm-up call each)."""
    fns = unit_functions(cfg, shape, device, sizes)
    times = {name: [] for name in fns}
    for name, (fn, _) in fns.items():  # warm-up (allocations, cuDNN / oneDNN kernel choice)
        fn()
        _sync(device)
    for _ in range(repeats):
        for name, (fn, n) in fns.items():
            _sync(device)
            t = time.perf_counter()
            fn()
            _sync(device)
            times[name].append((time.perf_counter() - t) / n)
    return {name: {"seconds": statistics.median(ts), "samples": ts, "batch": fns[name][1]}
            for name, ts in times.items()}


# ----------------------------------------------------------------------------------------------
# Work per rule


def conv_macs(arch: dict, shape) -> float:
    """Multiply-accumulates of the convolutions of a ``paper`` network (the bulk of its cost)."""
    n_blocks, filters = arch.get("n_blocks", 7), arch.get("filters", 8)
    subs = arch.get("sub_blocks", 1)
    subs = list(subs) if isinstance(subs, (list, tuple)) else [subs] * n_blocks
    stride = arch.get("downsampling", "maxpool") == "stride"
    cin, s, macs = 1, list(shape), 0.0
    for b in range(n_blocks):
        cout = min(filters * 2 ** b, arch.get("max_filters", 256))
        for k in range(subs[b]):
            out = [math.ceil(n / 2) for n in s] if (stride and k == subs[b] - 1) else s
            macs += math.prod(out) * cin * cout * 27
            cin = cout
        s = [math.ceil(n / 2) for n in s]
    return macs


def hpo_factors(cfg: dict, shape, draws: int = 2000) -> dict:
    """Cost of the search space's networks relative to the baseline (conv MACs): worst and mean."""
    space = cfg["hpo"]["space"]
    base = conv_macs({**cfg["hpo"]["baseline"]}, shape)
    rng = np.random.default_rng(0)
    worst = {"n_blocks": space["n_blocks"]["high"], "filters": max(space["filters"]["choices"]),
             "sub_blocks": space["sub_blocks"]["high"], "downsampling": "maxpool"}
    ratios = []
    for _ in range(draws):
        arch = {"n_blocks": int(rng.integers(space["n_blocks"]["low"], space["n_blocks"]["high"] + 1)),
                "filters": int(rng.choice(space["filters"]["choices"])),
                "sub_blocks": int(rng.integers(space["sub_blocks"]["low"], space["sub_blocks"]["high"] + 1)),
                "downsampling": str(rng.choice(space["downsampling"]["choices"]))}
        ratios.append(conv_macs(arch, shape) / base)
    return {"worst": conv_macs(worst, shape) / base, "mean": float(np.mean(ratios)),
            "median": float(np.median(ratios)), "worst_arch": worst}


def occlusion_fractions(grid: dict, patch: int, stride: int) -> dict:
    """Fractions of the occlusion windows that the workflow runs on the synthetic cohort's GM
    template (robustmaps.cohort.load_template: the MNI GM map on the grid), now that it skips the
    windows whose occlusion leaves the image unchanged (cubes of zeros): ``exact_zero``. Real
    Clinica maps differ (``brain``: the windows touching the template's voxels above 1% of its
    maximum, what would run if everything else were exactly 0; an upper bound on the saving)."""
    from robustmaps.cohort import load_template
    from robustmaps.grid import Grid
    from robustmaps.saliency.gradients import occlusion_windows

    g = Grid.from_config(grid)
    template = torch.from_numpy(np.asarray(load_template(g), dtype=np.float32))
    corners = occlusion_windows(g.shape, patch, stride)
    out = {}
    for name, level in (("exact_zero", 0.0), ("brain", 0.01 * float(template.max()))):
        above = (template > level).float()[None, None]
        touched = torch.nn.functional.max_pool3d(above, patch, stride=1)[0, 0]  # any voxel above in the cube
        out[name] = float(touched[corners[:, 0], corners[:, 1], corners[:, 2]].gt(0).float().mean())
    return out


def work(cfg: dict, counts: dict, shape, occ_run_fraction: float) -> list[dict]:
    """One row per costed rule: jobs, units per job (cap and typical) and the formula."""
    from robustmaps.saliency.gradients import occlusion_windows

    n_models = counts.get("train", len(cfg["train"]["seeds"]) * cfg["split"]["n_folds"])
    folds = cfg["split"]["n_folds"]
    ad_ses_per_subj = ADNI["AD"][1] / ADNI["AD"][0]
    cn_ses_per_subj = ADNI["CN"][1] / ADNI["CN"][0]
    trainval_subj = sum(v[0] for v in ADNI.values()) - 2 * TEST_PER_CLASS
    trainval_ses = ADNI["AD"][1] + ADNI["CN"][1] - TEST_PER_CLASS * (ad_ses_per_subj + cn_ses_per_subj)
    n_train = trainval_ses * (folds - 1) / folds
    n_val = trainval_subj / folds
    n_test = 2 * TEST_PER_CLASS
    aibl_ses = sum(v[1] for v in AIBL.values())
    ad_train = (ADNI["AD"][1] - TEST_PER_CLASS * ad_ses_per_subj) * (folds - 1) / folds
    ad_val = (ADNI["AD"][0] - TEST_PER_CLASS) / folds
    g = cfg["masks"]["group"]
    gi, ses = cfg["masks"]["independent"], cfg["masks"]["session"]
    n_group = ACCURACY * (ad_train + (ad_val if g["include_validation"] else 0))
    n_group_val = ACCURACY * ad_val
    aibl_ad = ACCURACY * AIBL["AD"][1]
    n_sessions = TEST_PER_CLASS * ad_ses_per_subj  # masks of every session of the AD test subjects
    t_train, t_hpo = cfg["train"], cfg["hpo"]
    typical_epochs = min(t_train["max_epochs"], 20)
    sal = cfg["saliency"]
    oc = sal["occlusion"]
    windows = len(occlusion_windows(shape, oc["patch"], oc["stride"]))
    faith = sal["faithfulness"]
    faith_fwd = 2 * (faith["steps"] + 1) + 2
    coh = 2 if faith["coherency"] else 1  # coherency recomputes every map once
    sob = cfg["sobol"]
    n_rois = 120
    sob_rows = sob["n"] * ((n_rois + 2) + (n_rois * (n_rois - 1) // 2 if sob["second_order"] else 0))
    sob_out = sob_rows * sob["n_images"] * len(sob["images"])
    act = sal["actmax"]
    rows = []

    def row(rule, jobs, units: dict, formula, cap_epochs=None, typ_epochs=None, note="", reads=0.0):
        """``reads``: images a job reads from the store at its caps (for the Slurm runtimes)."""
        rows.append({"rule": rule, "jobs": jobs, "units": units, "formula": formula, "note": note,
                     "cap": cap_epochs, "typical": typ_epochs, "reads": reads})

    per_epoch = {"train": n_train, "forward": n_val}
    row("train", counts.get("train", n_models), per_epoch,
        f"epochs x ({n_train:.0f} train sessions x train + {n_val:.0f} validation x forward)",
        t_train["max_epochs"], typical_epochs, "typical 20 epochs ASSUMED (early stopping, patience 5)",
        reads=t_train["max_epochs"] * (n_train + n_val))
    row("evaluate", counts.get("evaluate", n_models), {"forward": n_test + n_val + aibl_ses},
        f"{n_test} test + {n_val:.0f} validation + {aibl_ses} AIBL sessions x forward", 1, 1,
        reads=n_test + n_val + aibl_ses)
    row("group_mask (ADNI)", counts.get("group_mask", 2 * n_models) // 2,
        {"group_mask": n_group, "forward": n_group_val},
        f"epochs x ({n_group:.0f} AD train images x group_mask + {n_group_val:.0f} validation x forward)",
        g["max_epochs"], min(g["max_epochs"], 40), "typical 40 epochs ASSUMED (patience 5, tol 0.05)",
        reads=g["max_epochs"] * (n_group + n_group_val))
    row("group_mask (AIBL)", counts.get("group_mask", 2 * n_models) // 2,
        {"group_mask": aibl_ad * (1 - gi["validation_fraction"]), "forward": aibl_ad * gi["validation_fraction"]},
        f"epochs x ({aibl_ad * (1 - gi['validation_fraction']):.0f} x group_mask + "
        f"{aibl_ad * gi['validation_fraction']:.0f} x forward)", gi["max_epochs"], min(gi["max_epochs"], 100),
        "typical 100 epochs ASSUMED (patience 25)", reads=gi["max_epochs"] * aibl_ad)
    sweep = cfg["masks"]["sweep"]
    row("sweep_mask", counts.get("sweep_mask", len(sweep["points"])), {"group_mask": n_group, "forward": n_group_val},
        "as group_mask (ADNI)", sweep["max_epochs"] or g["max_epochs"], min(sweep["max_epochs"] or g["max_epochs"], 40),
        reads=(sweep["max_epochs"] or g["max_epochs"]) * (n_group + n_group_val))
    row("session_masks", counts.get("session_masks", n_models), {"session_mask": n_sessions},
        f"epochs x {n_sessions:.0f} sessions (100 AD test subjects x {ad_ses_per_subj:.2f}) x session_mask",
        ses["max_epochs"], min(ses["max_epochs"], 1000),
        f"cap {ses['max_epochs']}; typical 1,000 ASSUMED (patience {ses['patience']}, tol {ses['tol']})",
        reads=n_sessions)  # a batch of sessions is read once, then optimised
    faith_units = {"forward": n_test * faith_fwd}
    faith_txt = f" + faithfulness {n_test} x {faith_fwd} forward"
    for cam in ("gradcam", "gradcampp", "layercam", "hirescam", "randomcam"):
        if cam in sal["methods"]:
            row(cam, counts.get(cam, n_models), {"grad": coh * n_test, **faith_units},
                f"{coh} x {n_test} images x grad{faith_txt}", 1, 1)
    if "vanilla" in sal["methods"]:
        row("vanilla", counts.get("vanilla", n_models), {"grad1": coh * n_test, **faith_units},
            f"{coh} x {n_test} x grad1{faith_txt}", 1, 1)
    if "smoothgrad" in sal["methods"]:
        n_s = sal["smoothgrad"]["n_samples"]
        row("smoothgrad", counts.get("smoothgrad", n_models), {"grad1": coh * n_test * n_s, **faith_units},
            f"{coh} x {n_test} x {n_s} samples x grad1{faith_txt}", 1, 1)
    if "occlusion" in sal["methods"]:
        # the coherency pass occludes x * map + (1 - map) * mu: no cube of it is zero, every window runs
        row("occlusion", counts.get("occlusion", n_models),
            {"occlusion": n_test * windows * (occ_run_fraction + (coh - 1)), **faith_units},
            f"{n_test} x {windows} windows x ({occ_run_fraction:.3f} run" + (" + 1 coherency pass)" if coh > 1 else ")")
            + faith_txt, 1, 1, "windows run of the map: 1 before the skip; after it, those not wholly 0 or 1")
    if "lots" in sal["methods"]:
        it = sal["lots"]["iterations"]
        row("lots", counts.get("lots", n_models), {"grad": coh * n_test, **faith_units},
            f"steps x {coh} x {n_test} x grad{faith_txt} (once)", it,
            min(it, 200), f"cap {it} steps; typical 200 ASSUMED (stops at distance tau)")
        rows[-1]["units"] = {"grad": coh * n_test}
        rows[-1]["fixed"] = faith_units
    if "actmax" in sal["methods"]:
        row("actmax", counts.get("actmax", n_models),
            {"grad": len(act["classes"]) * act["n_starts"] * act["iterations"]},
            f"{len(act['classes'])} classes x {act['n_starts']} starts x {act['iterations']} steps x grad", 1, 1)
    row("sobol", counts.get("sobol", n_models), {"sobol": sob_out},
        f"N {sob['n']} x {sob_rows // sob['n']} rows x {sob['n_images']} images x {len(sob['images'])} classes x sobol",
        1, 1)
    pairs_group = n_models * n_models * n_group_val
    pairs_session = n_models * (TEST_PER_CLASS * (TEST_PER_CLASS - 1) + TEST_PER_CLASS * ad_ses_per_subj
                                * (ad_ses_per_subj - 1))
    row("prob_cnn", counts.get("prob_cnn", 1), {"forward": pairs_group + pairs_session},
        "models^2 x AD validation images + models x (baseline pairs + intra-subject pairs) x forward", 1, 1,
        "approximate (the pairs the analysis scores)")
    # the search, apart
    row("hpo (baseline trial)", t_hpo["n_trials"], per_epoch, "per trial as train, x the network's cost factor",
        t_hpo["max_epochs"], min(t_hpo["max_epochs"], 20), "search: costed apart",
        reads=t_hpo["max_epochs"] * (n_train + n_val))
    for r in rows:  # the saliency, Sobol and prob_CNN jobs read each of their images once
        if not r["reads"]:
            r["reads"] = {"sobol": sob["n_images"] * len(sob["images"]),
                          "prob_cnn": n_group_val + n_sessions}.get(r["rule"], n_test)
    return rows


def predict(rows: list[dict], units: dict, hpo: dict | None = None) -> list[dict]:
    out = []
    for r in rows:
        per_epoch = sum(n * units[u]["seconds"] for u, n in r["units"].items())
        fixed = sum(n * units[u]["seconds"] for u, n in r.get("fixed", {}).items())
        cap = per_epoch * (r["cap"] or 1) + fixed
        typ = per_epoch * (r["typical"] or 1) + fixed
        entry = {**{k: v for k, v in r.items() if k != "fixed"}, "job_s_cap": cap, "job_s_typical": typ,
                 "total_s_cap": cap * r["jobs"], "total_s_typical": typ * r["jobs"]}
        out.append(entry)
        if hpo is not None and r["rule"].startswith("hpo"):
            for case in ("mean", "worst"):
                f = hpo[case]
                out.append({**entry, "rule": f"hpo ({case} network of the space, x{f:.1f})",
                            "job_s_cap": cap * f, "job_s_typical": typ * f, "total_s_cap": cap * f * r["jobs"],
                            "total_s_typical": typ * f * r["jobs"],
                            "note": "ESTIMATE: baseline's measured cost x conv MAC ratio; search: costed apart"})
    return out


# Slurm runtimes of the workflow profile (profiles/default/config.yaml, `set-resources`) from the
# cost model's GPU column for config/paper.yaml, so that no job of the paper protocol reaches its
# time limit: margin x the job's time at its caps + start-up, rounded up. The margin is 3 while
# that column is an ESTIMATE (an assumed throughput), 1.5 once a GPU measured the units.
SLURM_MARGIN = {"estimate": 3.0, "measured": 1.5}
SLURM_STARTUP_S = 120     # Slurm, Snakemake and the job's imports
# reading the store: 4.2 MB a full-grid float16 image at an ASSUMED 200 MB/s from a shared file
# system (the GPU column's compute alone would make a training job I/O bound)
SLURM_READ_S = 121 * 145 * 121 * 2 / 200e6
SLURM_STEP_MIN = 10       # runtimes in steps of 10 minutes, never below one step
SEARCH_NETWORK = "mean"   # a search worker is sized for trials of the space's mean network


def slurm_runtimes(rows: list[dict], cfg: dict, measured: bool = False) -> dict[str, int]:
    """rule -> `runtime` minutes (before Slurm retries multiply it by `attempt`). Rows of one rule
    (group masks of two cohorts) take their longest; a search worker runs ceil(n_trials /
    workers) trials of the space's mean network (:data:`SEARCH_NETWORK`): a worker that reaches
    its limit anyway is sent SIGTERM, saves its trial's checkpoint and is resumed by the re-run.
    Each job also reads its images from the store (``reads`` x :data:`SLURM_READ_S`)."""
    margin = SLURM_MARGIN["measured" if measured else "estimate"]
    seconds: dict[str, float] = {}
    for r in rows:
        name = r["rule"].split(" (")[0]
        if name == "hpo":
            if f"({SEARCH_NETWORK} network" not in r["rule"]:
                continue
            name = "hpo_worker"
            trial = r["job_s_cap"] + SLURM_READ_S * r.get("reads", 0.0)
            job = trial * math.ceil(cfg["hpo"]["n_trials"] / cfg["hpo"]["workers"])
        else:
            job = r["job_s_cap"] + SLURM_READ_S * r.get("reads", 0.0)
        seconds[name] = max(seconds.get(name, 0.0), job)
    step = 60 * SLURM_STEP_MIN
    return {rule: SLURM_STEP_MIN * max(1, math.ceil((SLURM_STARTUP_S + margin * s) / step))
            for rule, s in sorted(seconds.items())}


def profile_runtimes(result_json: Path, cfg: dict) -> tuple[dict[str, int], str]:
    """(:func:`slurm_runtimes`, the column's label) of a saved result: its measured GPU column
    (a --device cuda run), else its GPU estimate."""
    result = json.loads(Path(result_json).read_text())
    measured = result["device"] == "cuda"
    table = result["tables"]["cuda_after" if measured else "gpu_estimate_after"]
    return slurm_runtimes(table["rows"], cfg, measured), table["label"]


# Memory: the peaks the rehearsal measured at the study's grid (make rehearsal writes its per-rule
# table; benchmarks/rehearsal_costs.tsv is the committed copy), scaled to the paper's counts where a
# job's memory grows with them, x a margin, in GB steps. On CPU every tensor is host memory: a GPU
# job's host memory is below these.
MEM_MARGIN = 1.5
MEM_STEP_MB = 1000
SITE_DEFAULT_MEM_MB = 4000   # profiles/slurm's default-resources (attempt 1)
VOLUME_BYTES = 121 * 145 * 121 * 4   # one float32 map or mask at the study's grid (8.5 MB)
#: a job holds its stack of maps or masks (float32, filled in place) and, while writing it, the
#: int16 file's bytes: 1.5 x a float32 volume per volume of the stack
STACK_FACTOR = 1.5
_SALIENCY = ("gradcam", "gradcampp", "layercam", "hirescam", "randomcam", "vanilla", "smoothgrad", "occlusion",
             "lots")
#: rule -> (volumes a job held in the rehearsal, in the paper protocol). Rehearsal: 16 test baselines
#: per saliency method, 13 AD test sessions' masks; paper (the cost model's cohort): 200 test
#: baselines, 100 AD test subjects x 3.29 sessions
STACKS = {"session_masks": (13, round(TEST_PER_CLASS * ADNI["AD"][1] / ADNI["AD"][0])),
          **{m: (16, 2 * TEST_PER_CLASS) for m in _SALIENCY}}
#: rule -> (batch in the rehearsal, the paper's): session masks optimise min(sessions, max_batch)
#: masks at once, 13 in the rehearsal, 16 (masks.session.max_batch) in the paper; the measured peak
#: is scaled by the ratio (an upper bound: the base of the process does not grow)
BATCHES = {"session_masks": (13, 16)}


def paper_memory_mib(rule: str, measured_mib: float) -> float:
    """A rule's peak at the paper's counts, extrapolated from the rehearsal's measured peak."""
    small, big = BATCHES.get(rule, (1, 1))
    held, paper = STACKS.get(rule, (0, 0))
    return measured_mib * big / small + max(0, paper - held) * STACK_FACTOR * VOLUME_BYTES / 2**20


def profile_memory(costs_tsv: Path) -> dict[str, int]:
    """rule -> `mem_mb` (before retries multiply it by `attempt`) for the rules whose paper-scale
    peak (:func:`paper_memory_mib`) x :data:`MEM_MARGIN` exceeds the site profile's default; the
    others keep the default."""
    import pandas as pd

    costs = pd.read_csv(costs_tsv, sep="\t")
    out = {}
    for r in costs.itertuples():
        need = MEM_MARGIN * paper_memory_mib(r.rule, r.rss_mib_max) * 2**20 / 1e6
        if need > SITE_DEFAULT_MEM_MB:
            out[r.rule] = MEM_STEP_MB * math.ceil(need / MEM_STEP_MB)
    return dict(sorted(out.items()))


def fmt_s(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def table(pred: list[dict], label: str) -> str:
    lines = [f"| rule | jobs | work per job | time per job ({label}): cap / typical | total: cap / typical |",
             "|---|---|---|---|---|"]
    for p in pred:
        epochs = f"epochs: cap {p['cap']}, typical {p['typical']}; " if (p["cap"] or 1) > 1 else ""
        note = f" ({p['note']})" if p["note"] else ""
        lines.append(f"| {p['rule']} | {p['jobs']} | {epochs}{p['formula']}{note} | {fmt_s(p['job_s_cap'])} / "
                     f"{fmt_s(p['job_s_typical'])} | {fmt_s(p['total_s_cap'])} / {fmt_s(p['total_s_typical'])} |")
    return "\n".join(lines)


def totals(pred: list[dict]) -> dict:
    protocol = [p for p in pred if not p["rule"].startswith("hpo")]
    return {"protocol_cap_h": sum(p["total_s_cap"] for p in protocol) / 3600,
            "protocol_typical_h": sum(p["total_s_typical"] for p in protocol) / 3600,
            **{f"hpo_{case}_{k}_h": sum(p[f"total_s_{k}"] for p in pred if p["rule"].startswith(f"hpo ({case}"))
               / 3600 for case in ("baseline", "mean", "worst") for k in ("cap", "typical")}}


def plan_counts() -> dict:
    """Job counts of ``snakemake -n --configfile config/paper.yaml`` on the stub CAPS of
    benchmarks/plan_paper.py (700 ADNI subjects)."""
    import subprocess
    import tempfile

    sys.path.insert(0, str(REPO / "benchmarks"))
    from plan_paper import SNAKEMAKE, job_counts, stub_caps

    with tempfile.TemporaryDirectory() as tmp:
        work_dir = Path(tmp)
        stub_caps(work_dir / "data", "ADNI", 700, 8)
        stub_caps(work_dir / "data", "AIBL", 120, 2)
        proc = subprocess.run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(work_dir), "-n", "--quiet",
                               "rules", "--configfile", str(REPO / "config" / "paper.yaml")],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(proc.stderr[-3000:])
        return job_counts(proc.stdout + proc.stderr)


def config_counts(cfg: dict) -> dict:
    """The same counts from the config alone (what the plan gives for paper.yaml)."""
    n = cfg["split"]["n_folds"] * len(cfg["train"]["seeds"])
    counts = {"train": n, "evaluate": n, "group_mask": 2 * n, "session_masks": n, "sobol": n, "prob_cnn": 1,
              "sweep_mask": len(cfg["masks"]["sweep"]["points"])}
    counts.update({m: n for m in cfg["saliency"]["methods"]})
    return counts


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "config" / "paper.yaml"))
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true",
                    help="1 repeat, a 16x20x16 grid, 3 blocks, batches of 2 (checks the script, not the paper's costs)")
    ap.add_argument("--plan", action="store_true", help="job counts from snakemake -n (else from the config)")
    ap.add_argument("--units", help="predict from units measured before (a --json file) instead of measuring")
    ap.add_argument("--gpu-tflops", type=float, default=10.0,
                    help="ESTIMATE for a GPU column without GPU units: the H100-class GPU's effective throughput on "
                         "this network (every unit scaled by it over the CPU's measured forward FLOP/s)")
    ap.add_argument("--max-batch", type=int, default=None,
                    help="cap every measured batch (default: 8 on CPU, for the shared host's memory; none on CUDA)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--units-only", action="store_true", help="measure and write the units, predict nothing")
    ap.add_argument("--json", help="write units, rows and totals here")
    ap.add_argument("--slurm", metavar="JSON",
                    help="print the workflow profile's per-rule runtimes from a --json result (its GPU column), "
                         "measure nothing")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(Path(args.config))
    if args.slurm:
        runtimes, label = profile_runtimes(Path(args.slurm), cfg)
        print(f"# runtimes (minutes) from {args.slurm}: {label}; margin and rounding: benchmarks/paper_cost.py")
        print("set-resources:")
        for rule, minutes in runtimes.items():
            print(f"  {rule}:\n    runtime: {minutes} * attempt")
        return {"runtimes": runtimes}
    shape = tuple(cfg["data"]["grid"]["shape"])
    sizes = {"inference": cfg["evaluation"]["batch_size"], "train": cfg["train"]["batch_size"],
             "mask": cfg["masks"]["batch_size"], "session": cfg["masks"]["session"]["max_batch"],
             "saliency": cfg["saliency"]["batch_size"], "occlusion": 4 * cfg["saliency"]["batch_size"],
             "sobol": cfg["sobol"]["batch_size"]}
    measure_shape, repeats = shape, args.repeats
    cap = args.max_batch or (8 if args.device == "cpu" else None)
    if cap:
        sizes = {k: min(v, cap) for k, v in sizes.items()}
    if args.quick:  # a check of the script: a 3-block network on a small grid
        measure_shape, repeats = (16, 20, 16), 1
        sizes = {k: 2 for k in sizes}
        cfg["train"]["architecture"] = {**cfg["train"]["architecture"], "n_blocks": 3}
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: CUDA is not available")
    if args.units:
        saved = json.loads(Path(args.units).read_text())
        units, device_label = saved["units"], saved["device_label"]
        args.device, measure_shape, repeats = saved["device"], tuple(saved["shape"]), saved["repeats"]
        print(f"units measured before on {device_label} at {'x'.join(map(str, measure_shape))} ({args.units})")
    else:
        t0 = time.perf_counter()
        units = measure_units(cfg, measure_shape, device, repeats, sizes)
        device_label = (torch.cuda.get_device_name(0) if device.type == "cuda" else
                        f"CPU {platform.processor() or platform.machine()}, {args.threads} threads")
        print(f"units measured on {device_label} at {'x'.join(map(str, measure_shape))}, "
              f"{repeats} repeats (interleaved, medians), {time.perf_counter() - t0:.0f} s")
    for name, u in units.items():
        print(f"  {name:13s} {1000 * u['seconds']:10.2f} ms per unit (batch {u['batch']})")
    if args.units_only:
        result = {"device": args.device, "device_label": device_label, "shape": list(measure_shape),
                  "repeats": repeats, "sizes": sizes, "units": units}
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1, default=float))
        return result
    counts = plan_counts() if args.plan else config_counts(cfg)
    oc = cfg["saliency"]["occlusion"]
    fractions = occlusion_fractions(cfg["data"]["grid"], oc["patch"], oc["stride"])
    run_fraction = fractions["exact_zero"]
    result = {"device": args.device, "device_label": device_label, "shape": list(measure_shape),
              "repeats": repeats, "sizes": sizes, "units": units, "counts": counts,
              "occlusion_run_fraction": fractions, "hpo_factors": hpo_factors(cfg, shape), "tables": {}}
    scenarios = {"before": 1.0, "after": run_fraction, "zero_background": fractions["brain"]}
    tag = " (QUICK: units of a 3-block network on a 16x20x16 grid, not the paper's costs)" if args.quick else ""
    labels = {args.device: (units, f"{args.device.upper()} measured ({device_label})" + tag)}
    flops = 2 * conv_macs(cfg["train"]["architecture"], measure_shape)  # per image forward
    measured_flops = flops / units["forward"]["seconds"]
    result["forward_gflops"] = measured_flops / 1e9
    if args.device == "cpu":
        ratio = args.gpu_tflops * 1e12 / measured_flops
        result["gpu_ratio"] = ratio
        gpu_units = {k: {**v, "seconds": v["seconds"] / ratio} for k, v in units.items()}
        labels["gpu_estimate"] = (gpu_units, f"GPU ESTIMATE: {args.gpu_tflops:g} TFLOPS effective = CPU / {ratio:.0f}"
                                  + tag)
    print(f"forward: {measured_flops / 1e9:.1f} GFLOP/s effective ({flops / 1e9:.2f} GFLOP of convolutions per "
          f"image); occlusion windows run: {run_fraction:.3f} (skip of unchanged windows on the synthetic "
          f"template), {fractions['brain']:.3f} if the background outside the brain were exactly 0")
    for key, (u, label) in labels.items():
        for scen, frac in scenarios.items():
            pred = predict(work(cfg, counts, shape, frac), u, result["hpo_factors"])
            tot = totals(pred)
            result["tables"][f"{key}_{scen}"] = {"label": label, "rows": pred, "totals": tot}
        print(f"\n## {label} (occlusion skip: before = every window, after = {run_fraction:.3f} of them)\n")
        print(table(result["tables"][f"{key}_after"]["rows"], label))
        for scen in scenarios:
            tot = result["tables"][f"{key}_{scen}"]["totals"]
            print(f"\nprotocol without the search (occlusion {scen}: {scenarios[scen]:.3f} of the windows): "
                  f"{tot['protocol_cap_h']:.1f} h at the caps, {tot['protocol_typical_h']:.1f} h typical; "
                  f"goal {GOAL_GPU_HOURS:g} GPU-hours on one H100-class GPU")
        tot = result["tables"][f"{key}_after"]["totals"]
        print(f"search (hpo, {cfg['hpo']['n_trials']} trials): baseline network {tot['hpo_baseline_typical_h']:.1f} h "
              f"typical ({tot['hpo_baseline_cap_h']:.1f} at the cap); the space's mean network "
              f"{tot['hpo_mean_typical_h']:.1f} h ({tot['hpo_mean_cap_h']:.1f}); worst "
              f"{tot['hpo_worst_typical_h']:.1f} h ({tot['hpo_worst_cap_h']:.1f})")
        ranked = sorted((p for p in result["tables"][f"{key}_after"]["rows"] if not p["rule"].startswith("hpo")),
                        key=lambda p: -p["total_s_typical"])
        share = sum(p["total_s_typical"] for p in ranked)
        print("dominating rules (typical): " + ", ".join(f"{p['rule']} {100 * p['total_s_typical'] / share:.0f}%"
                                                         for p in ranked[:4]))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=float))
    return result


if __name__ == "__main__":
    main()
