import numpy as np
import pytest
import torch

from robustmaps.masks import (MaskSettings, RelativeTolerance, area_term, masked, optimise_group,
                              optimise_independent, threshold, tv_term)


def test_loss_terms_match_a_hand_computation():
    m = torch.tensor([1.0, 0.5, 0.0, 0.9995, 0.75, 1.0, 1.0, 1.0]).view(1, 1, 2, 2, 2)
    # area: voxels with 1 - m > 1e-3: 0.5, 1.0, 0.25 (0.0005 is below eps)
    assert float(area_term(m, 0.5)[0]) == pytest.approx(0.5 ** 0.5 + 1.0 + 0.25 ** 0.5)
    assert float(area_term(m, 1.0)[0]) == pytest.approx(0.5 + 1.0 + 0.25)
    v = m[0, 0].numpy()
    by_hand = sum(np.abs(np.diff(v, axis=a)).sum() for a in range(3))
    assert float(tv_term(m, 1.0)[0]) == pytest.approx(by_hand)
    by_hand2 = sum((np.diff(v, axis=a) ** 2).sum() for a in range(3))
    assert float(tv_term(m, 2.0)[0]) == pytest.approx(by_hand2, rel=1e-5)
    # sums, not means: doubling the grid (same values tiled) doubles the terms
    big = torch.cat([m, m], dim=2)
    assert float(area_term(big, 1.0)[0]) == pytest.approx(2 * float(area_term(m, 1.0)[0]))
    x = torch.full_like(m, 0.2)
    torch.testing.assert_close(masked(x, m, 1.0), m * 0.2 + (1 - m))


def test_area_gradient_is_finite_at_the_initial_mask():
    m = torch.ones(1, 1, 3, 3, 3, requires_grad=True)
    (area_term(m, 0.1) + tv_term(m, 1.0)).sum().backward()
    assert torch.isfinite(m.grad).all()


def test_threshold_sets_values_above_to_one():
    m = np.array([0.2, 0.95, 0.951, 1.0], dtype=np.float32)
    np.testing.assert_array_equal(threshold(m), np.array([0.2, 0.95, 1.0, 1.0], dtype=np.float32))
    torch.testing.assert_close(threshold(torch.from_numpy(m), 0.5), torch.tensor([0.2, 1.0, 1.0, 1.0]))


def test_relative_tolerance_rule_on_a_synthetic_curve():
    stop = RelativeTolerance(1, patience=3, tol=0.05)
    curve = [1.0, 0.8, 0.82, 0.9, 0.86, 0.85, 0.95]  # best 0.8; > 0.84 is "worse"
    decisions = [bool(stop.step(v)[1][0]) for v in curve]
    # 0.82 within tolerance resets; 0.9, 0.86, 0.85 are 3 worse epochs in a row -> stop at index 5
    assert decisions == [False, False, False, False, False, True, True]
    vec = RelativeTolerance(2, patience=1, tol=0.1)
    vec.step([1.0, 1.0])
    assert vec.step([1.2, 1.05])[1].tolist() == [True, False]


class TinyNet(torch.nn.Module):
    """A fixed linear 'AD detector' on the mean of a box: enough to drive masks."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1, 1, 6, 6, 6), requires_grad=False)
        self.w.data[..., 1:3, 1:3, 1:3] = -1.0

    def forward(self, x):
        s = (x * self.w).flatten(1).sum(1) * 2 + 4
        return torch.stack([-s, s], 1)


def test_batched_masks_equal_masks_optimised_one_by_one():
    torch.manual_seed(0)
    net = TinyNet().eval()
    images = torch.rand(3, 1, 6, 6, 6) * 0.3
    settings = MaskSettings(l1=1e-2, l2=1e-2)
    batch, hist = optimise_independent(net, images, settings, max_epochs=60, patience=5, tol=0.01)
    for i in range(3):
        one, _ = optimise_independent(net, images[i:i + 1], settings, max_epochs=60, patience=5, tol=0.01)
        torch.testing.assert_close(batch[i:i + 1], one, atol=1e-5, rtol=1e-5)
    # the masks lowered the AD score and each stopped on its own
    last = {}
    for row in hist:
        last[row["mask"]] = row
    assert all(r["score"] < 0.5 for r in last.values())


def test_group_mask_finds_the_planted_region(trained_model):
    from robustmaps.preprocess import StoreReader
    from robustmaps.training import load_trained

    model, _ = load_trained(trained_model["model"])
    store = StoreReader(trained_model["store"])
    labels = trained_model["labels"]
    with torch.no_grad():
        x = torch.from_numpy(np.asarray(store[list(range(len(labels)))], dtype=np.float32))[:, None]
        pred = model(x).argmax(1).numpy()
    ad = np.flatnonzero((labels == 1) & (pred == 1))
    train_rows, val_rows = ad[ad < 36], ad[ad >= 36]
    mask, hist, _ = optimise_group(model, store, train_rows, val_rows, MaskSettings(l1=1e-3, l2=1e-2),
                                   batch_size=6, max_epochs=40, patience=5, tol=0.05, seed=0)
    assert hist[-1]["validation_score"] < 0.5 < hist[0]["validation_score"]
    m = mask[0, 0].numpy()
    inside = np.zeros(m.shape, bool)
    inside[trained_model["box"]] = True
    assert (1 - m)[inside].mean() > 3 * (1 - m)[~inside].mean()
    assert 0 < (m < 0.95).mean() < 0.5


def test_point_ids_are_readable_and_distinct():
    from robustmaps.masks import point_id

    assert point_id(0.1, 1, 1e-4, 1e-3) == "b1-0.1_b2-1_l1-1e-04_l2-1e-03"
    assert point_id(2, 3, 0.1, 0.01, lr=0.1) == "b1-2_b2-3_l1-0.1_l2-0.01_lr-0.1"
    grid = [(b1, 1, 1e-4, 1e-3) for b1 in (0.1, 0.5, 1, 2)] + [(0.1, 1, l1, 1e-2) for l1 in (0.1, 0.01, 0.001, 1e-4)]
    assert len({point_id(*p) for p in grid}) == len(grid)


def test_mask_summary_records_voxels_penalties_and_coverage():
    from robustmaps.masks import mask_summary

    m = np.ones((4, 5, 6), np.float32)
    m[0, 0, :3] = 0.5
    s = mask_summary(m, MaskSettings(l1=1e-4, l2=1e-3, b1=1.0, b2=1.0), score_before=0.9, score_after=0.1)
    assert s["voxels"] == 120 and s["coverage"] == pytest.approx(3 / 120)
    assert s["area"] == pytest.approx(1.5) and s["area_penalty"] == pytest.approx(1.5e-4)
    assert s["tv"] == pytest.approx(float(tv_term(torch.from_numpy(m)[None, None], 1.0)[0]))
    assert s["min"] == 0.5 and s["score_after"] == 0.1
