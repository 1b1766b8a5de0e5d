"""Rule entries of the saliency stage: per-session maps of one method and model, their
faithfulness, activation maximisation, Sobol indices, and the stage's summary tables.

Per-session maps are stored like the session masks: one 4D NIfTI per (method, model) on the
working grid (+ a native-grid copy for display) and an index TSV (one row per volume); the group
map of a model is the mean map over its correctly classified AD (``group_class``) test sessions.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
import torch

from ..atlas import load_labels
from ..faithfulness import faithfulness, faithfulness_table
from ..io import InputError, load_nifti, read_tsv, write_tsv
from ..plots import brain_views, faithfulness_figure, saliency_maps_figure, sobol_convergence_figure
from ..saliency import Explainer, group_members
from ..saliency.actmax import activation_maximisation
from ..saliency.cam import target_logit
from ..saliency.lots import features, minmax, target_features
from ..saliency.sobol import roi_lookup, sobol_analysis
from ..settings import Faithfulness, Saliency, Sobol
from ..trained import class_index, images, open_model_job, predict
from ..volumes import load_reference, write_volumes

log = logging.getLogger(__name__)


def _targets(target: str, meta: dict, predicted: np.ndarray, model_pt) -> np.ndarray:
    if target == "predicted":
        return predicted
    return np.full(len(predicted), class_index(meta, target, model_pt))


def _lots_target(model, method, settings: Saliency, store, train, dev):
    """LOTS's F_t (seed 002, 4.2) from the features of the training sessions ``train`` (the split's
    train.tsv rows): only those the target needs are run through the model, a batch at a time
    (one for the zero target, which only needs the feature size; ``train`` may then be any table)."""
    if method != "lots":
        return None

    lp, bs = settings.section("lots"), settings.batch_size
    rows = train.row.to_numpy()

    @torch.no_grad()
    def feats(pos):
        chosen = rows[np.asarray(pos)]
        return torch.cat([features(model, images(store, chosen[i:i + bs], dev, channels_last=True), lp.layer)
                          for i in range(0, len(chosen), bs)])

    return target_features(lp.target, feats, train.label.to_numpy(), seed=int(settings.seed))


def saliency_maps(model_pt, store_npy, index_tsv, table_tsv, out: dict, *, method: str, params, grids: dict,
                  faith=None, group_class: str = "AD", device: str = "auto", threads: int = 1,
                  atlas_nii=None, train_tsv=None, reference_nii=None) -> None:
    """Rule entry: maps of ``method`` for every session of ``table_tsv`` (the test set's baseline
    sessions) and, with ``faith`` (the faithfulness settings), their faithfulness metrics.
    ``out``: maps, native (4D; optional), index, group, group_native (optional)[, faithfulness].
    ``params``: the method's saliency settings (:class:`robustmaps.settings.Saliency` or its
    mapping: target, layer, batch_size, seed and the method's own section); ``faith``:
    :class:`robustmaps.settings.Faithfulness` (or its mapping). With ``atlas_nii`` (the atlas on
    the working grid) the stack of per-session maps holds them inside the atlas only, which is all
    the analysis reads: zeros compress (0.44 instead of 1.57 bytes a voxel after gzip, measured on
    the demo: benchmarks/README.md). Faithfulness and the group map use the whole maps.
    ``train_tsv`` (the fold's train.tsv): the sessions LOTS's ``class`` and ``mean`` targets take
    their features from (required for them). ``reference_nii``: the masks' reference map (mu of
    equation (1), :func:`robustmaps.volumes.load_reference`; none: mu = 1), the faithfulness
    baseline when ``faith.baseline`` is ``mask`` (the default)."""
    settings = Saliency.of(params)
    faith = None if faith is None else Faithfulness.of(faith)
    job = open_model_job(model_pt, store_npy, index_tsv, table_tsv, device=device, threads=threads,
                         seed=settings.seed)
    model, meta, store, table, dev = job.model, job.meta, job.store, job.table, job.device
    rows = table.row.to_numpy()
    probs = predict(model, store, rows, settings.batch_size)
    predicted = probs.argmax(1)
    targets = _targets(settings.target, meta, predicted, model_pt)
    lots_train = table
    if method == "lots" and settings.section("lots").target != "zero":
        if not train_tsv:
            raise InputError(f"saliency.lots.target {settings.lots.target!r} takes F_t from the training "
                             "sessions: give the fold's train.tsv (train_tsv)")
        lots_train = job.rows_of(train_tsv).reset_index(drop=True)
    explainer = Explainer(model, method, settings, voxel_size=grids["working"]["voxel_size"],
                          lots_target=_lots_target(model, method, settings, store, lots_train, dev))
    log.info("%s maps (layer %s) of %d sessions, target %s, on %s", method, explainer.layer, len(rows),
             settings.target, dev)
    volumes, runtimes = explainer.explain_rows(store, rows, targets, str(model_pt))
    idx = table[["participant_id", "session_id", "diagnosis", "label"]].reset_index(names="volume")
    idx["predicted"] = predicted
    idx["target"] = targets
    idx["p_target"] = probs[np.arange(len(rows)), targets]
    idx["runtime_ms"] = runtimes
    idx["layer"] = explainer.layer
    if faith is not None:
        mu = load_reference(reference_nii, store.shape[1:], dev) if faith.baseline == "mask" else 1.0
        scores = score_maps(model, explainer, store, rows, volumes, targets, faith, grids, settings.batch_size, mu=mu,
                            seed=int(settings.seed))
        scores.insert(0, "participant_id", idx.participant_id.to_numpy()[:len(scores)])
        scores.insert(1, "session_id", idx.session_id.to_numpy()[:len(scores)])
        scores["runtime_ms"] = idx.runtime_ms.to_numpy()[:len(scores)]
    chosen = group_members(idx.label.to_numpy(), predicted, class_index(meta, group_class, model_pt))
    idx["in_group"] = chosen
    group = volumes[chosen].mean(0) if chosen.any() else volumes.mean(0)
    stack = volumes
    if atlas_nii is not None:
        atlas, _ = load_nifti(atlas_nii)
        if atlas.shape != volumes.shape[1:]:
            raise InputError(f"{atlas_nii}: atlas grid {atlas.shape} is not the maps' grid {volumes.shape[1:]}")
        stack = volumes * (atlas > 0)
    write_volumes(np.moveaxis(stack, 0, -1), grids, out["maps"], out.get("native"), dtype=np.int16, fill=0.0)
    write_volumes(group, grids, out["group"], out.get("group_native"), fill=0.0)
    write_tsv(idx, out["index"])
    log.info("%s: %d maps, group map over %d %s sessions, %.0f ms per map (median)", method, len(idx),
             int(chosen.sum()), group_class, float(np.median(runtimes)))
    if faith is not None:
        write_tsv(scores, out["faithfulness"])
        log.info("%s: deletion AUC %.3f, insertion AUC %.3f, average drop %.3f, coherency %.3f (means over %d maps)",
                 method, scores.deletion_auc.mean(), scores.insertion_auc.mean(), scores.average_drop.mean(),
                 scores.coherency.mean(), len(scores))


def score_maps(model, explainer, store, rows, maps: np.ndarray, targets: np.ndarray, faith: Faithfulness,
               grids: dict, batch_size: int, *, mu=1.0, seed: int = 0) -> pd.DataFrame:
    """Faithfulness metrics (robustmaps.faithfulness) of the maps (N, X, Y, Z) of the sessions at
    store ``rows``; the first ``faith.max_sessions`` only when it is set. ``faith.baseline``
    (default ``mask``: ``mu``, the masks' mu of equation (1)), ``zero`` or ``blur``; ``seed``: the
    order of equal map values (per session position, the same for every method)."""
    n = len(rows) if faith.max_sessions is None else min(len(rows), faith.max_sessions)
    dev = next(model.parameters()).device
    frames = []
    for i in range(0, n, batch_size):
        j = min(i + batch_size, n)
        frames.append(faithfulness(model, explainer, images(store, rows[i:j], dev, channels_last=True),
                                   torch.from_numpy(maps[i:j]).to(dev), torch.as_tensor(targets[i:j], device=dev),
                                   steps=faith.steps, baseline=faith.baseline, mu=mu,
                                   blur_sigma_voxels=faith.blur_sigma_mm / grids["working"]["voxel_size"],
                                   coherency=faith.coherency, batch_size=2 * batch_size, seed=seed, start=i))
        log.info("faithfulness: %d/%d maps", j, n)
    return pd.concat(frames, ignore_index=True)


def actmax_maps(model_pt, store_npy, index_tsv, table_tsv, out: dict, *, params, grids: dict,
                group_class: str = "AD", device: str = "auto", threads: int = 1) -> None:
    """Rule entry: activation maximisation (seed 001, eq. 4) of every class of ``params.actmax.classes``,
    from ``n_starts`` uniform-noise images or from the first ``n_starts`` test sessions of the other
    class; one map |x_T - x_0| per start (min-max), the group map = the mean over ``group_class``'s.
    ``params``: :class:`robustmaps.settings.Saliency` (or its mapping) with its ``actmax`` section."""
    settings = Saliency.of(params)
    job = open_model_job(model_pt, store_npy, index_tsv, table_tsv, device=device, threads=threads,
                         seed=settings.seed)
    model, meta, store, table = job.model, job.meta, job.store, job.table
    dev = job.device
    am, bs = settings.section("actmax"), settings.batch_size
    gen = torch.Generator().manual_seed(int(settings.seed))
    volumes, rows = [], []
    for name in am.classes:
        c = class_index(meta, name, model_pt)
        if am.start == "noise":
            x0 = torch.rand((am.n_starts, 1, *store.shape[1:]), generator=gen)
            starts = [f"noise-{k}" for k in range(am.n_starts)]
        else:
            other = table[table.label.to_numpy() != c].head(am.n_starts)
            if other.empty:
                raise InputError(f"{table_tsv}: no session of a class other than {name} to start from")
            x0 = images(store, other.row.to_numpy(), "cpu", channels_last=True)
            starts = [f"{p}/{s}" for p, s in zip(other.participant_id, other.session_id)]
        for i in range(0, len(x0), bs):
            xb = x0[i:i + bs].to(dev, memory_format=torch.channels_last_3d)
            t = torch.full((len(xb),), c, device=dev)
            with torch.no_grad():
                before = target_logit(model(xb), t)
            start = time.perf_counter()
            xt, after = activation_maximisation(model, xb, t, iterations=am.iterations, e1=am.e1, e2=am.e2)
            ms = 1000 * (time.perf_counter() - start) / len(xb)
            volumes.append(minmax((xt - xb).abs()[:, 0]).cpu().numpy())
            rows += [{"class": name, "start": s, "logit_before": float(b), "logit_after": float(a), "runtime_ms": ms}
                     for s, b, a in zip(starts[i:i + len(xb)], before, after)]
            log.info("actmax %s: %d/%d starts, class logit %.3f -> %.3f (mean)", name, min(i + len(xb), len(x0)),
                     len(x0), float(before.mean()), float(after.mean()))
    volumes = np.concatenate(volumes)
    idx = pd.DataFrame(rows).reset_index(names="volume")
    chosen = idx["class"].to_numpy() == group_class
    group = volumes[chosen].mean(0) if chosen.any() else volumes.mean(0)
    write_volumes(np.moveaxis(volumes, 0, -1), grids, out["maps"], out.get("native"), dtype=np.int16, fill=0.0)
    write_volumes(group, grids, out["group"], out.get("group_native"), fill=0.0)
    write_tsv(idx, out["index"])


def sobol_entry(model_pt, store_npy, index_tsv, table_tsv, atlas_nii, labels_tsv, out: dict, *, params,
                device: str = "auto", threads: int = 1) -> None:
    """Rule entry: Sobol indices of P(``target``) to one GM factor per atlas ROI, on the first
    ``n_images`` test sessions of each class of ``params.images`` (:class:`robustmaps.settings.Sobol`
    or its mapping). ``out``: indices (one row per (images, ROI) at N), convergence (the same over
    N), second_order (S2 pairs)."""
    settings = Sobol.of(params)
    job = open_model_job(model_pt, store_npy, index_tsv, table_tsv, device=device, threads=threads,
                         seed=settings.seed)
    model, meta, store, table = job.model, job.meta, job.store, job.table
    atlas, _ = load_nifti(atlas_nii)
    if tuple(atlas.shape) != tuple(store.shape[1:]):
        raise InputError(f"{atlas_nii}: atlas {atlas.shape} is not on the images' grid {tuple(store.shape[1:])}")
    labels = load_labels(labels_tsv)
    present = set(np.unique(atlas.astype(np.int64)))
    labels = labels[labels["index"].isin(present)]
    positions = roi_lookup(atlas, labels["index"].tolist())
    dev = job.device
    target = class_index(meta, settings.target, model_pt)
    frames = {"indices": [], "convergence": [], "second_order": []}
    for name in settings.images:
        c = class_index(meta, name, model_pt)
        chosen = table[table.label.to_numpy() == c].head(settings.n_images)
        if chosen.empty:
            raise InputError(f"{table_tsv}: no {name} session for the Sobol analysis")
        x = images(store, chosen.row.to_numpy(), dev, channels_last=True)
        res = sobol_analysis(model, x, positions, labels["name"].tolist(), target=target, **settings.analysis())
        for key, frame in zip(frames, res):
            frames[key].append(frame.assign(images=name, n_images=len(chosen)))
        top = res[0].nlargest(5, "ST")
        log.info("sobol on %d %s images: top ST %s", len(chosen), name,
                 ", ".join(f"{r}={v:.3f}" for r, v in zip(top.roi, top.ST)))
    for key, path in (("indices", out["indices"]), ("convergence", out["convergence"]),
                      ("second_order", out["second_order"])):
        write_tsv(pd.concat(frames[key], ignore_index=True), path)


def summarise_saliency(entries: list[dict], group_maps: dict, out: dict, *, views: list = (), background=None,
                       comparison: dict | None = None) -> None:
    """Rule entry: every map's faithfulness in one tidy table (ids: method, fold, seed; ``entries``:
    one record per (method, model) with its ``faithfulness`` table), the
    per-method table (mean, SD over models), and figures of the group maps and of the AUCs.
    ``group_maps``: method -> the group map of every model (NIfTI paths, in the order of
    ``views``' models); ``views``: [(ids: method, fold, seed; png)], one brain view per group map
    over the cohort's mean GM map ``background``. ``comparison``: the paired test against Random-CAM
    (see :func:`faithfulness_table`; None: ``COMPARISON``)."""
    frames = [read_tsv(e["faithfulness"], ["deletion_auc", "insertion_auc"], what="faithfulness table",
                       dtype={"participant_id": str, "session_id": str}).assign(method=e["method"], fold=e["fold"],
                                                                               seed=e["seed"])
              for e in entries]
    per_map = pd.concat(frames, ignore_index=True)
    ids = ["method", "fold", "seed"]
    per_map = per_map[ids + [c for c in per_map.columns if c not in ids]]
    table = faithfulness_table(per_map, comparison)
    write_tsv(per_map, out["per_map"])
    write_tsv(table, out["table"])
    faithfulness_figure(per_map, out["figure"])
    means = {m: np.mean([load_nifti(p)[0] for p in paths], 0) for m, paths in group_maps.items()}
    saliency_maps_figure(means, out["maps_figure"])
    if views:
        bg = load_nifti(background)[0]
        models = list(dict.fromkeys((ids["fold"], ids["seed"]) for ids, _ in views))
        for ids, png in views:
            nii = group_maps[ids["method"]][models.index((ids["fold"], ids["seed"]))]
            title = f"{ids['method']} group map, fold {ids['fold']} seed {ids['seed']}"
            brain_views(load_nifti(nii)[0], bg, png, title, "saliency")
    for r in table.itertuples():
        log.info("%-10s deletion %.3f  insertion %.3f  drop %.3f  increase %.3f  %8.0f ms/map  vs Random-CAM "
                 "(%s pairs): deletion %+.3f [%+.3f, %+.3f] p %.3g, insertion %+.3f [%+.3f, %+.3f] p %.3g; beats: %s",
                 r.method, r.deletion_auc, r.insertion_auc, r.average_drop, r.average_increase, r.runtime_ms,
                 r.n_pairs, r.deletion_diff, r.deletion_diff_lo, r.deletion_diff_hi, r.deletion_p, r.insertion_diff,
                 r.insertion_diff_lo, r.insertion_diff_hi, r.insertion_p, r.beats_random)


def summarise_sobol(entries: list[dict], out: dict) -> None:
    """Rule entry: the ST and S1 of every model in one tidy table and the convergence figure.
    ``entries``: one record per model: fold, seed and its ``indices`` and ``convergence`` tables."""

    def read(key):
        return pd.concat([read_tsv(e[key], ["n", "roi", "ST", "S1"], what="Sobol table").assign(fold=e["fold"],
                                                                                               seed=e["seed"])
                          for e in entries], ignore_index=True)

    indices, conv = read("indices"), read("convergence")
    write_tsv(indices, out["indices"])
    write_tsv(conv, out["convergence"])
    sobol_convergence_figure(conv, out["figure"])
