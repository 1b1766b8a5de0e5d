"""Reading real Clinica / ClinicaDL inputs (issue "Real Clinica and ClinicaDL inputs"): orientation,
labels tables, missing maps, overlapping cohorts, unwritable folders, classes by name."""

from __future__ import annotations

import io as _io

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from robustmaps import config as rmconfig
from robustmaps.grid import Grid, canonical, to_orientation
from robustmaps.io import InputError, load_nifti, map_diagnoses, read_sessions, save_nifti
from robustmaps.jobs.data import build_store
from robustmaps.qc import check_image, check_not_empty, run_qc

LABELS = {"CN": 0, "AD": 1}
GRID = Grid((12, 14, 10), 3.0, (-18.0, -21.0, -15.0))


def gm_image(seed=0):
    rng = np.random.default_rng(seed)
    data = np.zeros(GRID.shape, np.float32)
    data[2:10, 3:11, 2:8] = rng.uniform(0.2, 1.0, (8, 8, 6))
    data[5, 6, 4] = 1.0
    return data


def nib_save(path, data, affine):
    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), affine), path)
    return path


# ---------------------------------------------------------------------------------- orientation
def test_spm_x_flip_is_the_layout_spm_writes_and_reads_back_identically():
    data = gm_image()
    flipped, affine = to_orientation(data, GRID.affine, "LAS")
    # SPM (spm_dartel_norm_fun, det < 0): negative x step, x origin at the other end of the box
    assert affine[0, 0] == -3.0 and affine[0, 3] == GRID.origin[0] + 3.0 * (GRID.shape[0] - 1)
    np.testing.assert_array_equal(flipped, data[::-1])
    back, back_affine = canonical(flipped, affine)
    np.testing.assert_array_equal(back, data)
    assert GRID.matches(back.shape, back_affine)


@pytest.mark.parametrize("codes", ["LAS", "RPI", "ASL", "PIR", "SLA"])
def test_any_flip_or_permutation_of_the_grid_passes_qc_and_reads_as_the_same_image(tmp_path, codes):
    data = gm_image()
    stored, affine = to_orientation(data, GRID.affine, codes)
    assert stored.shape != data.shape or not np.array_equal(stored, data)
    path = nib_save(tmp_path / f"{codes}.nii.gz", stored, affine)
    read, read_affine = load_nifti(path)
    np.testing.assert_array_equal(read, data)
    assert check_image(str(path), GRID, 0.95)[0] == "pass"


@pytest.mark.parametrize("change", ["voxel size", "shift", "oblique", "shape"])
def test_a_real_grid_difference_fails_qc_printing_both_affines(tmp_path, change):
    data, affine = gm_image(), GRID.affine.copy()
    if change == "voxel size":
        affine[:3, :3] *= 1.5
    elif change == "shift":
        affine[1, 3] += 3.0
    elif change == "oblique":
        c, s = np.cos(0.1), np.sin(0.1)
        affine[:3, :3] = affine[:3, :3] @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    else:
        data = data[:-1]
    path = nib_save(tmp_path / "x.nii.gz", *to_orientation(data, affine, "LAS"))
    status, reason, _ = check_image(str(path), GRID, 0.95)
    assert status == "fail" and "differs from the cohort grid" in reason
    assert "affine [" in reason and "vs the grid's [3 0 0 -18; 0 3 0 -21; 0 0 3 -15]" in reason


def test_every_nifti_written_is_canonical(tmp_path):
    data = gm_image()
    flipped, affine = to_orientation(data, GRID.affine, "LAS")
    save_nifti(flipped, affine, tmp_path / "out.nii.gz")
    raw = nib.load(tmp_path / "out.nii.gz")
    np.testing.assert_allclose(raw.affine, GRID.affine)
    np.testing.assert_array_equal(np.asarray(raw.dataobj), data)
    save_nifti(data, GRID.affine, tmp_path / "las.nii.gz", orientation="LAS")  # what the synthetic CAPS does
    assert nib.load(tmp_path / "las.nii.gz").affine[0, 0] < 0


def test_store_from_flipped_and_permuted_storage_equals_the_canonical_store_byte_for_byte(tmp_path, write_image):
    atlas = tmp_path / "atlas.nii.gz"
    save_nifti(np.ones(GRID.shape), GRID.affine, atlas, dtype=np.int16)
    rows = []
    for i, codes in enumerate(["RAS", "LAS", "ASL", "RAS"]):
        data = gm_image(i)
        for layout, folder in (("RAS", "canonical"), (codes, "stored")):
            path = tmp_path / folder / f"{i}.nii.gz"
            path.parent.mkdir(exist_ok=True)
            nib_save(path, *to_orientation(data, GRID.affine, layout))
        rows.append({"participant_id": f"sub-{i}", "session_id": "ses-M000", "diagnosis": "AD" if i % 2 else "CN",
                     "label": i % 2, "age": 70.0, "sex": "F", "status": "pass", "reason": "", "max_value": 1.0})
    working = GRID.coarsened(6.0).to_config()
    for folder in ("canonical", "stored"):
        qc = pd.DataFrame(rows).assign(path=[str(tmp_path / folder / f"{i}.nii.gz") for i in range(4)])
        qc.to_csv(tmp_path / f"{folder}.tsv", sep="\t", index=False)
        build_store(tmp_path / f"{folder}.tsv", _working_atlas(tmp_path, working), tmp_path / f"{folder}.npy",
                    tmp_path / f"{folder}-index.tsv", tmp_path / f"{folder}-mean.nii.gz", native=GRID.to_config(),
                    working=working)
    assert (tmp_path / "canonical.npy").read_bytes() == (tmp_path / "stored.npy").read_bytes()


def _working_atlas(tmp_path, working):
    g = Grid.from_config(working)
    path = tmp_path / "atlas-working.nii.gz"
    save_nifti(np.ones(g.shape), g.affine, path, dtype=np.int16)
    return path


# -------------------------------------------------------------------------------- labels tables
def labels_tsv(tmp_path, rows, header="participant_id\tsession_id\tage\tsex\tdiagnosis", bom=False, name="l.tsv"):
    path = tmp_path / name
    text = header + "\n" + "\n".join(rows) + "\n"
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode())
    return path


def test_clinicadl_labels_table_with_bom_age_bl_extra_columns_and_other_diagnosis_words(tmp_path):
    path = labels_tsv(tmp_path, ["sub-1\tses-M000\t70\tM\tDementia\tA", "sub-2\tses-M000\t71\tF\tcn\tB",
                                 "sub-3\tses-M000\t72\tF\tMCI\tC", "sub-4\tses-M000\t73\tM\t ad \tD"],
                      header="participant_id\tsession_id\tage_bl\tsex\tdiagnosis\tsite", bom=True)
    df = read_sessions(path, LABELS, {"dementia": "AD"})
    assert df.diagnosis.tolist() == ["AD", "CN", "MCI", "AD"]
    assert df.age.tolist() == [70, 71, 72, 73] and df.site.tolist() == ["A", "B", "C", "D"]
    assert list(df.columns[:2]) == ["participant_id", "session_id"]  # the BOM is not part of the first name


def test_map_diagnoses_is_case_insensitive_and_keeps_unknown_words():
    out = map_diagnoses(pd.Series(["AD", "ad", "Dementia", "NL", "MCI"]), LABELS, {"DEMENTIA": "AD", "nl": "CN"})
    assert out.tolist() == ["AD", "AD", "AD", "CN", "MCI"]


def test_blank_age_or_sex_is_excluded_with_its_reason_or_stops(tmp_path, grid, write_image):
    path = labels_tsv(tmp_path, ["sub-1\tses-M000\t70\tM\tAD", "sub-2\tses-M000\t\tF\tCN",
                                 "sub-3\tses-M000\t72\t\tCN", "sub-4\tses-M000\t72\tF\tAD"])
    with pytest.raises(InputError, match=r"l.tsv: blank age on line 3 \(caps.blank_demographics: exclude would"):
        read_sessions(path, LABELS, blank_demographics="error")
    df = read_sessions(path, LABELS, blank_demographics="exclude")
    good = np.zeros(grid.shape, np.float32)
    good[2:5, 2:6, 2:5] = 1.0
    images = [write_image(f"{i}.nii.gz", good, grid.affine) for i in range(4)]
    qc = run_qc(df, images, grid, LABELS, 0.95)
    assert qc.status.tolist() == ["pass", "excluded", "excluded", "pass"]
    assert qc.reason.tolist()[1:3] == ["blank age", "blank sex"]


def test_a_table_with_a_column_the_workflow_adds_stops_naming_it(tmp_path):
    path = labels_tsv(tmp_path, ["sub-1\tses-M000\t70\tM\tAD\t3"],
                      header="participant_id\tsession_id\tage\tsex\tdiagnosis\tbaseline")
    with pytest.raises(InputError, match=r"has column\(s\) baseline, which the workflow adds itself"):
        read_sessions(path, LABELS)


def test_a_table_in_another_encoding_is_named_with_its_line(tmp_path):
    path = tmp_path / "latin1.tsv"
    path.write_bytes("participant_id\tsession_id\tage\tsex\tdiagnosis\tsite\nsub-1\tses-M000\t70\tM\tAD\tLyon\n"
                     "sub-2\tses-M000\t70\tM\tAD\tOrl\u00e9ans\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"latin1.tsv: session table is not UTF-8 text: line 3 has byte 0xe9"):
        read_sessions(path, LABELS)


def test_an_empty_class_lists_the_diagnoses_found_and_the_mapping():
    qc = pd.DataFrame({"participant_id": ["sub-1", "sub-2"], "session_id": ["ses-M000"] * 2,
                       "diagnosis": ["CN", "Demented"], "status": ["pass", "excluded"]})
    with pytest.raises(InputError, match=r"no AD session .*diagnoses in the table: \['CN', 'Demented'\]; mapping "
                                         r"used: data.labels \{'CN': 0, 'AD': 1\}, data.diagnoses \{'Dementia': 'AD'\}"):
        check_not_empty(qc, LABELS, "main", "labels.tsv", {"Dementia": "AD"})
    with pytest.raises(InputError, match=r"no AD subject: the diagnoses found are \['CN', 'Demented'\]"):
        rmconfig.check_class_sizes({"CN": 30, "AD": 0}, 5, 2, "labels.tsv", ["CN", "Demented"], {})


# ------------------------------------------------------------------------------- missing maps
def test_missing_and_dangling_maps_are_excluded_with_their_reason(tmp_path, grid, write_image):
    good = np.zeros(grid.shape, np.float32)
    good[2:5, 2:6, 2:5] = 1.0
    present = write_image("ok.nii.gz", good, grid.affine)
    link = tmp_path / "link.nii.gz"
    link.symlink_to(tmp_path / "gone.nii.gz")
    sessions = pd.DataFrame({"participant_id": ["sub-1", "sub-2", "sub-3"], "session_id": "ses-M000",
                             "diagnosis": "AD", "age": 70.0, "sex": "F"})
    paths = [present, tmp_path / "absent.nii.gz", link]
    qc = run_qc(sessions, paths, grid, LABELS, 0.95, missing="exclude")
    assert qc.status.tolist() == ["pass", "excluded", "excluded"]
    assert qc.reason[1] == "GM map missing: file not found"
    assert qc.reason[2] == f"GM map missing: dangling symlink (points to {tmp_path / 'gone.nii.gz'}, which does not exist)"
    with pytest.raises(InputError, match=r"link.nii.gz: dangling symlink"):
        run_qc(sessions.iloc[2:], [link], grid, LABELS, 0.95, missing="error")


def test_present_maps_tolerates_a_few_missing_and_stops_on_many_with_an_expected_path(tmp_path):
    paths = [str(tmp_path / f"{i}.nii.gz") for i in range(20)]
    for p in paths[:18]:
        open(p, "w").close()
    kept = rmconfig.present_maps(paths, "t.tsv", missing="exclude", max_fraction=0.1, key="k")
    assert kept == paths[:18]
    with pytest.raises(InputError, match=r"t.tsv: 2 of 20 GM map\(s\) missing \(k.missing: error\), e.g. \S+18.nii.gz"):
        rmconfig.present_maps(paths, "t.tsv", missing="error", max_fraction=0.1, key="k")
    with pytest.raises(InputError, match=r"2 of 20 GM maps \(10%\) are missing, more than k.max_missing_fraction = "
                                         r"0.05: .*ses-M00 vs ses-M000\); expected for example \S+18.nii.gz: file not"):
        rmconfig.present_maps(paths, "t.tsv", missing="exclude", max_fraction=0.05, key="k")


def test_values_outside_a_gm_map_fail_qc(tmp_path, grid, write_image):
    good = np.zeros(grid.shape, np.float32)
    good[2:5, 2:6, 2:5] = 1.0
    cases = {"scaled": good * 255, "negative": np.where(good > 0, good, -0.2), "overshoot": good * 1.005}
    out = {k: check_image(str(write_image(f"{k}.nii.gz", v, grid.affine)), grid, 0.95) for k, v in cases.items()}
    assert out["scaled"][0] == "fail" and "values above 1 (maximum 255)" in out["scaled"][1]
    assert out["negative"][0] == "fail" and "negative values (minimum -0.2)" in out["negative"][1]
    assert out["overshoot"][0] == "pass"  # within qc.value_tolerance
    # a modulated map (modulation on) is not a probability: values above 1 are fine
    assert check_image(str(write_image("mod.nii.gz", good * 1.8, grid.affine)), grid, 0.95, probability=False)[0] == "pass"


# ------------------------------------------------------------------- cohorts, folders, config
def _config(**data):
    cfg = {"data": {"cohorts": {"main": {"source": "synthetic", "synthetic": {"id_prefix": "S"}},
                                "independent": {"source": "synthetic", "synthetic": {"id_prefix": "I"}}}}}
    cfg["data"].update(data)
    return rmconfig.validate(cfg)


def test_a_participant_in_both_cohorts_stops_unless_allowed():
    cfg = _config()
    rmconfig.check_independent(cfg, {})  # different prefixes: independent
    cfg["data"]["cohorts"]["independent"]["synthetic"]["id_prefix"] = "S"
    with pytest.raises(InputError, match=r"120 participant\(s\) are in both the main and the 'independent' cohort: "
                                         r"sub-S0001, .* \(120 in all\)"):
        rmconfig.check_independent(cfg, {})
    caps = pd.DataFrame({"participant_id": ["sub-S0003", "sub-X"]})
    cfg["data"]["cohorts"]["independent"] = {"source": "caps", "caps": {"caps_dir": ".", "tsv": "t.tsv"}}
    with pytest.raises(InputError, match=r"1 participant\(s\) .*: sub-S0003\. An independent cohort"):
        rmconfig.check_independent(cfg, {"independent": caps})
    cfg["data"]["allow_shared_participants"] = True
    rmconfig.check_independent(cfg, {"independent": caps})


def test_an_unwritable_results_folder_is_named(tmp_path, monkeypatch):
    import tempfile

    def refuse(*a, **k):
        raise OSError(30, "Read-only file system")

    (tmp_path / "results").mkdir()
    rmconfig.check_writable([str(tmp_path / "results"), str(tmp_path / "absent")])
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(InputError, match=r"results: cannot write there \(Read-only file system\)"):
        rmconfig.check_writable([str(tmp_path / "results")])


def test_config_checks_class_names():
    with pytest.raises(InputError, match=r"data.diagnoses.Dementia: maps to 'Alzheimer'"):
        _config(diagnoses={"Dementia": "Alzheimer"})
    cfg = {"data": {"labels": {"AD": 0, "NC": 1}, "cohorts": {"main": {"source": "caps", "caps": {
        "caps_dir": ".", "tsv": "t.tsv"}}}}, "masks": {"reference": "mean_cn"}, "evaluation": {"positive_class": "AD"},
        "saliency": {"group_class": "AD", "actmax": {"classes": ["AD"]}}, "sobol": {"target": "AD", "images": ["AD"]}}
    with pytest.raises(InputError, match=r"masks.reference: mean_cn needs a class named CN"):
        rmconfig.validate(cfg)
    cfg["masks"]["reference"] = "one"
    cfg["evaluation"]["positive_class"] = "Dementia"
    with pytest.raises(InputError, match=r"evaluation.positive_class: 'Dementia' is not one of data.labels"):
        rmconfig.validate(cfg)


# ------------------------------------------------------------------------------ classes by name
def test_evaluation_resolves_the_positive_class_by_name(trained_model, tmp_path):
    """The same model with its classes stored the other way round (labels {AD: 0, CN: 1}: output
    0 is AD) gives the same AD sensitivity, AUC and balanced accuracy."""
    from robustmaps.jobs.train import evaluate_model

    tm = trained_model
    meta = torch.load(tm["model"], weights_only=True)
    last = [k for k in meta["state_dict"] if k.endswith("weight")][-1]
    bias = last.replace("weight", "bias")
    swapped = dict(meta, classes=list(reversed(meta["classes"])))
    swapped["state_dict"] = {k: (v.flip(0) if k in (last, bias) else v) for k, v in meta["state_dict"].items()}
    buf = _io.BytesIO()
    torch.save(swapped, buf)
    (tmp_path / "swapped.pt").write_bytes(buf.getvalue())
    val = pd.read_csv(tm["validation"], sep="\t")
    # two CN images labelled AD: the model calls them CN, so AD recall (sensitivity) < CN recall
    val.loc[val.index[val.label == 0][:2], "label"] = 1
    val.to_csv(tmp_path / "validation-original.tsv", sep="\t", index=False)
    val.assign(label=1 - val.label).to_csv(tmp_path / "validation.tsv", sep="\t", index=False)
    index = pd.read_csv(tm["index"], sep="\t")
    index.assign(label=1 - index.label).to_csv(tmp_path / "index.tsv", sep="\t", index=False)
    out = {}
    for name, model, table, idx in (("original", tm["model"], tmp_path / "validation-original.tsv", tm["index"]),
                                    ("swapped", tmp_path / "swapped.pt", tmp_path / "validation.tsv",
                                     tmp_path / "index.tsv")):
        evaluate_model(model, {"validation": (tm["store"], idx, table)}, {"validation": tmp_path / f"p-{name}.tsv"},
                       tmp_path / f"m-{name}.tsv", n_boot=20, device="cpu", positive="AD")
        out[name] = pd.read_csv(tmp_path / f"m-{name}.tsv", sep="\t").set_index("metric").value
    pd.testing.assert_series_equal(out["original"], out["swapped"], atol=1e-6)
    assert out["original"]["sensitivity"] < out["original"]["specificity"]  # so that swapping them would show


def test_mean_reference_chooses_its_class_by_name(trained_model, tmp_path):
    """With labels {AD: 0, CN: 1} (the index's label numbers swapped) the mean-CN reference is the
    same map: the mean of the CN training images, chosen by name."""
    from robustmaps.grid import Grid
    from robustmaps.jobs.masks import mean_reference

    tm = trained_model
    g = Grid(tuple(tm["images"].shape[1:]), 1.0, (0.0, 0.0, 0.0)).to_config()
    index = pd.read_csv(tm["index"], sep="\t")
    index.assign(label=1 - index.label).to_csv(tmp_path / "index.tsv", sep="\t", index=False)
    train = pd.read_csv(tm["train"], sep="\t")
    train.assign(label=1 - train.label).to_csv(tmp_path / "train.tsv", sep="\t", index=False)
    mean_reference(tm["store"], tm["index"], tm["train"], tmp_path / "a.nii.gz", reference_class="CN", working_grid=g)
    mean_reference(tm["store"], tmp_path / "index.tsv", tmp_path / "train.tsv", tmp_path / "b.nii.gz",
                   reference_class="CN", working_grid=g)
    a, b = load_nifti(tmp_path / "a.nii.gz")[0], load_nifti(tmp_path / "b.nii.gz")[0]
    np.testing.assert_array_equal(a, b)
    cn = tm["images"][:36][tm["labels"][:36] == 0].astype(np.float64).mean(0)
    np.testing.assert_allclose(a, cn, atol=1e-3)
