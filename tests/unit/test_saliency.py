"""Saliency family, LOTS, activation maximisation, Sobol and faithfulness (robustmaps.saliency,
robustmaps.faithfulness): hand computations, closed forms and the rule entries on a tiny model."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from robustmaps.settings import Saliency

SHAPE = (8, 10, 8)
SALIENCY = {"target": "predicted", "layer": "auto", "batch_size": 4, "seed": 0,
            "smoothgrad": {"n_samples": 3, "stdev_spread": 0.15},
            "occlusion": {"patch": 4, "stride": 2, "mode": "mean_patch"},
            "lots": {"target": "zero", "layer": "auto", "iterations": 20, "tau": 0.1, "alpha": 1 / 255, "sigma_mm": 6.0},
            "actmax": {"classes": ["AD", "CN"], "start": "other_class", "n_starts": 2, "iterations": 10,
                       "e1": 0.1, "e2": 1e-3}}  # e2 0.1 (the source's) flattens a [0, 1] GM map in a few steps


class TinyCNN(nn.Module):
    """conv -> ReLU -> conv -> ReLU -> global mean -> linear: the CAM layer is 'act2'."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv3d(1, 3, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv3d(3, 4, 3, padding=1, stride=2)
        self.act2 = nn.ReLU()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.act2(self.conv2(self.act1(self.conv1(x)))).mean((2, 3, 4)))


def frozen(model):
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def hand_cam(model, x, target, kind):
    """Grad-CAM / Layer-CAM / HiRes-CAM of one image computed by hand with autograd."""
    x = x.clone().requires_grad_(True)
    a = model.act2(model.conv2(model.act1(model.conv1(x))))
    y = model.fc(a.mean((2, 3, 4)))[0, target]
    (g,) = torch.autograd.grad(y, a)
    if kind == "gradcam":
        cam = (g.mean((2, 3, 4), keepdim=True) * a).sum(1, keepdim=True).relu()
    elif kind == "layercam":
        cam = (g.relu() * a).sum(1, keepdim=True).relu()
    else:
        cam = (g * a).sum(1, keepdim=True).relu()
    return torch.nn.functional.interpolate(cam.detach(), size=x.shape[2:], mode="trilinear", align_corners=False)[0, 0]


@pytest.mark.parametrize("kind", ["gradcam", "layercam", "hirescam"])
def test_cams_equal_a_hand_computation_also_for_a_batch_of_mixed_targets(kind):
    from robustmaps.saliency.cam import CAMs

    model = frozen(TinyCNN())
    x = torch.rand(3, 1, *SHAPE, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([0, 1, 1])  # different classes in one batch: monai's class_score would mix them
    cams = CAMs(model, "auto")
    assert cams.layer == "act2"
    fn = {"gradcam": cams.grad_cam, "layercam": cams.layer_cam, "hirescam": cams.hires_cam}[kind]
    maps = fn(x, target)
    assert maps.shape == (3, *SHAPE)
    for i in range(3):
        torch.testing.assert_close(maps[i], hand_cam(model, x[i:i + 1], int(target[i]), kind), rtol=1e-4, atol=1e-6)
    # not inverted: the map's peak is where the hand computation peaks
    assert int(maps[1].argmax()) == int(hand_cam(model, x[1:2], 1, kind).argmax())


def test_gradcam_pp_and_random_cam_run_on_the_same_hooks_and_random_cam_is_seeded():
    from robustmaps.saliency import Explainer

    model = frozen(TinyCNN())
    x = torch.rand(2, 1, *SHAPE, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([1, 0])
    pp = Explainer(model, "gradcampp", Saliency.of(SALIENCY))(x, t)
    assert pp.shape == (2, *SHAPE) and float(pp.min()) >= 0 and float(pp.max()) == pytest.approx(1.0)
    a = Explainer(model, "randomcam", Saliency.of(SALIENCY))(x, t)
    b = Explainer(model, "randomcam", Saliency.of(SALIENCY))(x, t)
    c = Explainer(model, "randomcam", Saliency.of({**SALIENCY, "seed": 5}))(x, t)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("method", ["smoothgrad", "randomcam"])
def test_random_methods_draw_per_session_whatever_the_batch(method):
    """SmoothGrad's noise and Random-CAM's weights come from (seed, the session's position): the
    maps of 5 sessions are the same in batches of 1, 2 or 5 (up to float rounding of batched
    kernels), a session keeps its map when explained alone at its position, and the seed matters."""
    from robustmaps.saliency import Explainer

    model = frozen(TinyCNN())
    x = torch.rand(5, 1, *SHAPE, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([1, 0, 1, 1, 0])
    settings = {**SALIENCY, "smoothgrad": {"n_samples": 4, "stdev_spread": 0.15}}

    def batched(bs, seed=0):
        e = Explainer(model, method, Saliency.of({**settings, "seed": seed}))
        return torch.cat([e(x[i:i + bs], t[i:i + bs]) for i in range(0, 5, bs)])

    whole = batched(5)
    for bs in (1, 2):
        torch.testing.assert_close(batched(bs), whole, rtol=1e-4, atol=1e-5)
    alone = Explainer(model, method, Saliency.of(settings))(x[3:4], t[3:4], positions=[3])
    torch.testing.assert_close(alone[0], whole[3], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(alone[0], whole[2], atol=1e-3)  # another position, other draws
    assert not torch.allclose(batched(5, seed=1), whole, atol=1e-3)


def test_random_cam_is_the_reference_implementation_relu_of_random_channel_weights():
    """pytorch-grad-cam's RandomCAM (seed 002): weights uniform in [-1, 1] per image and channel on
    the layer's activations, then ReLU, then upsampling (normalisation by the caller)."""
    from robustmaps.saliency.cam import CAMs

    model = frozen(TinyCNN())
    x = torch.rand(3, 1, *SHAPE, generator=torch.Generator().manual_seed(6))
    t = torch.tensor([1, 0, 1])
    maps = CAMs(model, "auto").random_cam(x, t, [7, 8, 9])  # one seed per image
    w = torch.stack([torch.rand(4, generator=torch.Generator().manual_seed(s)) for s in (7, 8, 9)]) * 2 - 1
    a = model.act2(model.conv2(model.act1(model.conv1(x))))
    weighted = (w[..., None, None, None] * a).sum(1, keepdim=True)
    assert float(weighted.min()) < 0  # the ReLU matters for these weights
    hand = torch.nn.functional.interpolate(weighted.relu(), size=SHAPE, mode="trilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(maps, hand, rtol=1e-4, atol=1e-6)
    assert float(maps.min()) >= 0


def test_unknown_layer_and_method_are_refused():
    from robustmaps.saliency import Explainer
    from robustmaps.saliency.cam import resolve_layer

    with pytest.raises(ValueError, match="no layer 'nope'.*conv1"):
        resolve_layer(TinyCNN(), "nope")
    with pytest.raises(ValueError, match="unknown saliency method"):
        Explainer(TinyCNN(), "gradcam3000", Saliency.of(SALIENCY))


def test_default_layer_of_the_paper_cnn_is_the_last_blocks_activation():
    from robustmaps.models import build_model
    from robustmaps.saliency.cam import default_layer

    net = build_model({"name": "paper", "n_blocks": 3, "filters": 4}, (16, 20, 16))
    name = default_layer(net)
    modules = dict(net.named_modules())
    assert isinstance(modules[name], nn.LeakyReLU)
    convs = [n for n, m in net.named_modules() if isinstance(m, nn.Conv3d)]
    assert list(modules).index(name) > list(modules).index(convs[-1])


def test_lots_stops_when_the_distance_is_under_tau():
    from robustmaps.saliency.lots import features, lots, lots_map

    model = frozen(TinyCNN())
    x = torch.rand(3, 1, *SHAPE, generator=torch.Generator().manual_seed(3))
    f = features(model, x, None)
    ft = torch.zeros(2)
    d0 = f.norm(dim=1)
    tau = float(d0.sort().values[1]) * 0.5  # image 0 (closest) may start under tau; others must move
    x_adv, dist, steps = lots(model, x, ft, iterations=2000, tau=tau, alpha=0.02, clamp=None)
    assert (dist <= tau).all()
    assert (steps < 2000).all()
    # an image already within tau takes no step and is unchanged
    under = d0 <= tau
    assert torch.equal(steps[under], torch.zeros_like(steps[under]))
    torch.testing.assert_close(x_adv[under], x[under])
    # with too few iterations it stops at the cap, still above tau
    _, dist2, steps2 = lots(model, x, ft, iterations=2, tau=1e-9, alpha=1e-4)
    assert (steps2 == 2).all() and (dist2 > 1e-9).all()
    m = lots_map(x, x_adv, 1.0)
    assert m.shape == (3, *SHAPE) and float(m.max()) <= 1 and float(m.min()) >= 0


def test_lots_targets_zero_class_and_mean():
    """Seed 002, 4.2: F_t of an image whose target is class c: zeros; the features of ONE seeded
    random training image of class c (class); the mean features of class c's training images (mean)."""
    from robustmaps.saliency.lots import target_features, target_sources

    feats = torch.tensor([[1.0, 0.0], [3.0, 0.0], [5.0, 0.0], [0.0, 2.0], [0.0, 4.0]])
    labels = torch.tensor([0, 0, 0, 1, 1])
    t = torch.tensor([1, 0, 1])
    torch.testing.assert_close(target_features("zero", feats, labels)(t), torch.zeros(3, 2))
    torch.testing.assert_close(target_features("mean", feats, labels)(t),
                               torch.tensor([[0.0, 3.0], [3.0, 0.0], [0.0, 3.0]]))
    # class: one training image of the target's class, drawn with the seed, the same for every image
    drawn = {seed: target_features("class", feats, labels, seed=seed)(t) for seed in range(8)}
    for seed, ft in drawn.items():
        src = target_sources("class", labels, seed)
        assert [len(v) for v in src.values()] == [1, 1]
        torch.testing.assert_close(ft, feats[[src[1][0], src[0][0], src[1][0]]])
        assert any(torch.equal(ft[1], f) for f in feats[:3]) and any(torch.equal(ft[0], f) for f in feats[3:])
    torch.testing.assert_close(target_features("class", feats, labels, seed=3)(t), drawn[3])
    assert len({tuple(ft[1].tolist()) for ft in drawn.values()}) > 1  # the seed picks the image
    # a callable runs only the images the target needs
    asked = []

    def lazy(pos):
        asked.append(list(pos))
        return feats[torch.as_tensor(pos)]

    torch.testing.assert_close(target_features("class", lazy, labels, seed=3)(t), drawn[3])
    assert sorted(len(a) for a in asked) == [1, 1]
    with pytest.raises(ValueError, match="no training image of class"):
        target_features("mean", feats[:3], labels[:3])(t)
    with pytest.raises(ValueError, match="lots target must be one of"):
        target_features("far", feats, labels)


def test_lots_class_and_mean_targets_come_from_the_training_table(trained_model):
    """The rule entry's F_t is built from the split's train.tsv (not the test table), and the
    class/mean targets refuse to run without it."""
    from test_masks import tiny_grids

    from robustmaps.io import InputError
    from robustmaps.jobs.saliency import _lots_target, saliency_maps
    from robustmaps.trained import images
    from robustmaps.saliency.lots import features
    from robustmaps.splits import read_split_rows
    from robustmaps.trained import load_model, open_for_model

    t = trained_model
    model, meta = load_model(t["model"], "cpu", 1, 0)
    store, index = open_for_model(t["store"], t["index"], meta, t["model"])
    train = read_split_rows(t["train"], index).reset_index(drop=True)
    params = {**SALIENCY, "lots": {**SALIENCY["lots"], "target": "mean"}}
    ft = _lots_target(model, "lots", Saliency.of(params), store, train, torch.device("cpu"))
    with torch.no_grad():
        f = features(model, images(store, train.row.to_numpy(), "cpu", channels_last=True), "auto")
    labels = torch.as_tensor(train.label.to_numpy().copy())
    torch.testing.assert_close(ft(torch.tensor([0, 1])), torch.stack([f[labels == 0].mean(0), f[labels == 1].mean(0)]),
                               rtol=1e-4, atol=1e-5)
    by_class = Saliency.of({**params, "lots": {**params["lots"], "target": "class"}})
    one = _lots_target(model, "lots", by_class, store, train, torch.device("cpu"))(torch.tensor([1]))[0]
    assert any(torch.allclose(one, g, atol=1e-5) for g in f[labels == 1])
    with pytest.raises(InputError, match="train.tsv"):
        saliency_maps(t["model"], t["store"], t["index"], t["validation"], map_outputs(Path("/nonexistent"), "x"),
                      method="lots", params=params, grids=tiny_grids(), device="cpu")


def test_tv_gradient_equals_autograd():
    from robustmaps.saliency.actmax import total_variation, tv_gradient

    x = torch.rand(2, 1, 5, 6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    x.requires_grad_(True)
    (auto,) = torch.autograd.grad(total_variation(x).sum(), x)
    torch.testing.assert_close(tv_gradient(x.detach()), auto)
    # TV is 0 on a constant image, and so is its gradient
    c = torch.full((1, 1, 3, 3, 3), 0.5)
    assert float(total_variation(c)) == 0 and float(tv_gradient(c).abs().sum()) == 0


def test_activation_maximisation_raises_the_class_logit():
    from robustmaps.saliency.actmax import activation_maximisation

    model = frozen(TinyCNN())
    x = torch.rand(2, 1, *SHAPE, generator=torch.Generator().manual_seed(5)) * 0.5
    t = torch.tensor([1, 0])
    before = model(x).gather(1, t[:, None])[:, 0]
    xt, after = activation_maximisation(model, x, t, iterations=20, e1=0.5, e2=0.0)
    assert (after > before).all() and xt.min() >= 0 and xt.max() <= 1


class RoiLinear(nn.Module):
    """Logits (0, sum_r a_r * mean of the image over ROI r): linear in the ROI means."""

    def __init__(self, atlas, a):
        super().__init__()
        self.register_buffer("onehot", torch.stack([torch.from_numpy((atlas == r + 1).astype(np.float32))
                                                    for r in range(len(a))]))
        self.register_buffer("a", torch.tensor(a, dtype=torch.float32))

    def forward(self, x):
        means = (x[:, 0, None] * self.onehot[None]).flatten(2).sum(2) / self.onehot.flatten(1).sum(1)
        z = (means * self.a).sum(1)
        return torch.stack([torch.zeros_like(z), z], 1)


def test_sobol_path_recovers_the_closed_form_indices_of_a_model_linear_in_roi_means():
    from robustmaps.saliency.sobol import roi_lookup, sobol_analysis

    atlas = np.zeros(SHAPE, np.int64)
    atlas[:4, :5] = 1
    atlas[4:, :5] = 2
    atlas[:4, 5:] = 3
    atlas[4:, 5:, :4] = 4  # the rest (label 0) is outside every ROI
    a = [3.0, 2.0, 1.0, 0.5]
    model = frozen(RoiLinear(atlas, a))
    images = torch.ones(2, 1, *SHAPE)
    names = ["A", "B", "C", "D"]
    indices, conv, _ = sobol_analysis(model, images, roi_lookup(atlas, [1, 2, 3, 4]), names, target=1, n=1024,
                                      bounds=(0.5, 1.5), output="log_odds", resamples=200, seed=0,
                                      convergence_min=64)
    expected = np.square(a) / np.square(a).sum()  # independent uniform factors, linear output
    for row, s in zip(indices.itertuples(), expected):
        assert abs(row.S1 - s) <= max(row.S1_conf, 0.01), (row.roi, row.S1, s, row.S1_conf)
        assert abs(row.ST - s) <= max(row.ST_conf, 0.01), (row.roi, row.ST, s, row.ST_conf)
    assert sorted(set(conv.n)) == [64, 128, 256, 512, 1024]
    # the confidence interval narrows as N grows
    width = conv.groupby("n").ST_conf.mean()
    assert width.loc[1024] < width.loc[64]


def test_sobol_refuses_a_sample_size_that_is_not_a_power_of_two():
    from robustmaps.saliency.sobol import sobol_analysis

    with pytest.raises(ValueError, match="power of 2"):
        sobol_analysis(None, None, None, ["A"], target=1, n=100)


class OneRegion(nn.Module):
    """P(class 1) grows with the mean of one region: the only voxels that matter."""

    def __init__(self, region):
        super().__init__()
        w = torch.zeros(SHAPE)
        w[region] = 1.0 / float(torch.ones(SHAPE)[region].sum())
        self.register_buffer("w", w)

    def forward(self, x):
        z = 8 * ((x[:, 0] * self.w).flatten(1).sum(1) - 0.25)
        return torch.stack([-z, z], 1)


def test_deletion_and_insertion_reward_a_map_that_ranks_the_relevant_voxels_first():
    from robustmaps.faithfulness import blurred, deletion_insertion, faithfulness, image_seed

    region = (slice(2, 5), slice(3, 6), slice(2, 5))
    model = frozen(OneRegion(region))
    x = torch.zeros(1, 1, *SHAPE)
    x[0, 0][region] = 0.9
    good = torch.zeros(SHAPE)
    good[region] = 1.0
    bad = 1 - good
    base = blurred(x, 2.0)
    d_good, i_good, curve, _ = deletion_insertion(model, x, good, 1, base, steps=10, seed=image_seed(0, 0))
    d_bad, i_bad, _, _ = deletion_insertion(model, x, bad, 1, base, steps=10, seed=image_seed(0, 1))
    assert d_good < d_bad and i_good > i_bad
    assert len(curve) == 11
    # this model is not a GM classifier (removing the region's signal lowers the score): the seed's
    # blurred copy as the baseline (the GM default, the masks' mu, is tested in test_faithfulness.py)
    table = faithfulness(model, None, x.repeat(2, 1, 1, 1, 1), torch.stack([good, bad]), torch.tensor([1, 1]),
                         steps=10, baseline="blur", blur_sigma_voxels=2.0, coherency=False)
    assert list(table.deletion_auc) == pytest.approx([d_good, d_bad])
    # the zero baseline is the seed's image x map: x * good keeps the region: no drop; x * bad
    # removes it: a drop
    table = faithfulness(model, None, x.repeat(2, 1, 1, 1, 1), torch.stack([good, bad]), torch.tensor([1, 1]),
                         steps=10, baseline="zero", coherency=False)
    assert table.average_drop[0] == pytest.approx(0, abs=1e-6) and table.average_drop[1] > 0.5


def test_faithfulness_table_compares_every_method_with_random_cam():
    from robustmaps.faithfulness import faithfulness_table

    rows = []
    for method, d, i in (("gradcam", 0.2, 0.6), ("randomcam", 0.4, 0.4), ("vanilla", 0.5, 0.7)):
        for fold in (0, 1):
            for k in range(4):
                rows.append({"method": method, "fold": fold, "seed": 0, "participant_id": f"sub-{k}",
                             "session_id": "ses-M000", "deletion_auc": d + 0.01 * fold + 0.001 * k,
                             "insertion_auc": i, "average_drop": 0.1, "average_increase": 0.0, "coherency": 0.9,
                             "runtime_ms": 5.0})
    t = faithfulness_table(pd.DataFrame(rows)).set_index("method")
    assert t.loc["gradcam", "deletion_auc"] == pytest.approx(0.2065)
    assert t.loc["gradcam", "deletion_auc_sd"] == pytest.approx(np.std([0.2015, 0.2115], ddof=1))
    assert t.loc["gradcam", "n_pairs"] == 8 and t.loc["gradcam", "deletion_diff"] == pytest.approx(-0.2)
    assert t.loc["gradcam", "beats_random"]
    assert not t.loc["vanilla", "beats_random"]
    assert pd.isna(t.loc["randomcam", "beats_random"])


# ------------------------------------------------------------------ rule entries on a trained model
FAITH = {"steps": 5, "blur_sigma_mm": 6.0, "coherency": True, "max_sessions": None, "baseline": "mask"}
SOBOL = {"target": "AD", "images": ["AD"], "n_images": 2, "n": 128, "bounds": [0.5, 1.5], "output": "probability",
         "second_order": False, "resamples": 50, "conf_level": 0.95, "seed": 0, "batch_size": 32,
         "convergence_min": 32}


def map_outputs(root, name):
    return {k: root / f"{name}-{k}.{ext}" for k, ext in (("maps", "nii.gz"), ("native", "nii.gz"), ("index", "tsv"),
                                                         ("group", "nii.gz"), ("group_native", "nii.gz"))}


@pytest.fixture(scope="module")
def session_maps(trained_model, tmp_path_factory):
    """Maps of every method for the tiny model's validation sessions, written by the rule entry."""
    from test_masks import tiny_grids

    from robustmaps.jobs.saliency import saliency_maps
    from robustmaps.saliency import METHODS

    t, root = trained_model, tmp_path_factory.mktemp("saliency")
    out = {}
    for method in METHODS:
        out[method] = map_outputs(root, method)
        saliency_maps(t["model"], t["store"], t["index"], t["validation"], out[method], method=method,
                      params=SALIENCY, grids=tiny_grids(), device="cpu", threads=1)
    return out


def test_every_method_writes_finite_non_constant_maps_on_both_grids(trained_model, session_maps):
    import nibabel as nib
    from test_masks import tiny_grids

    from robustmaps.grid import Grid

    grids = tiny_grids()
    n = len(pd.read_csv(trained_model["validation"], sep="\t"))
    for method, out in session_maps.items():
        img = nib.load(out["maps"])
        assert Grid.from_config(grids["working"]).matches(img.shape[:3], img.affine), method
        data = np.asarray(img.dataobj, np.float32)
        assert data.shape[-1] == n and np.isfinite(data).all(), method
        assert all(data[..., k].std() > 0 for k in range(n)), f"{method}: a constant map"
        assert data.min() >= 0 and data.max() <= 1 + 1e-3, method
        native = nib.load(out["native"])
        assert Grid.from_config(grids["native"]).matches(native.shape[:3], native.affine), method
        idx = pd.read_csv(out["index"], sep="\t")
        assert len(idx) == n and (idx.runtime_ms > 0).all() and idx.layer.nunique() == 1
        group = np.asarray(nib.load(out["group"]).dataobj)
        chosen = idx.in_group.to_numpy()
        assert (idx.label[chosen] == 1).all()
        np.testing.assert_allclose(group, data[..., chosen].mean(-1), atol=2e-3)


def test_real_maps_find_the_planted_region_better_than_random_cam(trained_model, session_maps):
    """The tiny model learnt the planted box: the real methods' group maps weigh it more than
    Random-CAM's (fraction of the map's mass inside the box). Random-CAM (ReLU of random channel
    weights on non-negative activations) follows where the layer fires, so one draw of it varies
    (0.03-0.09 on this model over seeds 0-9, the box is 0.03 of the volume): it is taken over ten
    seeds, the fixture's seed-0 maps among them."""
    import nibabel as nib

    from robustmaps.trained import images
    from robustmaps.saliency import Explainer
    from robustmaps.splits import read_split_rows
    from robustmaps.trained import load_model, open_for_model

    box = trained_model["box"]

    def inside(g):
        return g[box].sum() / g.sum()

    def group(method):
        return np.asarray(nib.load(session_maps[method]["group"]).dataobj, np.float64)

    t = trained_model
    model, meta = load_model(t["model"], "cpu", 1, 0)
    store, index = open_for_model(t["store"], t["index"], meta, t["model"])
    idx = pd.read_csv(session_maps["randomcam"]["index"], sep="\t")
    rows = read_split_rows(t["validation"], index).row.to_numpy()[idx.in_group.to_numpy()]
    x, target = images(store, rows, "cpu", channels_last=True), torch.as_tensor(idx.target.to_numpy()[idx.in_group.to_numpy()])
    draws = [inside(group("randomcam"))]
    draws += [inside(Explainer(model, "randomcam", Saliency.of({**SALIENCY, "seed": s}))(x, target)
                     .double().mean(0).numpy())
              for s in range(1, 10)]
    random = float(np.mean(draws))
    scores = {m: inside(group(m)) for m in ("gradcam", "vanilla", "smoothgrad", "occlusion", "lots")}
    better = [m for m, v in scores.items() if v > random]
    assert len(better) >= 4, (random, scores)


def test_maps_entry_scores_the_faithfulness_of_every_map(trained_model, tmp_path):
    from test_masks import tiny_grids

    from robustmaps.jobs.saliency import saliency_maps

    t = trained_model
    for method in ("gradcam", "randomcam"):
        out = {**map_outputs(tmp_path, method), "faithfulness": tmp_path / f"{method}.tsv"}
        saliency_maps(t["model"], t["store"], t["index"], t["validation"], out, method=method, params=SALIENCY,
                      grids=tiny_grids(), faith=FAITH, device="cpu")
        res = pd.read_csv(out["faithfulness"], sep="\t")
        idx = pd.read_csv(out["index"], sep="\t")
        assert list(res.session_id) == list(idx.session_id)
        assert res[["deletion_auc", "insertion_auc", "average_drop", "coherency"]].apply(np.isfinite).all().all()
        assert ((res.coherency >= 0) & (res.coherency <= 1)).all()
        assert res.score.to_numpy() == pytest.approx(idx.p_target.to_numpy(), abs=1e-4)
        assert list(res.runtime_ms) == list(idx.runtime_ms)
    out = {**map_outputs(tmp_path, "few"), "faithfulness": tmp_path / "few.tsv"}
    saliency_maps(t["model"], t["store"], t["index"], t["validation"], out, method="gradcam", params=SALIENCY,
                  grids=tiny_grids(), faith={**FAITH, "max_sessions": 3, "coherency": False}, device="cpu")
    few = pd.read_csv(out["faithfulness"], sep="\t")
    assert len(few) == 3 and few.coherency.isna().all()


def test_stack_inside_the_atlas_keeps_the_maps_the_analysis_reads(trained_model, session_maps, tmp_path):
    """With the atlas, the stored stack is the same maps inside it and 0 outside; the group map,
    the index and the ROI vectors stay as without it; without a native output none is written."""
    import nibabel as nib
    from test_masks import tiny_grids

    from robustmaps.grid import Grid
    from robustmaps.io import InputError, save_nifti
    from robustmaps.jobs.saliency import saliency_maps
    from robustmaps.roi import roi_vectors

    t, grids = trained_model, tiny_grids()
    atlas = np.zeros(t["images"].shape[1:], np.int16)
    atlas[2:9, 4:12, 3:11], atlas[9:14, 4:18, 3:11] = 1, 2
    save_nifti(atlas, Grid.from_config(grids["working"]).affine, tmp_path / "atlas.nii.gz", dtype=np.int16)
    out = {k: v for k, v in map_outputs(tmp_path, "inside").items() if k != "native"}
    saliency_maps(t["model"], t["store"], t["index"], t["validation"], out, method="vanilla", params=SALIENCY,
                  grids=grids, device="cpu", threads=1, atlas_nii=tmp_path / "atlas.nii.gz")
    assert not (tmp_path / "inside-native.nii.gz").exists() and (tmp_path / "inside-group_native.nii.gz").exists()
    full = np.asarray(nib.load(session_maps["vanilla"]["maps"]).dataobj, np.float32)
    inside = np.asarray(nib.load(out["maps"]).dataobj, np.float32)
    assert np.all(inside[atlas == 0] == 0) and np.abs(inside[atlas > 0] - full[atlas > 0]).max() < 1e-3
    np.testing.assert_allclose(roi_vectors(inside, atlas, [1, 2]), roi_vectors(full, atlas, [1, 2]), atol=1e-4)
    np.testing.assert_array_equal(np.asarray(nib.load(out["group"]).dataobj),
                                  np.asarray(nib.load(session_maps["vanilla"]["group"]).dataobj))
    save_nifti(atlas[:-1], np.eye(4), tmp_path / "small.nii.gz", dtype=np.int16)
    with pytest.raises(InputError, match="small.nii.gz: atlas grid"):
        saliency_maps(t["model"], t["store"], t["index"], t["validation"], out, method="vanilla", params=SALIENCY,
                      grids=grids, device="cpu", threads=1, atlas_nii=tmp_path / "small.nii.gz")


def test_actmax_and_sobol_entries(trained_model, tmp_path):
    import nibabel as nib
    from test_masks import tiny_grids

    from robustmaps.atlas import load_labels
    from robustmaps.io import save_nifti, write_tsv
    from robustmaps.jobs.saliency import actmax_maps, sobol_entry

    t, grids = trained_model, tiny_grids()
    out = map_outputs(tmp_path, "actmax")
    actmax_maps(t["model"], t["store"], t["index"], t["validation"], out, params=SALIENCY, grids=grids, device="cpu")
    idx = pd.read_csv(out["index"], sep="\t")
    assert list(idx["class"]) == ["AD", "AD", "CN", "CN"] and (idx.logit_after > idx.logit_before).all()
    assert nib.load(out["maps"]).shape[-1] == 4
    # Sobol on an atlas of 4 blocks (the closed-form test above checks the indices themselves)
    from robustmaps.grid import Grid

    atlas = np.zeros(t["images"].shape[1:], np.int16)
    atlas[2:9, 4:12, 3:11] = 1
    atlas[9:14, 4:12, 3:11] = 2
    atlas[2:9, 12:18, 3:11] = 3
    atlas[9:14, 12:18, 3:11] = 4
    save_nifti(atlas, Grid.from_config(grids["working"]).affine, tmp_path / "atlas.nii.gz", dtype=np.int16)
    write_tsv(pd.DataFrame({"index": [1, 2, 3, 4], "name": ["Box", "R2", "R3", "R4"]}), tmp_path / "labels.tsv")
    assert len(load_labels(tmp_path / "labels.tsv")) == 4
    sob = {k: tmp_path / f"sobol-{k}.tsv" for k in ("indices", "convergence", "second_order")}
    sobol_entry(t["model"], t["store"], t["index"], t["validation"], tmp_path / "atlas.nii.gz",
                tmp_path / "labels.tsv", sob, params=SOBOL, device="cpu")
    ind = pd.read_csv(sob["indices"], sep="\t")
    assert list(ind.roi) == ["Box", "R2", "R3", "R4"] and (ind["images"] == "AD").all()
    assert np.isfinite(ind[["S1", "ST", "ST_conf"]]).all().all() and (ind.n_images == 2).all()
    assert sorted(set(pd.read_csv(sob["convergence"], sep="\t").n)) == [32, 64, 128]


def test_group_map_members_are_the_correctly_classified_sessions_of_the_class(caplog):
    """A group map averages the correctly classified sessions of its class; where the model gets
    none of them right, all of its sessions, said in the log."""
    from robustmaps.saliency import group_members

    labels = np.array([1, 1, 0, 1, 0])
    assert group_members(labels, np.array([1, 0, 0, 1, 1]), 1).tolist() == [True, False, False, True, False]
    with caplog.at_level("WARNING"):
        fallback = group_members(labels, np.array([0, 0, 0, 0, 1]), 1)
    assert fallback.tolist() == [True, True, False, True, False]
    assert "no correctly classified session of class 1" in caplog.text
