"""Occlusion sensitivity without the windows that change nothing (issue 18, item 3): the
workflow's own loop reproduces monai's OcclusionSensitivity bit for bit when every window runs,
and skipping the windows outside the brain leaves the map as it was."""

import torch

from robustmaps.models import build_model
from robustmaps.saliency import gradients

SHAPE = (12, 14, 12)


def brain(seed=0, n=2):
    """Images with a zero background (Clinica's GM maps outside the brain) around a noisy blob."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros((n, 1, *SHAPE))
    x[:, :, 5:10, 4:11, 5:10] = torch.rand((n, 1, 5, 7, 5), generator=g)
    x[:, :, 0:4, 8:14, 0:4] = 1.0  # a region of exact ones (the coherency pass's background)
    return x.to(memory_format=torch.channels_last_3d)


def model():
    torch.manual_seed(0)
    net = build_model({"name": "paper", "n_blocks": 3, "filters": 2}, SHAPE).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net.to(memory_format=torch.channels_last_3d)


def test_windows_are_monais_and_the_papers_count():
    # 121 x 145 x 121, cube 8, stride 4: 30 x 36 x 30 windows, the last of each axis shifted back inside
    corners = gradients.occlusion_windows((121, 145, 121), 8, 4)
    assert len(corners) == 30 * 36 * 30
    assert corners[:, 0].max() == 113 and corners[:, 1].max() == 137
    assert sorted(set(corners[:, 2].tolist()))[-2:] == [112, 113]


def test_every_window_run_is_monai_bit_for_bit():
    net, x, t = model(), brain(), torch.tensor([1, 0])
    ours = gradients.occlusion(net, x, t, patch=4, stride=2, batch_size=7, skip_unchanged=False)
    ref = gradients._occlusion_monai(net, x, t, patch=4, stride=2, batch_size=7)
    assert ours.shape == ref.shape == (2, *SHAPE)
    assert torch.equal(ours, ref.as_tensor() if hasattr(ref, "as_tensor") else ref)
    assert ours.max() > 0


def test_skipped_windows_change_nothing_and_the_map_is_unchanged():
    net, x, t = model(), brain(1), torch.tensor([1, 1])
    corners = gradients.occlusion_windows(SHAPE, 4, 2)
    for i in range(len(x)):
        skip = gradients.unchanged_windows(x[i:i + 1], corners, 4, "mean_patch")
        assert 0 < int(skip.sum()) < len(corners)  # some outside the brain, not all
        ones = (corners[:, 0] == 0) & (corners[:, 1] >= 8) & (corners[:, 2] == 0)
        assert skip[ones].all() and ones.any()  # the cubes of ones too
        occluded = gradients.occlude_batch(x[i:i + 1], corners[skip], 4, "mean_patch")
        assert torch.equal(occluded, x[i:i + 1].expand_as(occluded))  # exact: zeros x mean = zeros
        kept = gradients.occlude_batch(x[i:i + 1], corners[~skip][:20], 4, "mean_patch")
        assert all(not torch.equal(k, x[i]) for k in kept)  # the others do change the image
    fast = gradients.occlusion(net, x, t, patch=4, stride=2, batch_size=7)
    ref = gradients._occlusion_monai(net, x, t, patch=4, stride=2, batch_size=7)
    ref = ref.as_tensor() if hasattr(ref, "as_tensor") else ref
    # Not bitwise: a skipped window takes the image's score from its own forward pass, and the
    # windows that run are batched differently; a convolution's sums may then round differently
    # (a few float32 ulps of the log-odds, ~1e-6 here). Everything else is the same arithmetic.
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-5)
    assert ref.max() > 1e-3


def test_modes_that_write_a_constant_skip_nothing():
    x = brain()[:1]
    corners = gradients.occlusion_windows(SHAPE, 4, 2)
    assert not gradients.unchanged_windows(x, corners, 4, "mean_img").any()
    assert not gradients.unchanged_windows(x, corners, 4, 0.5).any()


def test_the_separable_window_maximum_is_the_3d_max_pool():
    """unchanged_windows takes each cube's max and min one axis at a time: the same values as a
    3D max pool of the cube (which takes minutes with the rehearsal's 32-voxel cubes at full grid)."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand((1, 1, 17, 19, 13), generator=g)
    x[..., 2:9, 3:12, 1:8] = 0.0
    for patch in (1, 3, 8):
        expected = torch.nn.functional.max_pool3d(x, patch, stride=1)
        assert torch.equal(gradients._window_max(x, patch), expected)
        assert torch.equal(-gradients._window_max(-x, patch), -torch.nn.functional.max_pool3d(-x, patch, stride=1))
