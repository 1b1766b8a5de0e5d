"""Rule entries of the masks stage (rules/masks.smk): the mean reference map, group and sweep
masks (with the second QC step's screening and exclusions), session masks, and the stage's
summary. The mathematics is robustmaps.masks; the sweep's bookkeeping robustmaps.sweep.

Every entry opens its trained model (robustmaps.trained.open_model_job), optimises, and writes
NIfTI masks on the working grid (the store's, where the atlas was checked) and on the native grid
(for display), plus history and summary tables."""

from __future__ import annotations

import contextlib
import logging
import shutil

import numpy as np
import pandas as pd

from ..checkpoints import job_checkpoint
from ..grid import Grid
from ..io import InputError, atomic_path, load_nifti, read_tsv, save_nifti, write_tsv
from ..masks import (
    EXCLUDED_COLUMNS,
    FLAGGED_COLUMNS,
    flagged_table,
    group_images,
    group_outcome,
    optimise_group,
    optimise_independent,
    session_outcome,
    settings_from,
)
from ..plots import brain_views, group_masks_figure, sweep_figure
from ..preprocess import open_store
from ..splits import read_split_rows
from ..trained import images, open_model_job
from ..volumes import load_reference, write_volumes

log = logging.getLogger(__name__)


def mean_reference(store_npy, index_tsv, train_tsv, out_nii, *, reference_class: str = "CN",
                   working_grid: dict) -> None:
    """Rule entry: the mean image of a fold's training sessions of the class named
    ``reference_class`` (the mean CN map, a per-voxel mu for equation (1)). The class is chosen
    by name (the store index's diagnosis), never by its label number."""
    store, index = open_store(store_npy, index_tsv)
    table = read_split_rows(train_tsv, index)
    rows = table.row.to_numpy()
    rows = rows[index.diagnosis.to_numpy()[rows] == reference_class]
    if len(rows) == 0:
        raise InputError(f"{train_tsv}: no training session of class {reference_class} for the reference map")
    total = np.zeros(store.shape[1:], np.float64)
    for i in range(0, len(rows), 32):
        total += np.asarray(store[list(rows[i:i + 32])], dtype=np.float64).sum(0)
    save_nifti((total / len(rows)).astype(np.float32), Grid.from_config(working_grid).affine, out_nii)
    log.info("reference: mean of %d training sessions of class %s", len(rows), reference_class)


def group_mask(model_pt, store_npy, index_tsv, images_tsv, validation_tsv, out: dict, *, target: str, params: dict,
               grids: dict, reference_nii=None, excluded_tsv=None, screen: dict | None = None, device: str = "auto",
               threads: int = 1, checkpoint: str | None = None, checkpoint_minutes: float = 0.0) -> None:
    """Rule entry: one group mask (2.3.3) of one model.

    Main cohort (``validation_tsv`` given): trained over the correctly classified ``target``
    sessions of ``images_tsv`` (the fold's train.tsv) and, with ``include_validation``, of the
    validation set; the correctly classified ones of the validation set give the validation
    masking loss. Independent cohort (``validation_tsv`` None): its correctly classified target
    sessions, a seeded ``validation_fraction`` of them as the validation set.

    ``params``: the penalties (l1, l2, b1, b2, lr, score, threshold, eps) and batch_size,
    max_images, max_epochs, patience, tol, jump_factor, include_validation, validation_fraction,
    seed. ``out``: mask, native, history, summary, flagged (paths).

    Second QC step (2.3.1), cohort-wide: ``excluded_tsv`` (``cohort_exclusions``) lists the
    sessions that made some model's loss jump in the screening pass; they are removed from this
    mask's training and validation images before it is optimised. ``screen`` (the screening pass's
    files of this very model: mask, native, history, summary, flagged) makes that cheap and exact:
    when none of this model's images is excluded, optimising again would give the screening mask
    bit for bit (same images, seeds and settings), so its files are copied. The flagged table
    lists the screening pass's flags (``excluded`` true) followed by the new pass's.

    ``checkpoint``: a path outside the outputs for the optimisation's state (every
    ``checkpoint_minutes``, 0: every epoch; at once on SIGTERM), resumed by a re-run and removed
    once the outputs are written."""
    job = open_model_job(model_pt, store_npy, index_tsv, images_tsv, device=device, threads=threads,
                         seed=params["seed"])
    model, store, index = job.model, job.store, job.index
    label = job.class_index(target)
    settings = settings_from(params, label)
    bs = params["batch_size"]
    train, val = group_images(model, store, job.table, job.rows_of(validation_tsv) if validation_tsv else None, label,
                              batch_size=bs, seed=params["seed"], validation_fraction=params["validation_fraction"],
                              include_validation=params["include_validation"], max_images=params["max_images"])
    removed = np.zeros(0, dtype=int)
    if excluded_tsv is not None:
        drop = excluded_rows(excluded_tsv, index)
        removed = np.intersect1d(np.concatenate([train, val]), drop)
        if screen is not None and not len(removed):
            log.info("second QC step: none of this model's %d images is excluded from the cohort (%s); the mask is "
                     "the screening pass's, copied", len(train), excluded_tsv)
            for key in ("mask", "native", "history", "summary", "flagged"):
                if key not in out:  # no native copy on the native grid
                    continue
                with atomic_path(out[key]) as tmp:
                    shutil.copyfile(screen[key], tmp)
            return
        if len(removed):
            log.info("second QC step: %d of this model's images made some model's loss jump in the cohort's screening "
                     "pass and are removed before optimising: %s", len(removed),
                     ", ".join(f"{index.participant_id.iloc[r]}/{index.session_id.iloc[r]}" for r in removed))
        train, val = np.setdiff1d(train, drop), np.setdiff1d(val, drop)
    if len(train) == 0:  # a result, not bad input: an empty (all-ones) mask, flagged in the summary
        log.warning("WARNING: %s classifies no %s session of %s correctly: nothing to mask, the mask is all ones",
                    model_pt, target, images_tsv)
    log.info("group mask for %s of %s: %d training images, %d validation images, %d voxels", target, model_pt,
             len(train), len(val), int(np.prod(store.shape[1:])))
    mu = load_reference(reference_nii, store.shape[1:], next(model.parameters()).device)

    ck = job_checkpoint(checkpoint, checkpoint_minutes, {"target": target, "params": params, "grids": grids},
                        [model_pt, store_npy, index_tsv, images_tsv, validation_tsv, reference_nii, excluded_tsv],
                        next(model.parameters()).device)
    with ck or contextlib.nullcontext():
        mask, history, flagged = optimise_group(
            model, store, train, val, settings, mu=mu, batch_size=bs,
            max_epochs=params["max_epochs"] if len(train) else 0, patience=params["patience"],
            tol=params["tol"], seed=params["seed"], jump_factor=params["jump_factor"], checkpoint=ck)
    hist, outcome = group_outcome(model, store, train, val, mask, settings, mu, bs, history)
    summary = {"target": target, **outcome, "flagged_images": len({f["row"] for f in flagged}),
               "excluded_images": len(removed)}
    write_volumes(mask[0, 0].cpu().numpy(), grids, out["mask"], out.get("native"))
    write_tsv(hist, out["history"])
    write_tsv(pd.DataFrame([summary]), out["summary"])
    table = flagged_table(flagged, index)
    if screen is not None:  # the screening pass's flags, whose images this pass went without
        before = read_tsv(screen["flagged"], FLAGGED_COLUMNS, what="screening pass's flagged table")
        table = pd.concat([before.assign(excluded=True), table]) if len(table) else before.assign(excluded=True)
    write_tsv(table, out["flagged"])
    if ck is not None:
        ck.remove()
    log.info("mask: %.1f%% of voxels < %.2f, mean %s %s on masked validation images %.3g -> %.3g (probability "
             "%.3g -> %.3g)", 100 * summary["coverage"], settings.threshold, target, settings.score,
             summary["score_before"], summary["score_after"], summary["probability_before"],
             summary["probability_after"])


def excluded_rows(excluded_tsv, index: pd.DataFrame) -> np.ndarray:
    """Rows of ``index`` (a cohort's store index) whose session ``excluded_tsv`` lists."""
    drop = read_tsv(excluded_tsv, ("participant_id", "session_id"), what="second QC step's exclusion list")
    keys = set(zip(drop.participant_id.astype(str), drop.session_id.astype(str)))
    return np.flatnonzero([(p, s) in keys for p, s in zip(index.participant_id.astype(str),
                                                           index.session_id.astype(str))])


def cohort_exclusions(flagged: dict[str, str], out_tsv) -> pd.DataFrame:
    """Second QC step (2.3.1) for a whole cohort: the study removed the image that made the
    group-mask loss jump "from the data" and optimised again. ``flagged`` maps a model's label
    (``fold-0/seed-1``) to the flagged table of its screening group mask; every session any model
    flagged is listed once, with how many models (and which) flagged it, and its largest jump.
    Every group and sweep mask of the cohort is then optimised without them (``group_mask``)."""
    tables = [read_tsv(path, FLAGGED_COLUMNS, what="screening pass's flagged table").assign(model=label)
              for label, path in flagged.items()]
    table = pd.concat(tables) if tables else pd.DataFrame(columns=FLAGGED_COLUMNS + ["model"])
    if len(table):
        table = (table.groupby(["participant_id", "session_id"], sort=False)
                 .agg(flagged_by=("model", "nunique"), models=("model", lambda m: ";".join(sorted(set(m)))),
                      max_loss_jump=("max_loss_jump", "max")).reset_index()
                 .sort_values(["flagged_by", "max_loss_jump", "participant_id", "session_id"],
                              ascending=[False, False, True, True]))
    table = table.reindex(columns=EXCLUDED_COLUMNS)
    write_tsv(table, out_tsv)
    log.info("second QC step: %d session(s) made the loss jump in the screening pass of %d model(s) and are "
             "excluded from every group mask of the cohort%s", len(table), len(flagged),
             "".join(f"\n  {r.participant_id}/{r.session_id} (flagged by {r.models})" for r in table.itertuples()))
    return table


def session_masks(model_pt, store_npy, index_tsv, test_tsv, out: dict, *, target: str, params: dict, grids: dict,
                  reference_nii=None, device: str = "auto", threads: int = 1, checkpoint: str | None = None,
                  checkpoint_minutes: float = 0.0) -> None:
    """Rule entry: one mask per session of ``test_tsv``'s ``target`` subjects (every session, 2.3.4),
    optimised ``max_batch`` at a time as one batch; l1 and l2 multiplied by ``penalty_scale``.
    ``out``: masks (4D, working grid), native (4D), index (one row per volume), history.
    ``checkpoint``: a path outside the outputs; each batch of masks checkpoints its optimisation
    there (``<checkpoint>-<first row>.pt``) and keeps its result once done (``...-done.pt``), so
    that a re-run resumes the batch in flight and skips the finished ones; removed at the end."""
    job = open_model_job(model_pt, store_npy, index_tsv, test_tsv, device=device, threads=threads,
                         seed=params["seed"])
    model, store = job.model, job.store
    label = job.class_index(target)
    settings = settings_from(params, label, params["penalty_scale"])
    table = job.table[job.table.label.to_numpy() == label].reset_index(drop=True)
    if table.empty:
        raise InputError(f"{test_tsv}: no {target} session to mask")
    dev = job.device
    mu = load_reference(reference_nii, store.shape[1:], dev)
    rows = table.row.to_numpy()
    log.info("%d session masks for %s of %s (%d subjects), %d per batch, %d voxels each", len(rows), target,
             model_pt, table.participant_id.nunique(), params["max_batch"], int(np.prod(store.shape[1:])))
    # the stack is filled in place (one copy of it in memory: at the paper's ~330 AD test sessions
    # a float32 stack is 2.8 GB, and a list then np.stack held it twice)
    volumes, stats, history = None, [], []
    files = []
    for start in range(0, len(rows), params["max_batch"]):
        chunk = rows[start:start + params["max_batch"]]
        x = images(store, chunk, dev, channels_last=True)
        inputs = [model_pt, store_npy, index_tsv, test_tsv, reference_nii]
        settings_key = {"target": target, "params": params, "rows": chunk.tolist()}
        ck = job_checkpoint(f"{checkpoint}-{start:05d}.pt" if checkpoint else None, checkpoint_minutes,
                            settings_key, inputs, dev)
        done = job_checkpoint(f"{checkpoint}-{start:05d}-done.pt" if checkpoint else None, 0, settings_key, inputs,
                              dev)
        files += [c for c in (ck, done) if c is not None]
        result = done.load() if done is not None else None
        if result is not None:
            masks_k, hist, st = result["masks"].to(dev), result["history"], result["stats"]
        else:
            with ck or contextlib.nullcontext():
                masks_k, hist, st = optimise_independent(
                    model, x, settings, mu=mu, max_epochs=params["max_epochs"], patience=params["patience"],
                    tol=params["tol"], log_every=max(1, params["max_epochs"] // 50),
                    what=f"session masks {start + 1}-{start + len(chunk)}/{len(rows)}", checkpoint=ck)
            if done is not None:
                done.save({"epoch": "done", "masks": masks_k.cpu(), "history": hist, "stats": st})
                ck.remove()
        stats += session_outcome(model, store, chunk, masks_k, settings, mu, st)
        for j in range(len(chunk)):
            m = masks_k[j, 0].cpu().numpy()
            if volumes is None:
                volumes = np.empty((*m.shape, len(rows)), dtype=m.dtype)
            volumes[..., start + j] = m
        history += [{"volume": h["mask"] + start, **h} for h in hist]
    meta_cols = table[["participant_id", "session_id", "diagnosis"]].reset_index(names="volume")
    idx = pd.concat([meta_cols, pd.DataFrame(stats)], axis=1)
    write_volumes(volumes, grids, out["masks"], out.get("native"), dtype=np.int16)
    write_tsv(idx, out["index"])
    write_tsv(pd.DataFrame(history)[["volume", "epoch", "loss", "area", "tv", "score"]], out["history"])
    for c in files:
        c.remove()
    log.info("session masks: coverage %.3f-%.3f, %s %s %.3g -> %.3g, probability %.3g -> %.3g (means)",
             idx.coverage.min(), idx.coverage.max(), target, settings.score, idx.score_before.mean(),
             idx.score_after.mean(), idx.probability_before.mean(), idx.probability_after.mean())


def summarise_masks(entries: list[dict], out: dict, *, threshold: float = 0.95, views: list = (),
                    background=None) -> None:
    """Rule entry: one tidy table of every mask (group, sweep: one row each; session: one row per
    session), the second QC step's flagged images of every group mask, two figures, and a brain
    view of 1 - m of each group mask in ``views`` ([(ids: cohort, target, fold, seed; png)]) over
    the cohort's mean GM map ``background``. ``entries``: one record per mask, its ids (kind,
    cohort, target, fold, seed, point) and its files: ``summary`` (a session model's index), and
    for a group mask ``flagged`` and ``mask``."""
    ids = ["kind", "cohort", "target", "fold", "seed", "point"]
    tables, flags, group_ids = [], [], []
    for e in entries:
        t = read_tsv(e["summary"], ["coverage", "score_before", "score_after", "probability_after"],
                     what="mask summary", dtype={"participant_id": str, "session_id": str})
        t = t.drop(columns=[k for k in ids if k in t])
        for k in reversed(ids):
            t.insert(0, k, e[k])
        tables.append(t)
        if e["kind"] == "group":
            f = read_tsv(e["flagged"], FLAGGED_COLUMNS, what="flagged images table",
                         dtype={"participant_id": str, "session_id": str})
            flags.append(f.assign(**{k: e[k] for k in ids[1:5]}))
            group_ids.append(({k: e[k] for k in ids}, e["mask"]))
    table = pd.concat(tables, ignore_index=True)
    lead = ids + [c for c in ("participant_id", "session_id", "volume") if c in table]
    table = table[lead + [c for c in table if c not in lead]]
    write_tsv(table, out["summary"])
    flag_table = pd.concat(flags, ignore_index=True) if flags else pd.DataFrame(columns=FLAGGED_COLUMNS)
    cols = ["cohort", "target", "fold", "seed", *FLAGGED_COLUMNS]
    write_tsv(flag_table.reindex(columns=cols), out["flagged"])
    group_masks_figure(group_ids, out["figure"], threshold)
    if views:
        bg = load_nifti(background)[0]
        masks = {(e["cohort"], e["target"], e["fold"], e["seed"]): nii for e, nii in group_ids}
        for ids, png in views:
            mask = load_nifti(masks[(ids["cohort"], ids["target"], ids["fold"], ids["seed"])])[0]
            brain_views(1 - mask, bg, png, f"group mask, {ids['target']}, fold {ids['fold']} seed {ids['seed']}",
                        "perturbation 1 - m")
    sweep_figure(table[table.kind == "sweep"], out["sweep"])
    for kind, rows in table.groupby("kind", sort=False):
        log.info("%s masks: %d, coverage %.3f-%.3f, mean target probability after masking %.3g (max %.3g)", kind,
                 len(rows), rows.coverage.min(), rows.coverage.max(), rows.probability_after.mean(),
                 rows.probability_after.max())
    log.info("second QC step: %d image(s) flagged", flag_table[["participant_id", "session_id"]].drop_duplicates()
             .shape[0] if len(flag_table) else 0)
