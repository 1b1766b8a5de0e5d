"""Evaluation splits (study 2.2.1): a matched test set, then ONE stratified k-fold split.

- Test set: ``test_per_class`` subjects per class drawn with ``numpy.random.default_rng(seed)``,
  redrawn until their baseline age (Welch t-test) and sex (chi-square) do not differ from the
  rest of their class (p above the thresholds), as ClinicaDL's ``split`` does.
- The rest: scikit-learn's ``StratifiedKFold(n_folds, shuffle=True, random_state=seed)`` on the
  subjects sorted by id, stratified by label. Validation and test keep each subject's baseline
  session; training keeps all sessions.
- Existing split folders can be imported instead (``split.import_dir``): this project's layout
  or ClinicaDL's (``<dir>/<n>_fold/split-<k>/``), see :func:`split_files`.
Files are named as ClinicaDL names them, folds numbered from 0.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.model_selection import StratifiedKFold

from .io import InputError, read_tsv

log = logging.getLogger(__name__)

SPLIT_COLUMNS = ["participant_id", "session_id", "diagnosis", "label", "age", "sex", "cohort", "row"]


def subjects_table(index: pd.DataFrame) -> pd.DataFrame:
    """One row per subject (its baseline session), sorted by id."""
    base = index[index["baseline"].astype(bool)]
    return base.sort_values("participant_id").reset_index(drop=True)[
        ["participant_id", "diagnosis", "label", "age", "sex"]]


def p_age(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2 or (a.std() == 0 and b.std() == 0):
        return float("nan")
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def p_counts(a, b, levels) -> float:
    """Chi-square test of a categorical variable between two groups (1.0 when degenerate)."""
    table = np.array([[np.sum(np.asarray(a) == lv) for lv in levels],
                      [np.sum(np.asarray(b) == lv) for lv in levels]])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 1.0
    return float(stats.chi2_contingency(table).pvalue)


def select_test(subjects: pd.DataFrame, n_per_class: int, seed: int, p_age_min: float,
                p_sex_min: float, max_tries: int, n_folds: int) -> list[str]:
    """Age- and sex-matched test subjects, ``n_per_class`` of each class (sorted ids)."""
    rng = np.random.default_rng(seed)
    chosen: list[str] = []
    for label in sorted(subjects["label"].unique()):
        cls = subjects[subjects["label"] == label].reset_index(drop=True)
        dx = cls["diagnosis"].iloc[0]
        if n_per_class == 0:
            continue
        if len(cls) - n_per_class < n_folds:
            raise InputError(f"split: class {dx} has {len(cls)} subjects after QC; {n_per_class} for the "
                             f"test set (split.test_per_class) leave fewer than split.n_folds={n_folds}")
        best = (-1.0, -1.0)
        for _ in range(max_tries):
            pick = np.zeros(len(cls), dtype=bool)
            pick[rng.choice(len(cls), n_per_class, replace=False)] = True
            pa = p_age(cls.age[pick], cls.age[~pick])
            ps = p_counts(cls.sex[pick], cls.sex[~pick], ("M", "F"))
            pa = 1.0 if np.isnan(pa) else pa
            if pa >= p_age_min and ps >= p_sex_min:
                chosen += list(cls.participant_id[pick])
                log.info("test set: %d %s subjects, p_age=%.3f p_sex=%.3f", n_per_class, dx, pa, ps)
                break
            best = max(best, (min(pa, ps), pa))
        else:
            raise InputError(f"split: no age- and sex-matched test set of {n_per_class} {dx} subjects found in "
                             f"{max_tries} draws (best min p = {best[0]:.3f}); lower split.p_age_threshold / "
                             f"split.p_sex_threshold or split.test_per_class, or raise split.max_tries")
    return sorted(chosen)


def kfold(subjects: pd.DataFrame, n_folds: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """Stratified k-fold at subject level -> [(train ids, validation ids)] per fold."""
    subjects = subjects.sort_values("participant_id").reset_index(drop=True)
    counts = subjects.groupby("diagnosis").size()
    if (counts < n_folds).any() or len(counts) < 2:
        raise InputError(f"split: too few subjects per class for split.n_folds={n_folds} "
                         f"(after QC and test set: {counts.to_dict()})")
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    ids = subjects["participant_id"].to_numpy()
    return [(sorted(ids[tr]), sorted(ids[va])) for tr, va in skf.split(ids, subjects["label"])]


def sessions_of(index: pd.DataFrame, ids, baseline_only: bool, cohort: str) -> pd.DataFrame:
    sel = index[index["participant_id"].isin(set(ids))]
    if baseline_only:
        sel = sel[sel["baseline"].astype(bool)]
    return sel.assign(cohort=cohort)[SPLIT_COLUMNS].reset_index(drop=True)


def _fold_index(path: Path) -> int | None:
    """k of a ``split-<k>`` folder, None for any other name."""
    tail = path.name[len("split-"):]
    return int(tail) if path.name.startswith("split-") and tail.isdigit() else None


def split_files(import_dir: str | os.PathLike, n_folds: int, need_test: bool = False) -> dict:
    """The TSVs of an existing split folder (``split.import_dir``), found without reading them.

    Two layouts are accepted:

    - the project's own: ``<dir>/split-<k>/{train,validation_baseline}.tsv`` and
      ``<dir>/test_baseline.tsv``;
    - ClinicaDL's (``clinicadl tsvtools split`` then ``kfold``):
      ``<dir>/<n_folds>_fold/split-<k>/{train,validation_baseline}.tsv`` beside
      ``<dir>/test_baseline.tsv`` and ``<dir>/test.tsv``.

    For the own layout in a folder named ``<n_folds>_fold`` (ClinicaDL's fold folder given
    directly), the test set is also looked for in its parent folder.

    Returns ``{"test_baseline": Path | None, "test": Path | None,
    "folds": [{"train": Path, "validation_baseline": Path}, ...]}`` (``test`` is the
    ``test.tsv`` beside the test_baseline.tsv found, when it exists). Raises InputError when the
    folder holds both layouts or neither, folds other than 0..n_folds-1, a fold misses a file, or
    ``need_test`` is true and there is no test_baseline.tsv.
    """
    root = Path(import_dir)
    if not root.is_dir():
        raise InputError(f"{root}: split.import_dir is not a folder")
    own_dirs = [p for p in root.glob("split-*") if p.is_dir() and _fold_index(p) is not None]
    clinicadl = root / f"{n_folds}_fold"
    layouts = (f"{root / 'split-0' / 'train.tsv'} (split-0 ... split-{n_folds - 1}, project layout) "
               f"or {clinicadl / 'split-0' / 'train.tsv'} (split-0 ... split-{n_folds - 1}, ClinicaDL layout), "
               f"each fold with train.tsv and validation_baseline.tsv")
    if own_dirs and clinicadl.is_dir():
        raise InputError(f"{root}: holds both split folders {root / 'split-<k>'} and {clinicadl / 'split-<k>'}; "
                         f"keep one layout (looked for {layouts})")
    if not own_dirs and not clinicadl.is_dir():
        other = sorted(p.name for p in root.glob("*_fold") if p.is_dir())
        if other:
            raise InputError(f"{root}: holds {', '.join(other)} but split.n_folds is {n_folds} "
                             f"(looked for {clinicadl})")
        raise InputError(f"{root}: no split folders found: looked for {layouts}")
    base = clinicadl if clinicadl.is_dir() else root
    extra = sorted(p.name for p in base.glob("split-*")
                   if p.is_dir() and (_fold_index(p) is None or _fold_index(p) >= n_folds))
    if extra:
        raise InputError(f"{base}: holds {', '.join(extra)} but split.n_folds is {n_folds}")
    folds = []
    for k in range(n_folds):
        fold = {name: base / f"split-{k}" / f"{name}.tsv" for name in ("train", "validation_baseline")}
        for path in fold.values():
            if not path.is_file():
                raise InputError(f"{path}: split table not found (split.import_dir {root}, "
                                 f"split.n_folds {n_folds})")
        folds.append(fold)
    candidates = [root / "test_baseline.tsv"]
    if base is root and root.name == f"{n_folds}_fold":
        candidates.append(root.parent / "test_baseline.tsv")
    test_baseline = next((p for p in candidates if p.is_file()), None)
    if need_test and test_baseline is None:
        raise InputError(f"no test set found: looked for {' and '.join(map(str, candidates))} "
                         f"(split.test_per_class > 0 asks for one; set it to 0 to use no test set)")
    test = test_baseline.with_name("test.tsv") if test_baseline is not None else None
    return {"test_baseline": test_baseline,
            "test": test if test is not None and test.is_file() else None,
            "folds": folds}


def import_splits(index: pd.DataFrame, import_dir: str, n_folds: int,
                  need_test: bool = False) -> tuple[list[str], list]:
    """Subject sets of existing split TSVs (either layout of :func:`split_files`), restricted to
    the subjects that passed QC -> (test ids, [(train ids, validation ids)] per fold)."""
    files = split_files(import_dir, n_folds, need_test)
    known = set(index["participant_id"])
    dropped: set[str] = set()

    def ids(path: Path) -> list[str]:
        got = set(read_tsv(path, ["participant_id"], what="split table", dtype={"participant_id": str})["participant_id"])
        dropped.update(got - known)
        return sorted(got & known)

    test = ids(files["test_baseline"]) if files["test_baseline"] is not None else []
    folds = []
    for fold in files["folds"]:
        tr, va = ids(fold["train"]), ids(fold["validation_baseline"])
        both = set(tr) & set(va) | (set(tr) | set(va)) & set(test)
        if both:
            raise InputError(f"{fold['train'].parent}: subject(s) {sorted(both)[:5]} in two sets of one split")
        folds.append((tr, va))
    if dropped:
        log.warning("imported splits: %d subject(s) not in the QC-passed cohort were dropped", len(dropped))
    return test, folds


def summarise(index: pd.DataFrame, sets: list[tuple[str, str, list[str], list[str]]]) -> pd.DataFrame:
    """Counts, age and sex per (set, fold, diagnosis) and p-values against the complement.

    ``sets``: (set name, fold, subject ids, complement ids) with fold '' when not per fold.
    Rows with diagnosis 'all' carry the class-balance p-value (chi-square on diagnoses).
    """
    subjects = subjects_table(index).set_index("participant_id")
    n_sessions = index.groupby("participant_id").size()
    rows = []
    for name, fold, ids, other in sets:
        a, b = subjects.loc[ids], subjects.loc[other]
        for dx in sorted(subjects["diagnosis"].unique()) + ["all"]:
            sa = a if dx == "all" else a[a.diagnosis == dx]
            sb = b if dx == "all" else b[b.diagnosis == dx]
            rows.append({
                "set": name, "fold": fold, "diagnosis": dx, "n_subjects": len(sa),
                "n_sessions": int(n_sessions.reindex(sa.index).sum()) if name == "train" else len(sa),
                "age_mean": sa.age.mean(), "age_sd": sa.age.std(), "age_min": sa.age.min(),
                "age_max": sa.age.max(), "n_male": int((sa.sex == "M").sum()),
                "n_female": int((sa.sex == "F").sum()),
                "p_age": p_age(sa.age, sb.age) if len(other) else np.nan,
                "p_sex": p_counts(sa.sex, sb.sex, ("M", "F")) if len(other) else np.nan,
                "p_diagnosis": (p_counts(a.diagnosis, b.diagnosis, sorted(subjects.diagnosis.unique()))
                                if dx == "all" and len(other) else np.nan),
            })
    return pd.DataFrame(rows)


def verify(split_dir: str | Path, n_folds: int, index: pd.DataFrame | None = None) -> list[str]:
    """Problems with a split folder (empty list = sound): every set disjoint within a fold, every
    non-test subject in exactly one validation fold, validation/test baseline-only, and, given the
    cohort index, training keeping every session of its subjects."""
    root = Path(split_dir)
    problems = []
    read = lambda p: read_tsv(p, SPLIT_COLUMNS, what="split table", dtype={"participant_id": str, "session_id": str})
    test = read(root / "test_baseline.tsv")
    test_all = read(root / "test.tsv")
    test_ids = set(test.participant_id)
    if set(test_all.participant_id) != test_ids:
        problems.append("test.tsv and test_baseline.tsv hold different subjects")
    seen: dict[str, int] = {}
    for k in range(n_folds):
        tr, va = read(root / f"split-{k}" / "train.tsv"), read(root / f"split-{k}" / "validation_baseline.tsv")
        a, b = set(tr.participant_id), set(va.participant_id)
        if a & b or (a | b) & test_ids:
            problems.append(f"split-{k}: a subject is in two sets")
        for frame, name in ((va, "validation_baseline"), (test, "test_baseline")):
            if frame.participant_id.duplicated().any():
                problems.append(f"split-{k}: {name} has more than one session for a subject")
        for s in b:
            seen[s] = seen.get(s, 0) + 1
        if index is not None:
            expected = index[index.participant_id.isin(a)]
            if len(expected) != len(tr):
                problems.append(f"split-{k}: train.tsv holds {len(tr)} sessions, its subjects have {len(expected)}")
    if any(v != 1 for v in seen.values()):
        problems.append("a subject is in more than one validation fold")
    if index is not None:
        rest = set(index.participant_id) - test_ids
        if set(seen) != rest:
            problems.append(f"{len(rest - set(seen))} subject(s) are in no validation fold")
    return problems


# ------------------------------------------------------------------------------ rule entry point
SPLIT_TABLE_COLUMNS = ["participant_id", "session_id", "label", "row"]


def read_split_rows(table_tsv, index, allow_empty: bool = False):
    """A split table's sessions with their store rows, checked against the store's index (a
    table written for another store stops here, naming the file)."""
    table = read_tsv(table_tsv, SPLIT_TABLE_COLUMNS, what="split table",
                     dtype={"participant_id": str, "session_id": str})
    rows = table["row"].to_numpy()
    if len(table) == 0:
        if allow_empty:
            return table
        raise InputError(f"{table_tsv}: no sessions")
    if rows.min() < 0 or rows.max() >= len(index):
        raise InputError(f"{table_tsv}: store rows outside 0..{len(index) - 1}: the table was written for "
                         "another store; re-run the split rule")
    ref = index.iloc[rows]
    if not ((ref.participant_id.to_numpy() == table.participant_id.to_numpy()).all()
            and (ref.session_id.to_numpy() == table.session_id.to_numpy()).all()):
        raise InputError(f"{table_tsv}: sessions do not match the store index rows: re-run the split rule")
    return table
