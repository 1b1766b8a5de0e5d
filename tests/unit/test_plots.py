"""Brain views (robustmaps.plots.brain_maps_figure) read from the nilearn display objects, on
small synthetic images in MNI space: colour bar, L/R and cut-position labels, cut coordinates,
the planted outline."""

import matplotlib.contour
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from robustmaps.plots import brain_maps_figure

AFFINE = np.array([[6.0, 0, 0, -90], [0, 6.0, 0, -126], [0, 0, 6.0, -72], [0, 0, 0, 1]])
SHAPE = (30, 36, 30)


def blob(centre_mm, radius_mm=12.0, value=1.0):
    ijk = np.indices(SHAPE).reshape(3, -1).T
    xyz = ijk * 6.0 + AFFINE[:3, 3]
    d = np.linalg.norm(xyz - np.asarray(centre_mm), axis=1).reshape(SHAPE)
    return (value * (d < radius_mm)).astype(np.float32)


def image(data):
    return nib.Nifti1Image(np.asarray(data, np.float32), AFFINE)


def texts(display):
    return {t.get_text() for cut in display.axes.values() for t in cut.ax.texts}


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    path = tmp_path_factory.mktemp("plots") / "brain.png"
    left = blob((-26, -20, -15))
    rows = [{"title": "fold 0 seed 0", "label": "1 - m", "voxel": image(left), "roi": image(0.5 * left),
             "voxel_vmax": 1.0, "voxel_threshold": 0.05},
            {"title": "sobol", "label": "ST", "voxel": None, "roi": image(blob((26, -20, -15), value=0.3))}]
    outline = image(blob((-26, -20, -15), radius_mm=8.0) > 0)
    displays = brain_maps_figure(rows, path, cut_coords=(-26, -20, -15), outline=outline)
    return path, displays


def test_one_display_per_drawn_panel_and_the_file_is_written(drawn):
    path, displays = drawn
    assert path.exists() and path.stat().st_size > 1000
    assert [(i, col) for i, col, _ in displays] == [(0, "voxel"), (0, "roi"), (1, "roi")]


def test_every_panel_has_a_colour_bar_with_its_quantity(drawn):
    _, displays = drawn
    for i, _, d in displays:
        cbar_ax = d._colorbar_ax
        assert cbar_ax in d.frame_axes.figure.axes
        assert cbar_ax.get_ylabel() == ("1 - m" if i == 0 else "ST")
    # the mask's colour scale is the configured 0..1, the ROI map's its own maximum
    assert displays[0][2]._cbar.mappable.norm.vmax == pytest.approx(1.0)
    assert displays[2][2]._cbar.mappable.norm.vmax == pytest.approx(0.3)


def test_same_cuts_through_the_given_coordinates_in_every_panel(drawn):
    _, displays = drawn
    for _, _, d in displays:
        assert {k: cut.coord for k, cut in d.axes.items()} == {"x": -26, "y": -20, "z": -15}
        labels = texts(d)
        assert {"x=-26", "y=-20", "z=-15"} <= labels


def test_left_right_labels_on_the_coronal_and_axial_cuts(drawn):
    _, displays = drawn
    for _, _, d in displays:
        for k in ("y", "z"):
            assert {"L", "R"} <= {t.get_text() for t in d.axes[k].ax.texts}


def test_the_planted_outline_is_a_contour_in_every_cut(drawn):
    _, displays = drawn
    for _, _, d in displays:
        for k, cut in d.axes.items():
            contours = [c for c in cut.ax.collections if isinstance(c, matplotlib.contour.ContourSet)]
            assert contours, f"no outline in cut {k}"


def test_an_empty_map_gets_a_zero_to_one_colour_bar(tmp_path):
    rows = [{"title": "m", "label": "v", "voxel": image(np.zeros(SHAPE)), "roi": None}]
    (_, _, d), = brain_maps_figure(rows, tmp_path / "b.png", cut_coords=(0, -20, -15))
    assert d._cbar.mappable.norm.vmax == pytest.approx(1.0)


def test_no_outline_without_ground_truth(tmp_path):
    rows = [{"title": "m", "label": "v", "voxel": image(blob((0, 0, 0))), "roi": None}]
    (_, _, d), = brain_maps_figure(rows, tmp_path / "b.png", cut_coords=(0, -20, -15))
    assert not [c for cut in d.axes.values() for c in cut.ax.collections
                if isinstance(c, matplotlib.contour.ContourSet)]
    assert {k: cut.coord for k, cut in d.axes.items()} == {"x": 0, "y": -20, "z": -15}


def test_group_mask_views_have_colour_bars_orientation_and_the_configured_cuts(tmp_path):
    from robustmaps.plots import group_mask_views

    mask = tmp_path / "m.nii.gz"
    nib.save(image(1.0 - blob((-26, -20, -15))), mask)
    displays = group_mask_views({(0, 0): mask, (1, 0): mask}, tmp_path / "v.png", cut_coords=(-30, -18, -12))
    assert len(displays) == 2
    for d in displays:
        assert {k: cut.coord for k, cut in d.axes.items()} == {"y": -18, "z": -12}
        assert d._colorbar_ax.get_ylabel() == "1 - m"
        assert {"L", "R", "y=-18", "z=-12"} <= texts(d)


def test_brain_maps_entry_paints_roi_values_and_outlines_the_planted_rois(tmp_path):
    """The entry on a two-ROI atlas: the ROI panel of a mask holds the ROI values of the table,
    every panel outlines the planted ROI; without ground truth no outline."""
    import pandas as pd

    from robustmaps.jobs.analysis import brain_maps_entry
    from robustmaps.roi import ID_COLUMNS

    left, right = blob((-26, -20, -15), 15.0), blob((26, -20, -15), 15.0)
    atlas = (left > 0) * 1 + (right > 0) * 2
    nib.save(nib.Nifti1Image(atlas.astype(np.int16), AFFINE), tmp_path / "atlas.nii.gz")
    pd.DataFrame({"index": [1, 2], "name": ["Hippocampus_L", "Hippocampus_R"]}).to_csv(
        tmp_path / "labels.tsv", sep="\t", index=False)
    nib.save(image(1.0 - 0.8 * left), tmp_path / "mask.nii.gz")
    nib.save(image(left + 0.1), tmp_path / "map.nii.gz")
    base = dict.fromkeys(ID_COLUMNS, "")
    rows = [{**base, "kind": "group", "method": "mask", "cohort": "main", "target": "AD", "fold": 0, "seed": 0,
             "Hippocampus_L": 7.0, "Hippocampus_R": 1.0},
            {**base, "kind": "saliency", "method": "gradcam", "cohort": "main", "target": "AD", "fold": 0, "seed": 0,
             "Hippocampus_L": 0.4, "Hippocampus_R": 0.0},
            {**base, "kind": "sobol", "method": "sobol", "cohort": "main", "target": "AD", "fold": 0, "seed": 0,
             "Hippocampus_L": 0.2, "Hippocampus_R": 0.05}]
    pd.DataFrame(rows, columns=ID_COLUMNS + ["Hippocampus_L", "Hippocampus_R"]).to_csv(
        tmp_path / "roi.tsv", sep="\t", index=False)
    pd.DataFrame({"roi_name": ["Hippocampus_L", "Hippocampus_R"], "weight": [1.0, 0.0]}).to_csv(
        tmp_path / "truth.tsv", sep="\t", index=False)
    out = {k: tmp_path / f"{k}.png" for k in ("masks", "saliency", "sobol")}
    drawn = brain_maps_entry(tmp_path / "roi.tsv", tmp_path / "atlas.nii.gz", tmp_path / "labels.tsv",
                             tmp_path / "truth.tsv", out, masks={"0/0": tmp_path / "mask.nii.gz"},
                             maps={"gradcam": [tmp_path / "map.nii.gz"]}, cut_coords=(-26, -20, -15))
    assert all(p.exists() for p in out.values())
    assert [(i, c) for i, c, _ in drawn["masks"]] == [(0, "voxel"), (0, "roi")]
    assert [(i, c) for i, c, _ in drawn["sobol"]] == [(0, "roi")]
    # colour scales: the mask's voxels 0..1, its ROI map up to the larger ROI value 7, Sobol's 0.2
    assert drawn["masks"][0][2]._cbar.mappable.norm.vmax == pytest.approx(1.0)
    assert drawn["masks"][1][2]._cbar.mappable.norm.vmax == pytest.approx(7.0)
    assert drawn["sobol"][0][2]._cbar.mappable.norm.vmax == pytest.approx(0.2)
    assert [d._colorbar_ax.get_ylabel() for _, _, d in drawn["masks"]] == ["1 - m", "ROI sum of 1 - m"]
    assert [d.frame_axes.get_title(loc="left") for _, _, d in drawn["masks"]] == [
        "mask fold 0 seed 0 (voxels)", "mask fold 0 seed 0 (ROIs)"]
    for displays in drawn.values():
        for _, _, d in displays:
            assert all(any(isinstance(c, matplotlib.contour.ContourSet) for c in cut.ax.collections)
                       for cut in d.axes.values())
            assert {k: cut.coord for k, cut in d.axes.items()} == {"x": -26, "y": -20, "z": -15}
    real = brain_maps_entry(tmp_path / "roi.tsv", tmp_path / "atlas.nii.gz", tmp_path / "labels.tsv", None, out,
                            masks={"0/0": tmp_path / "mask.nii.gz"}, maps={}, cut_coords=(-26, -20, -15))
    assert real["saliency"] == []
    assert not any(isinstance(c, matplotlib.contour.ContourSet)
                   for _, _, d in real["masks"] for cut in d.axes.values() for c in cut.ax.collections)


def test_similarity_families_figure_marks_the_published_values_on_their_families(tmp_path):
    import pandas as pd

    from robustmaps.plots import similarity_families_figure
    from robustmaps.similarity import PUBLISHED

    order = ["sweep_neighbours", "cohorts", "intra_subject", "inter_subject", "folds", "seeds", "methods"]
    rng = np.random.default_rng(0)
    pairs = pd.DataFrame({"family": np.repeat(order, 4), "cosine": rng.uniform(0.3, 0.9, 4 * len(order))})
    summary = pd.DataFrame({"family": order, "mean": 0.6, "ci_low": 0.5, "ci_high": 0.7, "n_units": 4})
    ax = similarity_families_figure(pairs, summary, tmp_path / "f.png", published=PUBLISHED)
    assert (tmp_path / "f.png").exists()
    rows = {t.get_text().split(" (")[0]: y for t, y in zip(ax.get_yticklabels(), ax.get_yticks())}
    marks = {a.get_gid().split(" ", 1)[1]: a for a in ax.get_children()
             if isinstance(a.get_gid(), str) and a.get_gid().startswith("published ")}
    assert set(marks) == set(PUBLISHED) and "methods" not in marks     # no published value for methods
    expected_points = {"intra_subject": 0.94, "inter_subject": 0.80, "seeds": 0.69, "folds": 0.65}
    for family, value in expected_points.items():
        x, y = marks[family].get_data()
        assert list(x) == [pytest.approx(value)] and list(y) == [rows[family]]
    for family, (low, high) in {"cohorts": (0.89, 0.99), "sweep_neighbours": (0.90, 1.0)}.items():
        (seg,) = marks[family].get_segments()
        assert seg[:, 0].tolist() == pytest.approx([low, high]) and set(seg[:, 1]) == {rows[family]}
    texts = {t.get_text() for t in ax.texts}
    assert {"0.94", "0.80", "0.69", "0.65", "0.89-0.99", "> 0.90"} <= texts
    assert "Thibeau-Sutre et al. 2020 (ADNI)" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_sweep_figures_one_row_per_series_with_colour_bars_and_coronal_cuts(tmp_path):
    from robustmaps.jobs.analysis import sweep_figures_entry

    points = []
    values = {"b1-0.1_b2-1_l1-1e-04_l2-1e-03": (0.1, 1e-4), "b1-2_b2-1_l1-1e-04_l2-1e-03": (2, 1e-4),
              "b1-0.1_b2-1_l1-1e-02_l2-1e-03": (0.1, 1e-2), "b1-0.1_b2-1_l1-1e-03_l2-1e-03": (0.1, 1e-3)}
    for p, (b1, l1) in values.items():
        nib.save(image(1.0 - blob((-26, -20, -15))), tmp_path / f"{p}.nii.gz")
        # the mask's summary records its point's values (the series come from them, not the id)
        pd.DataFrame([{"b1": b1, "b2": 1, "l1": l1, "l2": 1e-3, "lr": 0.1, "coverage": 0.1}]).to_csv(
            tmp_path / f"{p}.tsv", sep="\t", index=False)
        points.append({"point": p, "mask": tmp_path / f"{p}.nii.gz", "summary": tmp_path / f"{p}.tsv"})
    out = {"b": tmp_path / "b.png", "l": tmp_path / "l.png"}
    drawn = sweep_figures_entry(points, out, cut_coords=(-26, -22, -15))
    assert out["b"].exists() and out["l"].exists()
    assert [(i, j) for i, j, _ in drawn["b"]] == [(0, 0), (0, 1)]          # one b1 series of 2 points
    assert [(i, j) for i, j, _ in drawn["l"]] == [(0, 0), (0, 1), (0, 2)]  # one l1 series of 3 points
    titles = [d.frame_axes.get_title(loc="left") for _, _, d in drawn["l"]]
    assert titles[0].startswith("l1 (b1 0.1, b2 1, l2 0.001)") and titles[0].endswith("l1 = 0.0001")
    assert titles[1:] == ["\nl1 = 0.001", "\nl1 = 0.01"]
    for _, _, d in drawn["b"] + drawn["l"]:
        assert [c.coord for c in d.axes.values()] == [-22] and d._direction == "y"   # one coronal cut
        assert d._colorbar_ax.get_ylabel() == "1 - m" and d._cbar.mappable.norm.vmax == pytest.approx(1.0)
        assert {"L", "R", "y=-22"} <= texts(d)
    none = sweep_figures_entry([], out, cut_coords=(-26, -22, -15))
    assert none == {"b": [], "l": []}
