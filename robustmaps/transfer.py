"""prob_CNN (study 2.4): how well a mask optimised in one context transfers to another: the mean
probability of the true class that a model gives its correctly classified images once they are
masked with a mask of another fold, seed, cohort or session (robustmaps.masks.masked_scores, with
the model's own mu of equation (1)). One row per (mask A, model and images B) pair; the summaries
and matrices are robustmaps.similarity.prob_cnn_summary / prob_cnn_matrices."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .masks import MaskSettings, masked_scores
from .trained import correct_rows

PROB_COLUMNS = ["family", "fold_a", "seed_a", "fold_b", "seed_b", "participant_a", "session_a", "participant_b",
                "session_b", "probability", "n_images"]


@dataclass
class Scorer:
    """A model B with what it scores: the store rows of its correctly classified ``label`` images
    (its validation set's), and its mu."""

    model: torch.nn.Module
    rows: np.ndarray
    label: int
    mu: torch.Tensor | float

    def scores(self, store, mask: torch.Tensor, rows=None) -> np.ndarray:
        return masked_scores(self.model, store, self.rows if rows is None else rows, mask,
                             MaskSettings(target=self.label), self.mu)


def torch_mask(volume: np.ndarray, device) -> torch.Tensor:
    """A mask volume (X, Y, Z) as the (1, 1, X, Y, Z) float32 tensor the models take."""
    return torch.from_numpy(np.asarray(volume, np.float32))[None, None].to(device)


def _row(family: str, a: tuple, b: tuple, p: np.ndarray) -> dict:
    return {"family": family, "fold_a": a[0], "seed_a": a[1], "fold_b": b[0], "seed_b": b[1],
            "probability": float(np.mean(p)) if len(p) else np.nan, "n_images": len(p)}


def between_models(scorers: dict, masks: dict, store) -> list[dict]:
    """Every model's group mask (A) on every model's images (B), both keyed by (fold, seed):
    family ``own`` (A = B), ``folds`` (other fold, same seed), ``seeds`` (same fold, other seed)
    or ``other``."""
    rows = []
    for a, mask in masks.items():
        for b, scorer in scorers.items():
            family = ("own" if a == b else "folds" if a[1] == b[1] and a[0] != b[0]
                      else "seeds" if a[0] == b[0] else "other")
            rows.append(_row(family, a, b, scorer.scores(store, mask)))
    return rows


def between_cohorts(key: tuple, scorer: Scorer, store, independent: torch.Tensor, main: torch.Tensor,
                    other_store=None, other_table: pd.DataFrame | None = None) -> list[dict]:
    """Between cohorts both ways, as the study compared them, for the model at ``key``:
    ``cohorts_other_on_main`` (its independent-cohort mask on its own main validation images) and,
    with the independent cohort's store and test table, ``cohorts_main_on_other`` (its main-cohort
    mask on its correctly classified images of that cohort; mu: the model fold's reference, a
    main-cohort mean, as for that cohort's own group masks)."""
    rows = [_row("cohorts_other_on_main", key, key, scorer.scores(store, independent))]
    if other_store is not None:
        correct = correct_rows(scorer.model, other_store, other_table, scorer.label)
        rows.append(_row("cohorts_main_on_other", key, key, scorer.scores(other_store, main, correct)))
    return rows


def between_sessions(key: tuple, scorer: Scorer, store, masks: np.ndarray, sessions: pd.DataFrame,
                     image_rows: np.ndarray, baseline: list[bool]) -> list[dict]:
    """One model's session masks (X, Y, Z, N; ``sessions``: their participant and session ids,
    ``image_rows``: their images' store rows, ``baseline``: which are baseline sessions): session
    A's mask on session B's image, for ``own_session`` (A = B), ``intra_subject`` (one subject's
    sessions) and ``inter_subject`` (baseline sessions of two subjects) pairs."""
    dev = next(scorer.model.parameters()).device
    pid, sid = sessions.participant_id.to_numpy(), sessions.session_id.to_numpy()
    rows = []
    for a in range(len(sessions)):
        p = scorer.scores(store, torch_mask(masks[..., a], dev), image_rows)
        for b in range(len(sessions)):
            if a == b:
                family = "own_session"
            elif pid[a] == pid[b]:
                family = "intra_subject"
            elif baseline[a] and baseline[b]:
                family = "inter_subject"
            else:
                continue
            rows.append({"family": family, "fold_a": key[0], "seed_a": key[1], "fold_b": key[0], "seed_b": key[1],
                         "participant_a": pid[a], "session_a": sid[a], "participant_b": pid[b],
                         "session_b": sid[b], "probability": float(p[b]), "n_images": 1})
    return rows
