"""ROI vectors and cosine similarity (robustmaps.roi) on hand-made label images."""

import numpy as np
import pytest

from robustmaps.roi import above_mean, cosine, cosine_matrix, indicator, roi_means, roi_vectors


def labels():
    atlas = np.zeros((4, 5, 3), np.int16)
    atlas[:2, :, :] = 3       # 30 voxels
    atlas[2:, :2, :] = 7      # 12 voxels
    atlas[2:, 4, 0] = 9       # 2 voxels (label 0 elsewhere: outside every ROI)
    return atlas


def test_a_map_equal_to_one_rois_indicator_is_a_one_hot_vector():
    atlas = labels()
    ids = [3, 7, 9]
    for k, label in enumerate(ids):
        v = roi_vectors((atlas == label).astype(np.float32)[..., None], atlas, ids)
        expected = np.zeros((1, 3))
        expected[0, k] = 1.0
        np.testing.assert_allclose(v, expected, atol=1e-6)  # float32 maps: a float32 product


def test_mean_and_sum_reductions_against_a_hand_computation():
    atlas = labels()
    rng = np.random.default_rng(0)
    maps = rng.random((*atlas.shape, 4))
    ids = [3, 7, 9, 11]  # 11 is not in the atlas: an empty ROI gives 0
    mean = roi_vectors(maps, atlas, ids, "mean")
    total = roi_vectors(maps, atlas, ids, "sum")
    for n in range(4):
        for r, label in enumerate(ids[:3]):
            sel = maps[..., n][atlas == label]
            assert mean[n, r] == pytest.approx(sel.mean())
            assert total[n, r] == pytest.approx(sel.sum())
        assert mean[n, 3] == 0 and total[n, 3] == 0
    # agrees with the bincount path used for the planted-signal check
    np.testing.assert_allclose(mean[:, :3], roi_means(np.moveaxis(maps, -1, 0), atlas)[:, ids[:3]])
    # a prebuilt matrix gives the same vectors
    np.testing.assert_allclose(roi_vectors(maps, atlas, ids, matrix=indicator(atlas, ids)), mean)
    with pytest.raises(ValueError, match="reduction"):
        indicator(atlas, ids, "median")


def test_cosine_of_hand_made_vectors():
    v = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 2.0], [0.0, 0.0, 0.0], [3.0, 3.0, 0.0]])
    sim = cosine_matrix(v)
    assert sim[0, 1] == pytest.approx(1 / np.sqrt(2))
    assert sim[0, 2] == 0 and sim[1, 4] == pytest.approx(1.0)  # scale does not matter
    assert sim[3, 0] == 0 and sim[3, 3] == 1  # a zero vector: 0 with others, 1 on the diagonal
    np.testing.assert_allclose(sim, sim.T)
    assert cosine(v[0], v[1]) == pytest.approx(sim[0, 1]) and cosine(v[3], v[0]) == 0


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_above_mean_normalisation_removes_a_dense_maps_offset(reduction):
    atlas = labels()
    ids = [3, 7, 9]
    m = indicator(atlas, ids, reduction)
    inside = np.isin(atlas, ids)
    # a constant map holds no more relevance anywhere than on average: a zero vector
    const = np.full((*atlas.shape, 1), 0.7, np.float32)
    np.testing.assert_allclose(above_mean(roi_vectors(const, atlas, ids, reduction, matrix=m), m), 0, atol=1e-5)
    # offset + ROI 7's indicator: ROI 7 alone stands out, by 1 minus the brain mean of the indicator
    bump = 0.5 + (atlas == 7).astype(np.float32)[..., None]
    v = above_mean(roi_vectors(bump, atlas, ids, reduction, matrix=m), m)
    excess = 1 - 12 / inside.sum()
    np.testing.assert_allclose(v[0], [0, excess * (12 if reduction == "sum" else 1), 0], atol=1e-6)
    # by hand, voxel-wise: reduction of (map - brain mean), then clipped
    rng = np.random.default_rng(1)
    maps = rng.random((*atlas.shape, 3)).astype(np.float32)
    centred = maps - maps[inside].mean(0)
    hand = np.clip(roi_vectors(centred, atlas, ids, reduction), 0, None)
    np.testing.assert_allclose(above_mean(roi_vectors(maps, atlas, ids, reduction, matrix=m), m), hand, atol=1e-5)


def test_dense_random_maps_look_alike_until_their_offset_is_removed():
    atlas = labels()
    ids = [3, 7, 9]
    m = indicator(atlas, ids)
    rng = np.random.default_rng(2)
    maps = 1 + rng.random((*atlas.shape, 2)).astype(np.float32)  # two unrelated dense maps
    raw = roi_vectors(maps, atlas, ids, matrix=m)
    assert cosine(raw[0], raw[1]) > 0.95
    norm = above_mean(raw, m)
    assert cosine(norm[0], norm[1]) < 0.9


def test_paint_rois_puts_each_rois_value_on_its_voxels_and_zero_elsewhere():
    from robustmaps.roi import paint_rois, roi_outline

    atlas = labels()
    painted = paint_rois(atlas, [3, 7, 9], [0.5, np.nan, 2.0])
    assert painted.shape == atlas.shape
    assert np.all(painted[atlas == 3] == 0.5)
    assert np.all(painted[atlas == 7] == 0)     # NaN paints 0
    assert np.all(painted[atlas == 9] == 2.0)
    assert np.all(painted[atlas == 0] == 0)
    # painting then reducing by the mean gives the values back
    back = roi_vectors(painted[..., None], atlas, [3, 9], "mean")
    np.testing.assert_allclose(back, [[0.5, 2.0]], atol=1e-6)
    with pytest.raises(ValueError):
        paint_rois(atlas, [3, 7], [1.0])
    outline = roi_outline(atlas, [7, 9])
    assert outline.sum() == 14 and set(np.unique(outline)) == {0, 1}
