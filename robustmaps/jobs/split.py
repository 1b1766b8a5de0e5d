"""Rule entries of the split stage (rules/split.smk): the test set and k folds of a cohort (or
ClinicaDL's splits, imported), and an independent cohort's test table."""

from __future__ import annotations

import logging
from pathlib import Path

from ..io import write_tsv
from ..preprocess import read_index
from ..splits import import_splits, kfold, select_test, sessions_of, subjects_table, summarise

log = logging.getLogger(__name__)


def make_splits(index_tsv: str, out_dir: str, *, cohort: str, n_folds: int, seed: int,
                test_per_class: int, p_age_threshold: float, p_sex_threshold: float,
                max_tries: int, import_dir: str | None = None) -> None:
    """Rule entry point: write every split TSV of the main cohort and ``summary.tsv``.

    With ``import_dir``, the splits are read from there (:func:`import_splits`); a test set
    asked for (``test_per_class`` > 0) then requires its test_baseline.tsv."""
    index = read_index(index_tsv)
    subjects = subjects_table(index)
    if import_dir:
        test, folds = import_splits(index, import_dir, n_folds, need_test=test_per_class > 0)
    else:
        test = select_test(subjects, test_per_class, seed, p_age_threshold, p_sex_threshold,
                           max_tries, n_folds)
        folds = kfold(subjects[~subjects.participant_id.isin(test)], n_folds, seed)
    out = Path(out_dir)
    rest = sorted(set(subjects.participant_id) - set(test))
    sets = [("test", "", test, rest)] if test else []
    for k, (tr, va) in enumerate(folds):
        d = out / f"split-{k}"
        write_tsv(sessions_of(index, tr, False, cohort), d / "train.tsv")
        write_tsv(sessions_of(index, tr, True, cohort), d / "train_baseline.tsv")
        write_tsv(sessions_of(index, va, True, cohort), d / "validation_baseline.tsv")
        sets += [("train", k, tr, va), ("validation", k, va, tr)]
        log.info("split-%d: %d train subjects (%d sessions), %d validation subjects", k, len(tr),
                 int(index.participant_id.isin(tr).sum()), len(va))
    write_tsv(sessions_of(index, test, True, cohort), out / "test_baseline.tsv")
    write_tsv(sessions_of(index, test, False, cohort), out / "test.tsv")
    write_tsv(summarise(index, sets), out / "summary.tsv")


def make_test_cohort(index_tsv: str, out_dir: str, *, cohort: str) -> None:
    """Rule entry point for an independent cohort: all of it is a test set."""
    index = read_index(index_tsv)
    ids = sorted(index.participant_id.unique())
    out = Path(out_dir)
    write_tsv(sessions_of(index, ids, True, cohort), out / "test_baseline.tsv")
    write_tsv(sessions_of(index, ids, False, cohort), out / "test.tsv")
    write_tsv(summarise(index, [("test", "", ids, [])]), out / "summary.tsv")
