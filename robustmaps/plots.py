"""Figures of the report (matplotlib without a display, seaborn styling). Every function writes
one file atomically and returns nothing; the tables behind each figure are outputs too."""

from __future__ import annotations

import contextlib

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .hpo import p_top_found
from .io import atomic_path  # noqa: E402
from .sweep import sweep_series


@contextlib.contextmanager
def _fixed_jitter(seed: int = 0):
    """seaborn's stripplot jitters with numpy's global generator: seed it (and restore it) so that
    a figure is the same bytes on every run."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _save(fig, path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format=str(path).rsplit(".", 1)[-1],
                    metadata={"Software": None})
    plt.close(fig)


def learning_curves(history: pd.DataFrame, path) -> None:
    """Loss (log scale) and balanced accuracy per epoch, training (dashed) and validation
    (solid), one row of panels per fold, one colour per seed; a dot marks each model's kept
    (best) epoch."""
    long = history.melt(id_vars=["fold", "seed", "epoch", "best"],
                        value_vars=["train_loss", "validation_loss", "train_balanced_accuracy",
                                    "validation_balanced_accuracy"])
    long["set"] = long.variable.str.split("_", n=1).str[0]
    long["quantity"] = long.variable.str.split("_", n=1).str[1].str.replace("_", " ")
    long["seed"] = long.seed.astype(str)
    sns.set_theme(style="whitegrid", context="paper")
    grid = sns.relplot(data=long, x="epoch", y="value", row="fold", col="quantity", hue="seed",
                       style="set", style_order=["validation", "train"], kind="line", height=2.2,
                       aspect=1.6, facet_kws={"sharey": "col", "margin_titles": True})
    best = long[(long.best.astype(str).str.lower() == "true") & (long.set == "validation")]
    for (fold, quantity), ax in grid.axes_dict.items():
        pts = best[(best.fold == fold) & (best.quantity == quantity)]
        ax.scatter(pts.epoch, pts.value, color="black", s=12, zorder=5)
        if quantity == "loss":
            ax.set_yscale("log")  # a single unstable epoch would flatten every other curve
        ax.set_ylabel("cross-entropy" if quantity == "loss" else "balanced accuracy")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    grid.set_titles(row_template="fold {row_name}", col_template="{col_name}")
    _save(grid.figure, path)


def group_masks_figure(masks: list, path, threshold: float = 0.95) -> None:
    """Glass-brain views of 1 - m (the perturbed amount) of every group mask (MNI space; the
    working grid, where the masks were optimised), one row per mask; ``masks`` = [(ids, NIfTI)]."""
    import nibabel as nib
    from nilearn import plotting

    n = max(1, len(masks))
    fig, axes = plt.subplots(n, 1, figsize=(7.5, 2.4 * n), squeeze=False)
    for ax, (ids, nii) in zip(axes[:, 0], masks):
        img = nib.load(nii)
        amount = nib.Nifti1Image(1 - np.asarray(img.dataobj, np.float32), img.affine)
        plotting.plot_glass_brain(amount, axes=ax, display_mode="ortho", colorbar=True, vmin=0, vmax=1,
                                  cmap="hot", plot_abs=False,
                                  title=f"{ids['cohort']} {ids['target']} fold {ids['fold']} seed {ids['seed']}")
    _save(fig, path)


def sweep_figure(sweep: pd.DataFrame, path) -> None:
    """Coverage (fraction of voxels < threshold) and the masked probability along each one-parameter
    series of the sweep; one panel per varied parameter (log x for l1, l2 and lr)."""
    series = sweep_series(sweep) if len(sweep) else []
    params = list(dict.fromkeys(p for p, _, _ in series))
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(2, max(1, len(params)), figsize=(3.2 * max(1, len(params)), 5), squeeze=False)
    for j, param in enumerate(params):
        for p, fixed, rows in series:
            if p != param:
                continue
            label = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in fixed.items()
                              if k in ("b1", "b2", "l1", "l2") and k != param)
            axes[0, j].plot(rows[param], rows.coverage, marker="o", label=label)
            axes[1, j].plot(rows[param], rows.probability_after, marker="o")
        for i in range(2):
            if param in ("l1", "l2", "lr"):
                axes[i, j].set_xscale("log")
            axes[i, j].set_xlabel(param)
        axes[0, j].set_ylabel("coverage (fraction < threshold)")
        axes[1, j].set_ylabel("masked target probability")
        axes[0, j].legend(fontsize=6)
    if not params:
        axes[0, 0].text(0.5, 0.5, "no one-parameter series in masks.sweep.points", ha="center", va="center")
        axes[0, 0].set_axis_off()
        axes[1, 0].set_axis_off()
    fig.tight_layout()
    _save(fig, path)


def saliency_maps_figure(maps: dict, path) -> None:
    """One row per method: its group map averaged over models, three orthogonal slices through
    the map's peak (working grid). ``maps``: method -> (X, Y, Z) array."""
    n = max(1, len(maps))
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.0 * n), squeeze=False)
    for row, (method, volume) in zip(axes, maps.items()):
        peak = np.unravel_index(int(np.argmax(volume)), volume.shape)
        views = (volume[peak[0]].T, volume[:, peak[1]].T, volume[:, :, peak[2]].T)
        for ax, view, name in zip(row, views, ("sagittal", "coronal", "axial")):
            ax.imshow(view, origin="lower", cmap="hot", vmin=0, vmax=max(float(volume.max()), 1e-12))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{method} ({name})" if name == "sagittal" else name, fontsize=8)
    _save(fig, path)


def faithfulness_figure(per_map: pd.DataFrame, path) -> None:
    """Deletion and insertion AUC per method (one point per model mean), Random-CAM marked."""
    sns.set_theme(style="whitegrid", context="paper")
    per_model = per_map.groupby(["method", "fold", "seed"])[["deletion_auc", "insertion_auc"]].mean().reset_index()
    order = list(per_model.groupby("method").deletion_auc.mean().sort_values().index)
    fig, axes = plt.subplots(1, 2, figsize=(9, 0.35 * len(order) + 1.5))
    for ax, col, better in zip(axes, ("deletion_auc", "insertion_auc"), ("lower", "higher")):
        with _fixed_jitter():
            sns.stripplot(data=per_model, y="method", x=col, order=order, ax=ax, size=5)
        sns.pointplot(data=per_model, y="method", x=col, order=order, ax=ax, linestyles="none", color="black",
                      markers="|", errorbar=None)
        if "randomcam" in order:
            ax.axvline(per_model[per_model.method == "randomcam"][col].mean(), ls="--", color="grey", lw=1)
        ax.set_xlabel(f"{col.replace('_', ' ')} ({better} is better)")
        ax.set_ylabel("")
    fig.tight_layout()
    _save(fig, path)


def sobol_convergence_figure(convergence: pd.DataFrame, path, top: int = 6) -> None:
    """ST (with its confidence interval) of the ROIs with the largest ST at the largest N, against N."""
    sns.set_theme(style="whitegrid", context="paper")
    sets = list(dict.fromkeys(convergence["images"]))
    fig, axes = plt.subplots(1, max(1, len(sets)), figsize=(4.5 * max(1, len(sets)), 3.4), squeeze=False)
    for ax, images in zip(axes[0], sets):
        c = convergence[convergence["images"] == images]
        mean = c.groupby(["n", "roi"])[["ST", "ST_conf"]].mean().reset_index()
        last = mean[mean.n == mean.n.max()].nlargest(top, "ST").roi
        for roi in last:
            r = mean[mean.roi == roi]
            ax.errorbar(r.n, r.ST, yerr=r.ST_conf, marker="o", capsize=2, label=roi)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("N (base samples)")
        ax.set_ylabel("total-order index ST (mean over models)")
        ax.set_title(f"{images} images")
        ax.legend(fontsize=6)
    fig.tight_layout()
    _save(fig, path)


def similarity_families_figure(pairs: pd.DataFrame, summary: pd.DataFrame, path, published: dict | None = None):
    """ROI-cosine similarity of each family in the study's order: one point per pair, the mean
    with its CI from the summary (a bootstrap over the family's units, not its pairs), and the
    study's published value of the family as a red reference mark: ``published`` = family ->
    (low, high), a tick where low == high, a bar from low to high otherwise (artists' gid
    ``published <family>``). Returns the axes (for tests)."""
    sns.set_theme(style="whitegrid", context="paper")
    order = list(summary.family)
    published = published or {}
    fig, ax = plt.subplots(figsize=(7, 0.45 * max(1, len(order)) + 1.4))
    if order:
        with _fixed_jitter():
            sns.stripplot(data=pairs, y="family", x="cosine", order=order, ax=ax, size=3, alpha=0.5)
        y = np.arange(len(order))
        ax.errorbar(summary["mean"], y, xerr=[summary["mean"] - summary.ci_low, summary.ci_high - summary["mean"]],
                    fmt="D", color="black", capsize=3, label="mean, CI over units (this run)")
        labelled = False
        for k, family in enumerate(order):
            if family not in published:
                continue
            low, high = published[family]
            label = None if labelled else "Thibeau-Sutre et al. 2020 (ADNI)"
            if low == high:
                (art,) = ax.plot([low], [k], marker="|", markersize=16, markeredgewidth=2.5, color="red",
                                 linestyle="none", label=label, zorder=6)
            else:
                art = ax.hlines(k, low, high, colors="red", linewidth=4, alpha=0.45, label=label, zorder=4)
            art.set_gid(f"published {family}")
            text = f"{low:.2f}" if low == high else (f"> {low:.2f}" if high >= 1 else f"{low:.2f}-{high:.2f}")
            ax.annotate(text, (high, k), xytext=(3, 5), textcoords="offset points", color="red", fontsize=6)
            labelled = True
        ax.set_yticks(y, [f"{f} ({n})" for f, n in zip(order, summary.n_units)])
        # below the axes: inside, it would hide the points of a family
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize="small", frameon=False)
    ax.set_xlim(-0.02, 1.06)
    ax.set_xlabel("ROI cosine similarity")
    ax.set_ylabel("family (units)")
    fig.tight_layout()
    _save(fig, path)
    return ax


def roi_frequency_figure(freq: pd.DataFrame, n_masks: int, path, top: int = 20, k: int = 5) -> None:
    """How many group masks (folds x seeds) have each ROI among their top ``k`` (the study's 3.2.1)."""
    sns.set_theme(style="whitegrid", context="paper")
    f = freq.head(top)
    fig, ax = plt.subplots(figsize=(6, 0.25 * max(1, len(f)) + 1.2))
    if len(f):
        sns.barplot(data=f, y="roi", x="n_masks", ax=ax, color="C0")
    ax.set_xlabel(f"group masks with the ROI in their top {k} (of {n_masks})")
    ax.set_ylabel("")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    fig.tight_layout()
    _save(fig, path)


def recovery_figure(rec: pd.DataFrame, path) -> None:
    """Planted-ROI recovery (ROC AUC of the ROI ranking) per kind of mask and saliency method."""
    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(7, 4))
    if len(rec) and rec.roc_auc.notna().any():
        r = rec.assign(what=np.where(rec.method == "mask", "mask (" + rec.kind.astype(str) + ")",
                                     rec.method.astype(str)))
        order = list(r.groupby("what").roc_auc.mean().sort_values(ascending=False).index)
        sns.boxplot(data=r, y="what", x="roc_auc", order=order, ax=ax, color="C0", fliersize=2)
        ax.axvline(0.5, ls="--", color="grey", lw=1)
        ax.set_xlim(0, 1)
    else:
        ax.text(0.5, 0.5, "no ground truth (real cohort)", ha="center", va="center")
        ax.set_axis_off()
    ax.set_xlabel("planted-ROI ROC AUC of the ROI ranking (0.5 = chance)")
    ax.set_ylabel("")
    fig.tight_layout()
    _save(fig, path)


def similarity_matrices_figure(matrices: dict, path, label: str = "ROI cosine similarity", columns: int = 3) -> None:
    """Heatmaps of similarity matrices (values in [0, 1]); ``matrices``: title -> labelled
    DataFrame (square or not; NaN cells are pairs not computed), ``columns`` panels per row."""
    sns.set_theme(style="white", context="paper")
    n = max(1, len(matrices))
    cols = min(columns, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.4 * cols, 4.8 * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax, (title, m) in zip(flat, matrices.items()):
        small = max(m.shape) <= 12
        sns.heatmap(m, ax=ax, vmin=0, vmax=1, cmap="viridis", square=m.shape[0] == m.shape[1], annot=small,
                    fmt=".2f", annot_kws={"size": 6}, cbar_kws={"shrink": 0.7, "label": label},
                    xticklabels=True if max(m.shape) <= 40 else "auto", yticklabels=True if max(m.shape) <= 40
                    else "auto")
        ax.tick_params(labelsize=6 if max(m.shape) > 12 else 8)
        ax.tick_params(axis="y", labelrotation=0)  # row labels read across, never stacked on each other
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("")
        ax.set_ylabel("")
    for ax in flat[len(matrices):]:
        ax.set_axis_off()
    if not matrices:
        flat[0].text(0.5, 0.5, "no matrix", ha="center", va="center")
    fig.tight_layout()
    _save(fig, path)


def group_mask_views(masks: dict, path, cut_coords=(-26, -20, -15)) -> list:
    """Coronal and axial views of 1 - m of the main cohort's group masks, one panel per model:
    rows = folds, columns = seeds (the study's Figures 5-6), on the MNI152 template shipped
    with nilearn, cut at y and z of ``cut_coords`` (x, y, z mm), each with its colour bar and L/R
    and cut-position labels. ``masks``: (fold, seed) -> NIfTI path (working grid). Returns the
    nilearn displays (for tests)."""
    import nibabel as nib
    from nilearn import datasets, plotting

    folds = sorted({f for f, _ in masks})
    seeds = sorted({s for _, s in masks})
    bg = datasets.load_mni152_template(resolution=2)
    fig, axes = plt.subplots(max(1, len(folds)), max(1, len(seeds)),
                             figsize=(4.6 * max(1, len(seeds)), 2.2 * max(1, len(folds))), squeeze=False)
    displays = []
    for i, f in enumerate(folds):
        for j, s in enumerate(seeds):
            ax = axes[i, j]
            ax.set_axis_off()
            if (f, s) not in masks:
                continue
            img = nib.load(masks[(f, s)])
            amount = nib.Nifti1Image(1 - np.asarray(img.dataobj, np.float32), img.affine)
            d = plotting.plot_stat_map(amount, bg_img=bg, axes=ax, display_mode="yz", cut_coords=tuple(cut_coords[1:]),
                                       vmin=0, vmax=1, symmetric_cbar=False, threshold=0.05, colorbar=True,
                                       annotate=False, draw_cross=False, black_bg=False, cmap="YlOrRd")
            d.annotate(size=7)
            ax.set_title(f"fold {f} seed {s}", fontsize=8, loc="left")
            d._colorbar_ax.set_ylabel("1 - m", fontsize=6)
            d._colorbar_ax.tick_params(labelsize=6)
            displays.append(d)
    _save(fig, path)
    return displays


BRAIN_ROW_KEYS = ("title", "voxel", "roi", "label")


def _brain_panel(ax, img, bg, cut_coords, title: str, label: str, *, vmax: float, threshold: float, cmap: str,
                 outline=None):
    """One nilearn stat-map display (sagittal, coronal, axial cuts at ``cut_coords`` = (x, y, z) mm,
    MNI) of ``img`` over ``bg`` in ``ax``: colour bar from 0 to ``vmax`` with its label, L/R and
    cut-position annotations, the 0.5 contour of ``outline`` (a 0/1 image) when given."""
    from nilearn import plotting

    display = plotting.plot_stat_map(img, bg_img=bg, axes=ax, display_mode="ortho", cut_coords=tuple(cut_coords),
                                     colorbar=True, annotate=False, draw_cross=False, black_bg=False, cmap=cmap,
                                     vmin=0, vmax=vmax, symmetric_cbar=False, threshold=threshold,
                                     resampling_interpolation="nearest")
    display.annotate(size=7)
    ax.set_title(title, fontsize=8, loc="left")
    if outline is not None:
        display.add_contours(outline, levels=[0.5], colors="blue", linewidths=0.8)
    cbar_ax = getattr(display, "_colorbar_ax", None)
    if cbar_ax is not None:
        cbar_ax.set_ylabel(label, fontsize=6)
        cbar_ax.tick_params(labelsize=6)
    return display


def brain_maps_figure(rows: list[dict], path, *, cut_coords, outline=None, columns=("voxel", "roi")) -> list:
    """Brain views over the MNI152 template shipped with nilearn (nothing downloaded): one row per
    map (a model's mask, a method's group map, a model's Sobol ST), one column per kind of image:
    ``voxel`` (the map itself) and ``roi`` (each atlas region painted with the map's ROI value).
    Every panel has the same sagittal / coronal / axial cuts ``cut_coords`` (x, y, z in mm), its
    colour bar, L/R and cut-position labels and, when ``outline`` (a 0/1 NIfTI on any grid) is
    given, the outline of those voxels (the planted ROIs of a synthetic cohort) in blue.

    ``rows``: dicts with ``title``, ``label`` (the colour bar's quantity; ``voxel_label`` /
    ``roi_label`` per column), ``voxel`` / ``roi``
    (NIfTI images or None: that panel is left blank) and optionally ``vmax`` / ``threshold`` per
    column (``voxel_vmax``, ``roi_threshold``, ...; defaults: the image's maximum, 1e-6 of it).
    Returns the nilearn displays, one per drawn panel, as (row, column, display), for tests."""
    from nilearn import datasets

    bg = datasets.load_mni152_template(resolution=2)
    n = max(1, len(rows))
    fig, axes = plt.subplots(n, len(columns), figsize=(5.6 * len(columns), 2.3 * n), squeeze=False)
    displays = []
    for i, row in enumerate(rows):
        for j, col in enumerate(columns):
            ax = axes[i, j]
            img = row.get(col)
            if img is None:
                ax.set_axis_off()
                continue
            data = np.asarray(img.dataobj, np.float32)
            top = float(np.nanmax(data)) if data.size else 0.0
            vmax = float(row.get(f"{col}_vmax") or (top if top > 0 else 1.0))  # an empty map: a 0-1 bar
            threshold = float(row.get(f"{col}_threshold") or 1e-6 * vmax)
            title = f"{row['title']} ({'voxels' if col == 'voxel' else 'ROIs'})"
            ax.set_axis_off()
            label = row.get(f"{col}_label", row.get("label", ""))
            d = _brain_panel(ax, img, bg, cut_coords, title, label, vmax=vmax, threshold=threshold,
                             cmap="YlOrRd", outline=outline)
            displays.append((i, col, d))
    if not rows:
        axes[0, 0].text(0.5, 0.5, "nothing to show", ha="center", va="center")
        for ax in axes.ravel():
            ax.set_axis_off()
    _save(fig, path)
    return displays


def sweep_masks_figure(series: list[tuple[str, list]], path, *, cut_coords, empty: str = "no series") -> list:
    """The study's Figures 3-4: one row per one-parameter series of the sweep, its points' group
    masks side by side (the perturbation 1 - m, 0 to 1, shown above 0.05) on the MNI152 template,
    a coronal cut at y of ``cut_coords`` (x, y, z mm) with colour bar, L/R and position labels.
    ``series``: [(row title, [(panel title, NIfTI of 1 - m)])]. Returns the displays as (row,
    column, display), for tests."""
    from nilearn import datasets, plotting

    bg = datasets.load_mni152_template(resolution=2)
    n_rows = max(1, len(series))
    n_cols = max([1] + [len(points) for _, points in series])
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.9 * n_cols, 2.6 * n_rows), squeeze=False)
    displays = []
    for ax in axes.ravel():
        ax.set_axis_off()
    for i, (row_title, points) in enumerate(series):
        for j, (title, img) in enumerate(points):
            d = plotting.plot_stat_map(img, bg_img=bg, axes=axes[i, j], display_mode="y", cut_coords=[cut_coords[1]],
                                       vmin=0, vmax=1, symmetric_cbar=False, threshold=0.05, colorbar=True,
                                       annotate=False, draw_cross=False, black_bg=False, cmap="YlOrRd",
                                       resampling_interpolation="nearest")
            d.annotate(size=7)
            axes[i, j].set_title(f"{row_title}\n{title}" if j == 0 else f"\n{title}", fontsize=7, loc="left")
            d._colorbar_ax.set_ylabel("1 - m", fontsize=6)
            d._colorbar_ax.tick_params(labelsize=6)
            displays.append((i, j, d))
    if not series:
        axes[0, 0].text(0.5, 0.5, empty, ha="center", va="center")
    _save(fig, path)
    return displays


def brain_views(volume: np.ndarray, background: np.ndarray, path, title: str, label: str) -> None:
    """Glass-brain style views of ``volume`` (working grid, values >= 0): its maximum along each
    axis (sagittal, coronal, axial projections) over the mean projection of ``background`` (the
    cohort's mean GM map, same grid). Only voxels inside the brain (background above 10% of its
    maximum) are shown: the top 5% of them, and none under 5% of the peak. Matplotlib only: a report
    holds one per model and method, and nilearn's resampling to a template costs ~1 s per view."""
    volume = np.asarray(volume, np.float32)
    background = np.asarray(background, np.float32)
    brain = background > 0.1 * float(background.max())
    inside = np.where(brain, volume, 0)
    top = max(float(inside.max()), 1e-12)
    # a dense map would fill every projection: show its top 5% of brain voxels (a sparse mask
    # keeps every voxel above 5% of its peak)
    floor = max(0.05 * top, float(np.percentile(volume[brain], 95)) if brain.any() else 0.0)
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.4))
    for ax, axis, name in zip(axes, (0, 1, 2), ("sagittal", "coronal", "axial")):
        proj = np.ma.masked_less(np.where(inside >= floor, inside, 0).max(axis=axis).T, max(floor, 1e-12))
        ax.imshow(background.mean(axis=axis).T, origin="lower", cmap="gray")
        im = ax.imshow(proj, origin="lower", cmap="hot", vmin=0, vmax=top, alpha=0.85)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(name, fontsize=8)
    fig.colorbar(im, ax=axes, fraction=0.02, label=label)
    fig.suptitle(title, fontsize=9)
    _save(fig, path)


def _placeholder(path, text: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    ax.set_axis_off()
    _save(fig, path)


def hpo_figures(study, table: pd.DataFrame, history_path, importance_path, random_path) -> None:
    """The search's figures: optuna's optimisation history and fANOVA parameter importances
    (matplotlib backend, seeded), and seed 003's eq. 2.20: the probability that n random draws
    include a top-1/5/10% model, with this search's number of completed trials marked."""
    import warnings

    import optuna
    from optuna.visualization import matplotlib as ovm

    complete = table[table.state == "COMPLETE"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if len(complete):
            ax = ovm.plot_optimization_history(study, target_name="validation balanced accuracy")
            _save(ax.figure, history_path)
        else:
            _placeholder(history_path, "no completed trial")
        varied = [c for c in complete.columns if c.startswith("params_") and complete[c].nunique() > 1]
        ax = None
        if len(complete) >= 2 and varied and complete.value.nunique() > 1:
            try:
                ax = ovm.plot_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
                                                target_name="validation balanced accuracy")
            except RuntimeError:  # fANOVA finds no variance to split
                ax = None
        if ax is not None:
            _save(ax.figure, importance_path)
        else:
            _placeholder(importance_path, "parameter importances need completed trials whose parameters and "
                                          "values differ")
    sns.set_theme(style="whitegrid", context="paper")
    n = np.unique(np.geomspace(1, 1000, 200).astype(int))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for top in (0.01, 0.05, 0.10):
        ax.plot(n, [p_top_found(k, top) for k in n], label=f"top {top:.0%}")
    done = len(complete)
    if done:
        ax.axvline(done, color="black", linestyle="--", label=f"this search: {done} completed trials")
    ax.set_xscale("log")
    ax.set_xlabel("random draws n")
    ax.set_ylabel("P(a top model among them)")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    _save(fig, random_path)
