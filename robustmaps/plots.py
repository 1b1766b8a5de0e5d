"""Figures of the report (matplotlib without a display, seaborn styling). Every function writes
one file atomically and returns nothing; the tables behind each figure are outputs too."""

from __future__ import annotations

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
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
