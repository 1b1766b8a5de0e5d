from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from robustmaps.masks import (
    MaskSettings,
    RelativeTolerance,
    area_term,
    masked,
    optimise_group,
    optimise_independent,
    score_term,
    threshold,
    tv_term,
)


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


def test_relative_tolerance_handles_negative_losses_and_losses_at_zero():
    """Log-odds losses are negative once the class flips and cross 0 on the way: the rule is
    relative to |lowest| floored at LOSS_FLOOR, so (a) negative curves stop as positive ones do,
    (b) a loss flat at 0 (float noise either side) never counts as worse (a division by the
    lowest value called +2e-9 three times worse than -1e-9 and stopped), (c) no 0/0 warning."""
    import warnings

    stop = RelativeTolerance(1, patience=3, tol=0.05)
    curve = [2.0, 0.5, -1.0, -3.0, -2.9, -2.0, -1.0, -0.5]  # best -3; above -2.85 is "worse"
    assert [bool(stop.step(v)[1][0]) for v in curve] == [False] * 7 + [True]
    flat = RelativeTolerance(1, patience=2, tol=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0/0 and inf - inf must not warn
        decisions = [bool(flat.step(v)[1][0]) for v in (0.3, 1e-9, -1e-9, 2e-9, -2e-9, 1e-9, 3e-9, 0.0, 0.0)]
        many = RelativeTolerance(2, patience=1, tol=0.05)
        many.step([0.0, 1.0])
        many.step([0.0, 2.0])  # the second stops
        many.step([0.0, np.inf])  # a stopped mask's placeholder loss
    assert not any(decisions)
    assert many.stopped.tolist() == [False, True]
    jump = RelativeTolerance(1, patience=1, tol=0.05)
    jump.step(-1e-9)
    assert jump.step(0.5)[1][0]  # a real rise from 0 still counts


def test_mean_norm_divides_by_voxels_and_difference_terms():
    """norm: mean averages the penalties (Fong & Vedaldi's implementations): the area over the
    voxels, the TV over the forward differences; a tiled grid keeps its means (its sums double)."""
    m = torch.tensor([1.0, 0.5, 0.0, 0.9995, 0.75, 1.0, 1.0, 1.0]).view(1, 1, 2, 2, 2)
    assert float(area_term(m, 1.0, norm="mean")[0]) == pytest.approx((0.5 + 1.0 + 0.25) / 8)
    v = m[0, 0].numpy()
    by_hand = sum(np.abs(np.diff(v, axis=a)).sum() for a in range(3))
    assert float(tv_term(m, 1.0, norm="mean")[0]) == pytest.approx(by_hand / 12)  # 3 axes x 4 pairs
    big = torch.cat([m, m], dim=2)  # (4, 2, 2): 16 voxels, 3*4 + 8 + 8 = 28 differences
    assert float(area_term(big, 1.0, norm="mean")[0]) == pytest.approx(float(area_term(m, 1.0, norm="mean")[0]))
    assert float(tv_term(big, 1.0, norm="mean")[0]) == pytest.approx(float(tv_term(big, 1.0)[0]) / 28)
    with pytest.raises(ValueError, match="sum, mean"):
        MaskSettings(norm="max")


def test_mean_norm_lets_the_score_win_where_sums_do_not():
    """The norm decides what l1 and l2 mean: l1 = l2 = 1 summed over the 216 voxels of TinyNet's
    grid outweighs the score (the mask cannot lower it), averaged it does not."""
    images = torch.rand(2, 1, 6, 6, 6, generator=torch.Generator().manual_seed(0)) * 0.3
    net = TinyNet().eval()
    out = {}
    for norm in ("sum", "mean"):
        mask, _, _ = optimise_independent(net, images, MaskSettings(l1=1.0, l2=1.0, norm=norm), max_epochs=60,
                                          patience=10, tol=0.01)
        with torch.no_grad():
            out[norm] = score_term(net, masked(images, mask), 1)
    assert (out["mean"] < 0.5).all() and (out["sum"] > 0.5).all()


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
    batch, hist, _ = optimise_independent(net, images, settings, max_epochs=60, patience=5, tol=0.01)
    for i in range(3):
        one, _, _ = optimise_independent(net, images[i:i + 1], settings, max_epochs=60, patience=5, tol=0.01)
        torch.testing.assert_close(batch[i:i + 1], one, atol=1e-5, rtol=1e-5)
    # the masks lowered the AD score and each stopped on its own
    last = {}
    for row in hist:
        last[row["mask"]] = row
    assert all(r["score"] < 0.5 for r in last.values())


def test_independent_masks_score_the_mask_after_each_update():
    """Study 2.3.5: the loss is evaluated at the end of each epoch, so epoch e names the mask after
    its e-th update and the all-ones start is never kept. With huge penalties the start has the
    lowest loss (0 penalty): scoring before the step kept it (best epoch 0 = all ones)."""
    torch.manual_seed(0)
    net = TinyNet().eval()
    images = torch.rand(2, 1, 6, 6, 6) * 0.3
    settings = MaskSettings(l1=10.0, l2=10.0, threshold=1.0)  # threshold 1: the mask as optimised
    mask, hist, stats = optimise_independent(net, images, settings, max_epochs=10, patience=3, tol=0.01)
    with torch.no_grad():
        start = score_term(net, images, settings.target).numpy()  # the all-ones mask's loss
    for i in range(2):
        rows = [h for h in hist if h["mask"] == i]
        assert [h["epoch"] for h in rows] == list(range(stats[i]["epochs"]))  # one row per update
        assert min(h["loss"] for h in rows) > start[i]  # the case: the start would have won
        assert rows[0]["area"] > 0  # epoch 0 is the mask after one update
        assert stats[i]["best_epoch"] >= 0
        assert rows[stats[i]["best_epoch"]]["loss"] == min(h["loss"] for h in rows)
        assert (mask[i] < 1).any()  # an optimised mask, not the start
    # no epochs: nothing optimised, the start and no best epoch
    ones, hist0, stats0 = optimise_independent(net, images, settings, max_epochs=0)
    assert bool((ones == 1).all()) and hist0 == [] and stats0[0] == {"epochs": 0, "best_epoch": -1,
                                                                      "stopped_early": False}


def test_group_mask_scores_the_mask_after_each_epoch():
    """Study 2.3.5 for group masks: epoch e's validation loss is that of the mask after epoch e's
    updates, and the mask kept is one of those even where the unmasked start (history epoch -1)
    has the lowest loss. (A guard: optimise_group already scored after its updates.)"""
    store = np.random.default_rng(0).uniform(0, 0.3, (10, 12, 12, 12)).astype(np.float32)
    settings = MaskSettings(l1=10.0, l2=10.0, threshold=1.0)
    mask, hist, _ = optimise_group(BoxDetector().eval(), store, np.arange(8), np.arange(8, 10), settings,
                                   batch_size=8, max_epochs=6, patience=2, tol=0.05)
    run = [h for h in hist if h["epoch"] >= 0]
    assert hist[0]["epoch"] == -1 and min(h["validation_loss"] for h in run) > hist[0]["validation_loss"]
    assert run[0]["area"] > 0 and (mask < 1).any()
    best = min(run, key=lambda h: h["validation_loss"])
    assert float(area_term(mask, settings.b1, settings.eps)[0]) == pytest.approx(best["area"], rel=1e-5)


def test_group_mask_finds_the_planted_region(trained_model):
    from robustmaps.preprocess import StoreReader
    from robustmaps.trained import load_trained

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


def test_mask_summary_records_voxels_penalties_and_coverage():
    from robustmaps.masks import mask_summary

    m = np.ones((4, 5, 6), np.float32)
    m[0, 0, :3] = 0.5
    s = mask_summary(m, MaskSettings(l1=1e-4, l2=1e-3, b1=1.0, b2=1.0), score_before=0.9, score_after=0.1)
    assert s["voxels"] == 120 and s["coverage"] == pytest.approx(3 / 120)
    assert s["area"] == pytest.approx(1.5) and s["area_penalty"] == pytest.approx(1.5e-4)
    assert s["tv"] == pytest.approx(float(tv_term(torch.from_numpy(m)[None, None], 1.0)[0]))
    assert s["min"] == 0.5 and s["score_after"] == 0.1
    assert s["norm"] == "sum" and s["score"] == "probability"
    mean = mask_summary(m, MaskSettings(l1=1e-4, l2=1e-3, b1=1.0, b2=1.0, norm="mean"), score_before=0.9,
                        score_after=0.1)
    assert mean["norm"] == "mean" and mean["area"] == pytest.approx(1.5 / 120)
    assert mean["area_penalty"] == pytest.approx(1e-4 * 1.5 / 120)


def test_settings_from_reads_norm_and_the_score_names():
    """Config values -> MaskSettings: norm defaults to sum where the params predate it; the
    scores are probability | log_odds, and the old name 'logit' fails with the valid names
    (it used to be taken silently: any name but 'logit' meant the probability)."""
    from robustmaps.masks import settings_from

    base = {k: MASK_PARAMS[k] for k in ("l1", "l2", "b1", "b2", "lr", "threshold", "eps")}
    s = settings_from({**base, "score": "log_odds"}, 1, 100.0)
    assert s.norm == "sum" and s.score == "log_odds" and s.l1 == pytest.approx(0.1)
    assert settings_from({**base, "score": "probability", "norm": "mean"}, 1).norm == "mean"
    for bad in ("logit", "prob"):
        with pytest.raises(ValueError, match="probability, log_odds"):
            settings_from({**base, "score": bad}, 1)


class BoxDetector(torch.nn.Module):
    """A fixed 'AD detector': the AD logit falls as the mean of a central box rises (restoring GM
    there removes the evidence). Unmasked images score about 0.95, a fully masked box about 0."""

    def __init__(self, size=12, box=slice(3, 9)):
        super().__init__()
        w = torch.zeros(1, 1, size, size, size)
        w[..., box, box, box] = -1.0 / float((box.stop - box.start) ** 3)
        self.w = torch.nn.Parameter(w, requires_grad=False)

    def forward(self, x):
        s = (x * self.w).flatten(1).sum(1) * 7.6 + 2.64
        return torch.stack([-s, s], 1)


def sweep_coverage(**kw) -> float:
    store = np.random.default_rng(0).uniform(0, 0.3, (10, 12, 12, 12)).astype(np.float32)
    settings = MaskSettings(**{"l1": 1e-4, "l2": 1e-3, **kw})
    mask, hist, _ = optimise_group(BoxDetector().eval(), store, np.arange(8), np.arange(8, 10), settings,
                                   batch_size=4, max_epochs=60, patience=10, tol=0.05)
    assert hist[-1]["validation_score"] < 0.1, kw  # every point of the sweep still does its job
    return float((mask < 0.95).float().mean())


def test_sweep_reproduces_the_papers_trends_on_a_fixed_model():
    """Study 3.1: coverage falls as l1 grows, grows with l2; b1 = 2 gives the densest mask."""
    l1 = [sweep_coverage(l1=v) for v in (1e-4, 1e-3, 1e-2)]
    assert l1[0] >= l1[1] >= l1[2] and l1[0] > l1[2]
    l2 = [sweep_coverage(l2=v) for v in (1e-4, 1e-3, 3e-3)]
    assert l2[0] <= l2[1] <= l2[2] and l2[0] < l2[2]
    b1 = {v: sweep_coverage(b1=v) for v in (0.1, 0.5, 1.0, 2.0)}
    assert max(b1, key=b1.get) == 2.0 and b1[2.0] > 0.9


def test_flagged_table_aggregates_events_per_image():
    from robustmaps.masks import FLAGGED_COLUMNS, flagged_table

    index = pd.DataFrame({"participant_id": ["sub-A", "sub-B", "sub-C"], "session_id": ["ses-M000"] * 3})
    events = [{"epoch": e, "row": 2, "score": s, "batch_median_score": 0.01, "loss": 5.0, "previous_loss": 1.0}
              for e, s in ((3, 0.9), (5, 0.95))]
    events.append({"epoch": 4, "row": 0, "score": 0.5, "batch_median_score": 0.02, "loss": 3.0, "previous_loss": 1.0})
    t = flagged_table(events, index)
    assert list(t.columns) == FLAGGED_COLUMNS and t.participant_id.tolist() == ["sub-C", "sub-A"]
    assert t.iloc[0].times_flagged == 2 and t.iloc[0].first_epoch == 3 and t.iloc[0].max_score == 0.95
    assert t.iloc[0].max_loss_jump == 5.0
    assert flagged_table([], index).empty
    # log-odds losses are negative: a rise from -4 to -1 is a jump of 1 + 3/4, not a ratio of 0.25
    neg = [{"epoch": 1, "row": 1, "score": 2.0, "batch_median_score": -5.0, "loss": -1.0, "previous_loss": -4.0}]
    assert flagged_table(neg, index).iloc[0].max_loss_jump == pytest.approx(1.75)


@pytest.mark.parametrize("score", ["probability", "log_odds"])
def test_jump_qc_flags_the_image_that_the_mask_cannot_explain(score):
    """Second QC step (2.3.1): an image whose AD evidence lies outside what a group mask can
    remove (here: a much darker box) keeps a high masked score and makes its batches' loss jump.
    With log-odds (negative once the class flips) the jump is a relative change, not a ratio."""
    store = np.random.default_rng(1).uniform(0, 0.3, (9, 12, 12, 12)).astype(np.float32)
    store[4, 3:9, 3:9, 3:9] = -3.0  # a defect: masking to 1 cannot lift this box's mean enough
    net = BoxDetector().eval()
    _, hist, flagged = optimise_group(net, store, np.arange(8), np.array([8]),
                                      MaskSettings(l1=1e-4, l2=1e-3, score=score), batch_size=2, max_epochs=15,
                                      patience=15, tol=0.05, jump_factor=5)
    assert flagged and {f["row"] for f in flagged} == {4}
    if score == "log_odds":  # the score really is the log-odds (it used to fall back to the probability)
        assert hist[-1]["validation_score"] < 0
    _, _, none = optimise_group(net, store, np.arange(8), np.array([8]), MaskSettings(l1=1e-4, l2=1e-3),
                                batch_size=2, max_epochs=3, patience=15, tol=0.05, jump_factor=0)
    assert none == []


MASK_PARAMS = {"l1": 1e-3, "l2": 1e-2, "b1": 0.1, "b2": 1.0, "lr": 0.1, "score": "probability", "threshold": 0.95,
               "eps": 1e-3, "batch_size": 6, "seed": 0, "include_validation": True, "max_images": None,
               "max_epochs": 30, "patience": 5, "tol": 0.05, "jump_factor": 10, "validation_fraction": 0.25}


def tiny_grids():
    from conftest import TINY_SHAPE

    from robustmaps.grid import Grid

    working = Grid(TINY_SHAPE, 6.0, (-40.0, -50.0, -40.0))
    native = Grid(tuple(2 * s for s in TINY_SHAPE), 3.0, (-41.5, -51.5, -41.5))  # same box, half voxels
    return {"working": working.to_config(), "native": native.to_config()}


def group_outputs(root, name):
    return {k: root / f"{name}-{k}.{ext}" for k, ext in (("mask", "nii.gz"), ("native", "nii.gz"), ("history", "tsv"),
                                                         ("summary", "tsv"), ("flagged", "tsv"))}


def test_group_mask_entry_writes_masks_on_both_grids_and_a_summary(trained_model, tmp_path):
    import nibabel as nib

    from robustmaps.grid import Grid
    from robustmaps.jobs.masks import group_mask

    t, grids = trained_model, tiny_grids()
    out = group_outputs(tmp_path, "a")
    group_mask(t["model"], t["store"], t["index"], t["train"], t["validation"], out, target="AD",
               params=MASK_PARAMS, grids=grids, device="cpu", threads=1)
    img = nib.load(out["mask"])
    assert Grid.from_config(grids["working"]).matches(img.shape, img.affine)
    m = np.asarray(img.dataobj)
    native = nib.load(out["native"])
    assert Grid.from_config(grids["native"]).matches(native.shape, native.affine)
    # the native mask is the same mask: its mean 1 - m agrees with the working grid's
    assert (1 - np.asarray(native.dataobj)).mean() == pytest.approx((1 - m).mean(), rel=0.35, abs=1e-3)
    s = pd.read_csv(out["summary"], sep="\t").iloc[0]
    assert s.voxels == m.size and s.coverage == pytest.approx((m < 0.95).mean())
    assert s.area_penalty == pytest.approx(1e-3 * s.area) and s.score_after < 0.5 < s.score_before
    # the probability score: probabilities recorded equal the score
    assert s.probability_after == pytest.approx(s.score_after) and s.probability_before == pytest.approx(
        s.score_before)
    labels = t["labels"]
    assert s.n_validation <= (labels[36:] == 1).sum() and s.n_images > s.n_validation  # validation included
    hist = pd.read_csv(out["history"], sep="\t")
    assert hist.epoch.iloc[0] == -1 and len(hist) == s.epochs + 1
    # leaving the validation images out of the optimisation, and CN masks
    out2 = group_outputs(tmp_path, "b")
    group_mask(t["model"], t["store"], t["index"], t["train"], t["validation"], out2, target="CN",
               params={**MASK_PARAMS, "include_validation": False, "max_epochs": 3}, grids=grids, device="cpu")
    s2 = pd.read_csv(out2["summary"], sep="\t").iloc[0]
    assert s2.target == "CN" and s2.n_images <= (labels[:36] == 0).sum()


def test_group_mask_without_validation_table_holds_out_a_seeded_fraction(trained_model, tmp_path):
    from robustmaps.jobs.masks import group_mask

    t = trained_model
    sums = []
    for name in ("a", "b"):
        out = group_outputs(tmp_path, name)
        group_mask(t["model"], t["store"], t["index"], t["train"], None, out, target="AD",
                   params={**MASK_PARAMS, "max_epochs": 2}, grids=tiny_grids(), device="cpu")
        sums.append(pd.read_csv(out["summary"], sep="\t").iloc[0])
        assert sums[-1].n_validation == round(0.25 * (sums[-1].n_images)) or sums[-1].n_validation >= 1
    assert sums[0].equals(sums[1])  # seeded: the same split and the same mask


@pytest.mark.parametrize("score", ["probability", "log_odds"])
def test_session_masks_entry_stacks_one_mask_per_target_session(trained_model, tmp_path, score):
    import nibabel as nib

    from robustmaps.jobs.masks import session_masks

    t = trained_model
    params = {**MASK_PARAMS, "l1": 1e-4, "l2": 1e-3, "penalty_scale": 1.0, "max_epochs": 40, "patience": 40,
              "tol": 0.01, "max_batch": 4, "score": score}
    out = {k: tmp_path / f"{k}.{e}" for k, e in (("masks", "nii.gz"), ("native", "nii.gz"), ("index", "tsv"),
                                                  ("history", "tsv"))}
    session_masks(t["model"], t["store"], t["index"], t["validation"], out, target="AD", params=params,
                  grids=tiny_grids(), device="cpu")
    index = pd.read_csv(out["index"], sep="\t")
    table = pd.read_csv(t["validation"], sep="\t")
    assert index.participant_id.tolist() == table[table.label == 1].participant_id.tolist()
    assert index.volume.tolist() == list(range(len(index))) and (index.epochs <= 40).all()
    vol = nib.load(out["masks"])
    assert vol.shape == (*t["images"].shape[1:], len(index)) and vol.get_data_dtype() == np.int16
    data = np.asarray(vol.dataobj)
    np.testing.assert_allclose((data < 0.95).mean((0, 1, 2)), index.coverage, atol=1e-3)
    assert index.score_after.mean() < index.score_before.mean()
    assert index.probability_after.between(0, 1).all() and index.probability_before.between(0, 1).all()
    assert index.probability_after.mean() < index.probability_before.mean()
    if score == "probability":  # the scores are the probabilities: not computed twice
        np.testing.assert_array_equal(index.probability_after, index.score_after)
    else:  # log-odds: the probabilities come from their own pass
        assert (index.score_before > 1).any() and not np.allclose(index.probability_before, index.score_before)
    assert nib.load(out["native"]).shape[-1] == len(index)
    hist = pd.read_csv(out["history"], sep="\t")
    assert set(hist.volume) == set(index.volume)


def test_to_native_upsamples_and_keeps_one_outside_a_cropped_box():
    from robustmaps.grid import Grid
    from robustmaps.volumes import to_native

    native = Grid((20, 20, 20), 2.0, (0.0, 0.0, 0.0))
    working = native.coarsened(4.0).cropped([[0, 40], [10, 30], [0, 40]])
    m = np.full(working.shape, 0.25, np.float32)
    up = to_native(m, working.to_config(), native.to_config())
    assert up.shape == native.shape
    inside = up[:, 10, :]  # every voxel of the box, its rim (outside the outermost voxel centres) included
    np.testing.assert_allclose(inside, 0.25, atol=1e-6)
    assert np.all(up[:, :2, :] == 1.0)
    # one perturbed voxel: upsampling keeps its mass (the mean of 1 - m)
    hole = np.ones(working.shape, np.float32)
    hole[2, 2, 2] = 0.0
    up = to_native(hole, working.to_config(), native.to_config())
    box = (up.shape[0] * up.shape[2] * (working.shape[1] * 2))  # native voxels inside the box
    assert (1 - up).sum() / box == pytest.approx((1 - hole).mean(), rel=0.05)
    assert to_native(m, working.to_config(), working.to_config()) is m


def test_mean_reference_is_the_mean_cn_image(trained_model, tmp_path):
    from robustmaps.io import load_nifti
    from robustmaps.jobs.masks import mean_reference
    from robustmaps.volumes import load_reference

    t = trained_model
    grid = tiny_grids()["working"]
    mean_reference(t["store"], t["index"], t["train"], tmp_path / "ref.nii.gz", reference_class="CN", working_grid=grid)
    ref, _ = load_nifti(tmp_path / "ref.nii.gz")
    cn = t["images"][:36][t["labels"][:36] == 0].astype(np.float64).mean(0)
    np.testing.assert_allclose(ref, cn, atol=1e-5)
    mu = load_reference(tmp_path / "ref.nii.gz", ref.shape, "cpu")
    assert tuple(mu.shape) == (1, 1, *ref.shape) and load_reference(None, ref.shape, "cpu") == 1.0


def test_two_byte_stacks_are_finer_than_float16(tmp_path):
    """Per-session stacks are stored in 2 bytes a voxel, as int16 + a scale factor (NIfTI-1 has no
    float16). Every explainer returns maps scaled to [0, 1] per map (test_saliency), so one factor
    per file costs no session its precision: the error is below 1/65534 of a map's peak, about 16 x
    finer than float16 near 1, and the ROI patterns are unchanged (cosine > 0.99999)."""
    import nibabel as nib

    from robustmaps.roi import cosine, roi_vectors
    from robustmaps.volumes import write_volumes

    grids = tiny_grids()
    rng = np.random.default_rng(0)
    shape = tuple(grids["working"]["shape"])
    raw = np.abs(rng.standard_t(2, size=(*shape, 4))) * np.array([1e-3, 1e-5, 1e-7, 1e-8])  # raw gradients
    maps = (raw / raw.max((0, 1, 2))).astype(np.float32)  # as the explainers return them
    write_volumes(maps, grids, tmp_path / "maps.nii.gz", None, dtype=np.int16, fill=0.0)
    assert not list(tmp_path.glob("*native*"))  # no native copy asked for
    img = nib.load(tmp_path / "maps.nii.gz")
    assert img.get_data_dtype() == np.int16 and img.dataobj.slope < 1 / 30000
    stored = np.asarray(img.dataobj, np.float32)
    err, half = np.abs(stored - maps).max(), np.abs(maps.astype(np.float16).astype(np.float32) - maps).max()
    assert err <= 1 / 65534 + 1e-7 and err < half / 10
    atlas = (np.arange(np.prod(shape)).reshape(shape) % 12 + 1).astype(np.int16)
    ref, got = roi_vectors(maps, atlas, range(1, 13)), roi_vectors(stored, atlas, range(1, 13))
    assert min(cosine(a, b) for a, b in zip(ref, got)) > 0.99999


def test_second_qc_exclusion_is_cohort_wide(trained_model, tmp_path, monkeypatch):
    """masks.group.jump_action: exclude (study 2.3.1: the image that made the loss jump was removed
    from the data and the mask optimised again). A screening pass flags images per model; the
    cohort's list (cohort_exclusions) holds every flagged session once, and every group mask of the
    cohort is then optimised without them, also a model that never flagged them. A model none of
    whose images is excluded keeps its screening mask, copied bit for bit."""
    import robustmaps.jobs.masks as masks

    t = trained_model
    index = pd.read_csv(t["index"], sep="\t")
    calls, done = [], []
    real = masks.optimise_group

    def spy(model, store, train, val, settings, **kw):
        calls.append((np.array(train), np.array(val)))
        mask, hist, _ = real(model, store, train, val, settings, **{**kw, "max_epochs": 2})
        event = {"epoch": 0, "row": int(train[0]), "score": 0.9, "batch_median_score": 0.1, "loss": 0.9,
                 "previous_loss": 0.1}
        return mask, hist, ([event] if len(calls) == 1 and not done else [])  # only the first screening flags

    monkeypatch.setattr(masks, "optimise_group", spy)
    params = {**MASK_PARAMS, "jump_action": "exclude"}
    run = dict(target="AD", params=params, grids=tiny_grids(), device="cpu")
    screen_a, screen_b = group_outputs(tmp_path, "screen-a"), group_outputs(tmp_path, "screen-b")
    masks.group_mask(t["model"], t["store"], t["index"], t["train"], t["validation"], screen_a, **run)
    flagged_row = int(calls[0][0][0])
    done.append(True)
    masks.group_mask(t["model"], t["store"], t["index"], t["train"], t["validation"], screen_b, **run)
    # a second model that flagged nothing (here: the same images, another screening job)
    table = masks.cohort_exclusions({"fold-0/seed-0": screen_a["flagged"], "fold-1/seed-0": screen_b["flagged"]},
                                    tmp_path / "excluded.tsv")
    session = (index.participant_id.iloc[flagged_row], index.session_id.iloc[flagged_row])
    assert list(zip(table.participant_id, table.session_id)) == [session]
    assert table.flagged_by.tolist() == [1] and table.models.tolist() == ["fold-0/seed-0"]
    # model b never flagged it, yet its mask is optimised again without it (cohort-wide)
    calls.clear()
    final_b = group_outputs(tmp_path, "final-b")
    masks.group_mask(t["model"], t["store"], t["index"], t["train"], t["validation"], final_b,
                     excluded_tsv=tmp_path / "excluded.tsv", screen=screen_b, **run)
    assert len(calls) == 1 and flagged_row not in calls[0][0] and flagged_row not in calls[0][1]
    summary = pd.read_csv(final_b["summary"], sep="\t")
    assert summary.excluded_images.iloc[0] == 1 and summary.n_images.iloc[0] + summary.n_validation.iloc[0] == (
        pd.read_csv(screen_b["summary"], sep="\t")[["n_images", "n_validation"]].sum(axis=1).iloc[0] - 1)
    # model a's flagged table keeps its screening flag, marked excluded
    final_a = group_outputs(tmp_path, "final-a")
    masks.group_mask(t["model"], t["store"], t["index"], t["train"], t["validation"], final_a,
                     excluded_tsv=tmp_path / "excluded.tsv", screen=screen_a, **run)
    flagged = pd.read_csv(final_a["flagged"], sep="\t")
    assert list(zip(flagged.participant_id, flagged.session_id)) == [session] and flagged.excluded.tolist() == [True]
    # nothing of this model excluded: no optimisation, the screening files copied as they are
    calls.clear()
    other = index.drop(index.index[[flagged_row]]).iloc[:0]  # an empty list: nothing excluded
    masks.write_tsv(other[["participant_id", "session_id"]], tmp_path / "none.tsv")
    final_c = group_outputs(tmp_path, "final-c")
    masks.group_mask(t["model"], t["store"], t["index"], t["train"], t["validation"], final_c,
                     excluded_tsv=tmp_path / "none.tsv", screen=screen_b, **run)
    assert calls == []
    assert all(final_c[k].read_bytes() == screen_b[k].read_bytes() for k in final_c)
    # ... which is what optimising again would give (on CPU, bit for bit)
    again = group_outputs(tmp_path, "again")
    masks.group_mask(t["model"], t["store"], t["index"], t["train"], t["validation"], again,
                     excluded_tsv=tmp_path / "none.tsv", **run)
    assert len(calls) == 1 and [k for k in again if again[k].read_bytes() != screen_b[k].read_bytes()] == []


def test_prob_cnn_scores_masks_between_cohorts_both_ways(trained_model, tmp_path):
    """prob_CNN between cohorts (study 2.4), both ways: the other cohort's mask on the model's main
    validation images, and the main mask on the model's correctly classified images of the other
    cohort. An all-ones mask changes nothing, so both equal the unmasked mean AD probability of
    those images; a mask that restores GM in the planted box lowers it."""
    from conftest import TINY_BOX

    from robustmaps.io import save_nifti
    from robustmaps.jobs.analysis import prob_cnn_entry
    from robustmaps.preprocess import open_store
    from robustmaps.splits import read_split_rows
    from robustmaps.trained import load_trained, predict

    t = trained_model
    shape = t["images"].shape[1:]
    ones, box = np.ones(shape, np.float32), np.ones(shape, np.float32)
    box[TINY_BOX] = 0.0
    save_nifti(ones, np.eye(4), tmp_path / "ones.nii.gz")
    save_nifti(box, np.eye(4), tmp_path / "box.nii.gz")
    models = [{"fold": 0, "seed": 0, "model": str(t["model"]), "validation": str(t["validation"]),
               "mask": str(tmp_path / "box.nii.gz"), "independent": str(tmp_path / "ones.nii.gz")}]
    out = {k: tmp_path / f"{k}.{e}" for k, e in (("pairs", "tsv"), ("summary", "tsv"), ("matrices", "png"))}
    # the "other cohort": the training images of the tiny cohort (its train table)
    prob_cnn_entry(models, t["store"], t["index"], out, target="AD", device="cpu",
                   other={"store": t["store"], "index": t["index"], "table": t["train"]})
    pairs = pd.read_csv(out["pairs"], sep="\t").set_index("family")
    model, _ = load_trained(t["model"])
    store, index = open_store(t["store"], t["index"])
    val = read_split_rows(t["validation"], index)
    rows = val.row.to_numpy()[val.label.to_numpy() == 1]
    p = predict(model, store, rows)
    correct = rows[p.argmax(1) == 1]
    assert pairs.loc["cohorts_other_on_main"].probability == pytest.approx(float(predict(model, store, correct)[:, 1].mean()),
                                                                           rel=1e-5)
    assert pairs.loc["cohorts_main_on_other"].n_images > 0
    assert pairs.loc["cohorts_main_on_other"].probability < 0.5  # the box mask removes the AD evidence


KILL_CHILD = """
import json, os, signal, sys
from pathlib import Path
sys.path[:0] = [sys.argv[2], str(Path(sys.argv[2]).parent)]  # test_masks and conftest
from robustmaps import checkpoints
from robustmaps.jobs import masks

a = json.loads(Path(sys.argv[1]).read_text())
real = checkpoints.Checkpoint.step
calls = []

def step(self, state_fn):
    real(self, state_fn)
    calls.append(1)
    if len(calls) == a["after"]:  # the cluster kills the job here
        os.kill(os.getpid(), getattr(signal, a["signal"]))

checkpoints.Checkpoint.step = step
from test_masks import tiny_grids
entry = getattr(masks, a["entry"])
entry(*a["args"], {k: Path(v) for k, v in a["out"].items()}, target="AD", params=a["params"], grids=tiny_grids(),
      device="cpu", checkpoint=a["checkpoint"], checkpoint_minutes=a["minutes"])
print("finished")
"""


def killed_then_rerun(tmp_path, entry, args, out, params, *, after, sig, minutes=0.0):
    """Run ``robustmaps.jobs.masks.<entry>`` in a process that a signal ends after its ``after``-th epoch offered
    to the checkpoint; returns (process, the re-run's log text)."""
    import json
    import logging
    import subprocess
    import sys

    spec = tmp_path / f"{entry}-{sig}.json"
    ck = str(tmp_path / "checkpoints" / f"{entry}.ckpt")
    spec.write_text(json.dumps({"entry": entry, "args": [str(a) if a else None for a in args],
                                "out": {k: str(v) for k, v in out.items()}, "params": params, "checkpoint": ck,
                                "minutes": minutes, "after": after, "signal": sig}))
    proc = subprocess.run([sys.executable, "-c", KILL_CHILD, str(spec), str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=600)
    assert "finished" not in proc.stdout and not any(Path(v).exists() for v in out.values())
    handler = logging.StreamHandler(stream := __import__("io").StringIO())
    logging.getLogger("robustmaps").addHandler(handler)
    logging.getLogger("robustmaps").setLevel(logging.INFO)
    try:
        import robustmaps.jobs.masks as masks

        getattr(masks, entry)(*args, out, target="AD", params=params, grids=tiny_grids(), device="cpu",
                              checkpoint=ck, checkpoint_minutes=minutes)
    finally:
        logging.getLogger("robustmaps").removeHandler(handler)
    assert not list((tmp_path / "checkpoints").glob("*"))  # removed once the outputs are written
    return proc, stream.getvalue()


@pytest.mark.parametrize("sig,minutes,resumed_after", [("SIGKILL", 0.0, 1), ("SIGTERM", 60.0, 2)])
def test_killed_group_mask_resumes_to_the_same_bytes(trained_model, tmp_path, sig, minutes, resumed_after):
    """A group mask killed mid-optimisation (SIGKILL after epoch 1's checkpoint, written every
    epoch; or SIGTERM during epoch 2 with an interval that has not come, so that only SIGTERM
    writes one, at the end of the epoch in flight, and the job exits with 143) resumes from its
    checkpoint to the bytes of an uninterrupted run."""
    from robustmaps.jobs.masks import group_mask

    t = trained_model
    params = {**MASK_PARAMS, "max_epochs": 6, "patience": 6, "jump_action": "report"}
    args = (t["model"], t["store"], t["index"], t["train"], t["validation"])
    ref = group_outputs(tmp_path, "ref")
    group_mask(*args, ref, target="AD", params=params, grids=tiny_grids(), device="cpu")
    out = group_outputs(tmp_path, "resumed")
    proc, log = killed_then_rerun(tmp_path, "group_mask", args, out, params, after=2, sig=sig, minutes=minutes)
    assert proc.returncode == (-9 if sig == "SIGKILL" else 143), proc.stderr[-2000:]
    assert f"resuming from {tmp_path / 'checkpoints' / 'group_mask.ckpt'} after epoch {resumed_after}\n" in log
    assert [k for k in out if out[k].read_bytes() != ref[k].read_bytes()] == []


def test_killed_session_masks_resume_the_batch_in_flight_and_keep_the_finished_ones(trained_model, tmp_path):
    """Session masks optimised in batches: killed (SIGKILL) in the second batch, the re-run takes
    the first batch's result from its checkpoint, resumes the second, and writes the bytes of an
    uninterrupted run."""
    from robustmaps.jobs.masks import session_masks

    t = trained_model
    params = {**MASK_PARAMS, "l1": 1e-4, "l2": 1e-3, "penalty_scale": 1.0, "max_epochs": 8, "patience": 8,
              "tol": 0.01, "max_batch": 4}
    args = (t["model"], t["store"], t["index"], t["validation"])
    n_ad = int((pd.read_csv(t["validation"], sep="\t").label == 1).sum())
    assert n_ad > 4  # two batches at least
    files = (("masks", "nii.gz"), ("index", "tsv"), ("history", "tsv"))
    ref = {k: tmp_path / f"ref-{k}.{e}" for k, e in files}
    session_masks(*args, ref, target="AD", params=params, grids=tiny_grids(), device="cpu")
    out = {k: tmp_path / f"out-{k}.{e}" for k, e in files}
    proc, log = killed_then_rerun(tmp_path, "session_masks", args, out, params, after=8 + 3, sig="SIGKILL")
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert "after epoch done" in log and "after epoch 2" in log  # batch 1 kept, batch 2 resumed
    assert [k for k in out if out[k].read_bytes() != ref[k].read_bytes()] == []
