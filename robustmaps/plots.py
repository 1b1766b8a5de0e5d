"""Figures of the report (matplotlib without a display, seaborn styling). Every function writes
one file atomically and returns nothing; the tables behind each figure are outputs too."""

from __future__ import annotations

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .io import atomic_path  # noqa: E402


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
    """Coverage (fraction of voxels < threshold) and the masked score along each one-parameter
    series of the sweep; one panel per varied parameter (log x for l1, l2 and lr)."""
    from .masks import sweep_series

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
            axes[1, j].plot(rows[param], rows.score_after, marker="o")
        for i in range(2):
            if param in ("l1", "l2", "lr"):
                axes[i, j].set_xscale("log")
            axes[i, j].set_xlabel(param)
        axes[0, j].set_ylabel("coverage (fraction < threshold)")
        axes[1, j].set_ylabel("masked target score")
        axes[0, j].legend(fontsize=6)
    if not params:
        axes[0, 0].text(0.5, 0.5, "no one-parameter series in masks.sweep.points", ha="center", va="center")
        axes[0, 0].set_axis_off()
        axes[1, 0].set_axis_off()
    fig.tight_layout()
    _save(fig, path)
