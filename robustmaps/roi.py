"""Region-of-interest summaries on the working grid, vectorised over the label image."""

from __future__ import annotations

import numpy as np


def roi_means(images: np.ndarray, atlas: np.ndarray, n_labels: int | None = None) -> np.ndarray:
    """Mean of every image over every atlas label -> (n_images, n_labels); column = label id.

    One ``bincount`` pass per image over the label image (no boolean mask per ROI).
    """
    lab = np.asarray(atlas, dtype=np.int64).ravel()
    n_labels = int(lab.max()) + 1 if n_labels is None else n_labels
    counts = np.bincount(lab, minlength=n_labels).astype(np.float64)
    sums = np.stack([np.bincount(lab, weights=np.asarray(img, dtype=np.float64).ravel(), minlength=n_labels)
                     for img in images])
    return sums / np.maximum(counts, 1)
