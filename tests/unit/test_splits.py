import re

import numpy as np
import pandas as pd
import pytest

from robustmaps.io import InputError
import shutil

from robustmaps.splits import import_splits, kfold, p_counts, select_test, split_files, subjects_table, verify
from robustmaps.jobs.split import make_splits


def make_index(n_cn=40, n_ad=36, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_cn + n_ad):
        dx = "CN" if i < n_cn else "AD"
        age = rng.normal(74, 6)
        for k in range(int(rng.integers(1, 4))):
            rows.append({"participant_id": f"sub-{i:03d}", "session_id": f"ses-M{12 * k:03d}",
                         "diagnosis": dx, "label": int(dx == "AD"), "age": round(age + k, 2),
                         "sex": "M" if rng.random() < 0.5 else "F", "baseline": k == 0})
    df = pd.DataFrame(rows)
    df.insert(0, "row", range(len(df)))
    return df[["row", "participant_id", "session_id", "diagnosis", "label", "age", "sex", "baseline"]]


PARAMS = dict(cohort="main", n_folds=5, seed=2, test_per_class=8, p_age_threshold=0.5,
              p_sex_threshold=0.5, max_tries=1000)


@pytest.fixture
def split_dir(tmp_path):
    index = make_index()
    index.to_csv(tmp_path / "index.tsv", sep="\t", index=False)
    make_splits(str(tmp_path / "index.tsv"), str(tmp_path / "splits"), **PARAMS)
    return tmp_path, index


def read(path):
    return pd.read_csv(path, sep="\t", dtype={"participant_id": str})


def test_split_properties(split_dir):
    root, index = split_dir
    assert verify(root / "splits", 5, index) == []
    test = read(root / "splits" / "test_baseline.tsv")
    assert (test.groupby("diagnosis").size() == 8).all()
    assert read(root / "splits" / "test.tsv").participant_id.nunique() == 16
    summary = read(root / "splits" / "summary.tsv")
    t = summary[(summary.set == "test") & (summary.diagnosis != "all")]
    assert (t.p_age >= 0.5).all() and (t.p_sex >= 0.5).all()
    # stratified: every validation fold has (nearly) the class ratio of the rest
    for k in range(5):
        va = read(root / "splits" / f"split-{k}" / "validation_baseline.tsv")
        assert abs((va.label == 1).mean() - 28 / 60) < 0.1
        tr = read(root / "splits" / f"split-{k}" / "train.tsv")
        # training keeps all sessions of its subjects, validation only the baseline
        assert len(tr) == index.participant_id.isin(set(tr.participant_id)).sum()
        assert va.session_id.eq("ses-M000").all()


def test_same_seed_same_bytes_other_seed_other_split(split_dir, tmp_path):
    root, index = split_dir
    make_splits(str(root / "index.tsv"), str(tmp_path / "again"), **PARAMS)
    for f in sorted((root / "splits").rglob("*.tsv")):
        assert f.read_bytes() == (tmp_path / "again" / f.relative_to(root / "splits")).read_bytes(), f
    make_splits(str(root / "index.tsv"), str(tmp_path / "other"), **{**PARAMS, "seed": 3})
    assert (root / "splits" / "split-0" / "train.tsv").read_bytes() != (tmp_path / "other" / "split-0" / "train.tsv").read_bytes()


def test_kfold_is_sklearn_stratified_kfold_on_sorted_subjects():
    from sklearn.model_selection import StratifiedKFold

    subjects = subjects_table(make_index()).sample(frac=1, random_state=0)  # order must not matter
    folds = kfold(subjects, 4, seed=2)
    s = subjects.sort_values("participant_id")
    ref = StratifiedKFold(4, shuffle=True, random_state=2).split(s.participant_id, s.label)
    for (tr, va), (rtr, rva) in zip(folds, ref):
        assert va == sorted(s.participant_id.iloc[rva])


def test_class_too_small_for_k_folds():
    subjects = subjects_table(make_index(n_cn=20, n_ad=4))
    with pytest.raises(InputError, match="too few subjects per class for split.n_folds=5"):
        kfold(subjects, 5, 2)
    with pytest.raises(InputError, match="class AD has 4 subjects"):
        select_test(subjects, 2, 2, 0.5, 0.5, 100, n_folds=5)


def test_unmatchable_test_set_is_a_clear_error():
    idx = make_index()
    subjects = subjects_table(idx)
    with pytest.raises(InputError, match="no age- and sex-matched test set"):
        select_test(subjects, 8, 2, 0.999999, 0.999999, 20, n_folds=5)


def test_import_clinicadl_splits_round_trip(split_dir):
    root, index = split_dir
    test, folds = import_splits(index, str(root / "splits"), 5)
    assert test == sorted(read(root / "splits" / "test_baseline.tsv").participant_id)
    for k, (tr, va) in enumerate(folds):
        assert va == sorted(read(root / "splits" / f"split-{k}" / "validation_baseline.tsv").participant_id)
    with pytest.raises(InputError, match="split.n_folds is 4"):
        import_splits(index, str(root / "splits"), 4)


def test_import_rejects_overlapping_sets(split_dir):
    root, index = split_dir
    va = read(root / "splits" / "split-0" / "validation_baseline.tsv")
    tr = read(root / "splits" / "split-0" / "train.tsv")
    pd.concat([tr, va.head(1)]).to_csv(root / "splits" / "split-0" / "train.tsv", sep="\t", index=False)
    with pytest.raises(InputError, match="split-0.*two sets"):
        import_splits(index, str(root / "splits"), 5)


def test_verify_finds_leaks(split_dir):
    root, index = split_dir
    test = read(root / "splits" / "test_baseline.tsv")
    tr = read(root / "splits" / "split-1" / "train.tsv")
    pd.concat([tr, test.head(1)]).to_csv(root / "splits" / "split-1" / "train.tsv", sep="\t", index=False)
    problems = verify(root / "splits", 5, index)
    assert any("split-1" in p for p in problems)


def test_chi_square_degenerate_tables():
    assert p_counts(["M", "M"], ["M"], ("M", "F")) == 1.0
    assert p_counts(["M"] * 30, ["F"] * 30, ("M", "F")) < 1e-6


def clinicadl_layout(src, dst, n_folds=5):
    """Copy a split folder of the project's layout into ClinicaDL's: <dst>/<n>_fold/split-<k>/."""
    dst.mkdir()
    for name in ("test_baseline.tsv", "test.tsv"):
        shutil.copy(src / name, dst / name)
    for k in range(n_folds):
        shutil.copytree(src / f"split-{k}", dst / f"{n_folds}_fold" / f"split-{k}")
    return dst


def test_clinicadl_layout_gives_the_same_sets_as_the_own_layout(split_dir, tmp_path):
    root, index = split_dir
    cdl = clinicadl_layout(root / "splits", tmp_path / "split")
    files = split_files(cdl, 5, need_test=True)
    assert files["test_baseline"] == cdl / "test_baseline.tsv" and files["test"] == cdl / "test.tsv"
    assert files["folds"][3] == {"train": cdl / "5_fold" / "split-3" / "train.tsv",
                                 "validation_baseline": cdl / "5_fold" / "split-3" / "validation_baseline.tsv"}
    own = split_files(root / "splits", 5)
    assert own["folds"][0]["train"] == root / "splits" / "split-0" / "train.tsv"
    assert import_splits(index, str(cdl), 5, need_test=True) == import_splits(index, str(root / "splits"), 5)
    # ClinicaDL's fold folder given directly: the test set is found in its parent
    direct = split_files(cdl / "5_fold", 5, need_test=True)
    assert direct["test_baseline"] == cdl / "test_baseline.tsv"
    # and make_splits writes the same files from either layout
    a, b = tmp_path / "from_own", tmp_path / "from_cdl"
    make_splits(str(root / "index.tsv"), str(a), **PARAMS, import_dir=str(root / "splits"))
    make_splits(str(root / "index.tsv"), str(b), **PARAMS, import_dir=str(cdl))
    for f in sorted(a.rglob("*.tsv")):
        assert f.read_bytes() == (b / f.relative_to(a)).read_bytes(), f


def test_clinicadl_layout_with_other_fold_count_is_named(split_dir, tmp_path):
    root, index = split_dir
    cdl = clinicadl_layout(root / "splits", tmp_path / "split")
    with pytest.raises(InputError, match="holds 5_fold but split.n_folds is 2"):
        split_files(cdl, 2, need_test=False)
    with pytest.raises(InputError, match="5_fold.*holds split-4 but split.n_folds is 4"):
        import_splits(index, str(cdl / "5_fold"), 4)


def test_both_or_neither_layout_is_an_error_naming_the_paths(split_dir, tmp_path):
    root, _ = split_dir
    shutil.copytree(root / "splits" / "split-0", root / "splits" / "5_fold" / "split-0")
    with pytest.raises(InputError, match="holds both split folders"):
        split_files(root / "splits", 5, False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError) as err:
        split_files(tmp_path / "empty", 3, False)
    msg = str(err.value)
    assert str(tmp_path / "empty" / "split-0" / "train.tsv") in msg
    assert str(tmp_path / "empty" / "3_fold" / "split-0" / "train.tsv") in msg


def test_need_test_without_test_file_names_where_it_looked(split_dir, tmp_path):
    root, index = split_dir
    cdl = clinicadl_layout(root / "splits", tmp_path / "split")
    (cdl / "test_baseline.tsv").unlink()
    files = split_files(cdl, 5, need_test=False)
    assert files["test_baseline"] is None and files["test"] is None
    assert import_splits(index, str(cdl), 5)[0] == []
    with pytest.raises(InputError, match="no test set found: looked for " + re.escape(str(cdl / "test_baseline.tsv"))):
        split_files(cdl, 5, need_test=True)
    with pytest.raises(InputError) as err:
        split_files(cdl / "5_fold", 5, need_test=True)
    assert str(cdl / "5_fold" / "test_baseline.tsv") in str(err.value)
    assert str(cdl / "test_baseline.tsv") in str(err.value)
    with pytest.raises(InputError, match="no test set found"):
        make_splits(str(root / "index.tsv"), str(tmp_path / "out"), **PARAMS, import_dir=str(cdl))


def test_missing_fold_file_is_named(split_dir, tmp_path):
    root, _ = split_dir
    cdl = clinicadl_layout(root / "splits", tmp_path / "split")
    missing = cdl / "5_fold" / "split-2" / "validation_baseline.tsv"
    missing.unlink()
    with pytest.raises(InputError, match=re.escape(str(missing)) + ": split table not found"):
        split_files(cdl, 5, need_test=False)
    (root / "splits" / "split-4" / "train.tsv").unlink()
    with pytest.raises(InputError, match=re.escape(str(root / "splits" / "split-4" / "train.tsv"))):
        split_files(root / "splits", 5, need_test=False)
