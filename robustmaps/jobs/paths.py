"""Where the files that more than one rule names live (``results/...``): each path spelled once.

Arguments default to the wildcard, so that one call gives a rule's output pattern
(``store()`` -> ``results/cohort/{cohort}/store.npy``) and, with values, the concrete input of
another rule (``store("main")``). A file that only its own rule names (a figure, a summary that
only the report reads) is spelled in that rule. Light on purpose: the Snakefile imports it."""

from __future__ import annotations

#: the main cohort's name (data.cohorts.main): trained on, split, masked
MAIN = "main"

ATLAS = "results/atlas/atlas.nii.gz"
ATLAS_LABELS = "results/atlas/labels.tsv"
TRAINING_SUMMARY = "results/training/summary.tsv"
MASKS_SUMMARY = "results/masks/summary.tsv"
ROI_VECTORS = "results/analysis/roi_vectors.tsv"
SIMILARITY_PAIRS = "results/analysis/similarity/pairs.tsv"
PROVENANCE = "results/provenance.json"


def cohort_dir(cohort: str = "{cohort}") -> str:
    return f"results/cohort/{cohort}"


def synthetic_caps(cohort: str = "{cohort}") -> str:
    """A synthetic cohort's generated CAPS folder (Clinica's layout and file names)."""
    return f"{cohort_dir(cohort)}/caps"


def synthetic_sessions(cohort: str = "{cohort}") -> str:
    """A synthetic cohort's session table (what a real cohort's ``caps.tsv`` is)."""
    return f"{cohort_dir(cohort)}/sessions.tsv"


def caps_dir(config: dict, cohort: str) -> str:
    """A cohort's CAPS folder: the generated one of a synthetic cohort, the user's otherwise."""
    spec = config["data"]["cohorts"][cohort]
    return synthetic_caps(cohort) if spec["source"] == "synthetic" else spec["caps"]["caps_dir"]


def sessions_table(config: dict, cohort: str) -> str:
    """A cohort's session table: the generated one of a synthetic cohort, the user's otherwise."""
    spec = config["data"]["cohorts"][cohort]
    return synthetic_sessions(cohort) if spec["source"] == "synthetic" else spec["caps"]["tsv"]


def store(cohort: str = "{cohort}") -> str:
    """A cohort's QC-passed sessions on the working grid (one memory-mappable array)."""
    return f"{cohort_dir(cohort)}/store.npy"


def store_index(cohort: str = "{cohort}") -> str:
    """The store's rows: participant, session, diagnosis, label, demographics, baseline."""
    return f"{cohort_dir(cohort)}/index.tsv"


def cohort_mean(cohort: str = "{cohort}") -> str:
    """The mean GM map of a cohort's store (the background of the brain views)."""
    return f"{cohort_dir(cohort)}/mean.nii.gz"


def qc_table(cohort: str = "{cohort}") -> str:
    return f"{cohort_dir(cohort)}/qc.tsv"


def ground_truth(cohort: str = "{cohort}") -> str:
    """A synthetic cohort's planted ROIs."""
    return f"{cohort_dir(cohort)}/ground_truth.tsv"


def fold_table(name: str, fold="{fold}") -> str:
    """A fold's split table: ``train``, ``train_baseline`` or ``validation_baseline`` (ClinicaDL's names)."""
    return f"results/splits/split-{fold}/{name}.tsv"


def test_table(name: str = "test_baseline") -> str:
    """The main cohort's test set: ``test_baseline`` (baseline sessions) or ``test`` (every session)."""
    return f"results/splits/{name}.tsv"


def cohort_test_table(name: str = "test_baseline", cohort: str = "{cohort}") -> str:
    """An independent cohort's test set (every subject of it): ``test_baseline``, ``test``, ``summary``."""
    return f"results/splits/{cohort}/{name}.tsv"


def model_dir(fold="{fold}", seed="{seed}") -> str:
    """One trained model's folder: the seed is in every path that depends on it."""
    return f"results/models/fold-{fold}/seed-{seed}"


def model(fold="{fold}", seed="{seed}") -> str:
    """A trained model: best-epoch weights and what rebuilds the network."""
    return f"{model_dir(fold, seed)}/model.pt"


def reference(fold="{fold}") -> str:
    """mu of the masks' equation (1) with masks.reference: mean_cn (the fold's training CN mean)."""
    return f"results/masks/reference/fold-{fold}/mean_cn.nii.gz"
