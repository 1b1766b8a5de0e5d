import numpy as np
import pytest

from robustmaps.grid import CLINICA_GRID, Grid


def test_clinica_grid_affine():
    g = Grid.from_config(CLINICA_GRID)
    assert g.shape == (121, 145, 121)
    np.testing.assert_array_equal(g.affine[:3, 3], [-90, -126, -72])
    assert g.affine[0, 0] == 1.5


def test_coarsened_keeps_field_of_view_box_aligned():
    g = Grid.from_config(CLINICA_GRID).coarsened(4.5)
    assert g.shape == (40, 48, 40)
    # first working voxel = centre of the first 3 native voxels
    np.testing.assert_allclose(g.origin, (-88.5, -124.5, -70.5))
    assert Grid.from_config(CLINICA_GRID).coarsened(None) == Grid.from_config(CLINICA_GRID)
    with pytest.raises(ValueError, match="smaller than the native"):
        Grid.from_config(CLINICA_GRID).coarsened(1.0)


def test_cropped_keeps_voxels_inside_box():
    g = Grid.from_config(CLINICA_GRID).coarsened(3.0)
    c = g.cropped([[-30, 30], [-60, 0], [-30, 30]])
    for axis, (lo, hi) in zip(c.world_axes(), [[-30, 30], [-60, 0], [-30, 30]]):
        assert axis.min() >= lo and axis.max() <= hi
        assert axis.min() - 3.0 < lo and axis.max() + 3.0 > hi
    with pytest.raises(ValueError, match="leaves no voxel"):
        g.cropped([[500, 600], [0, 1], [0, 1]])


def test_matches_tolerates_rounding_only():
    g = Grid.from_config(CLINICA_GRID)
    assert g.matches((121, 145, 121), g.affine + 1e-5)
    assert not g.matches((121, 145, 120), g.affine)
    moved = g.affine.copy()
    moved[0, 3] += 1.5
    assert not g.matches(g.shape, moved)
