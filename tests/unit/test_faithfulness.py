"""Faithfulness on GM maps (robustmaps.faithfulness): the masks' perturbation (equation (1)) as the
baseline, seeded tie-breaking of the deletion order, and the paired comparison with Random-CAM
(robustmaps.faithfulness.faithfulness_table, robustmaps.acceptance.note_beats_random)."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

SHAPE = (8, 10, 8)
REGION = (slice(2, 5), slice(3, 6), slice(2, 5))


class Atrophy(nn.Module):
    """P(AD) (class 1) grows as the mean GM of one region falls, as in a GM classifier: removing
    GM there is evidence FOR AD, restoring it (mu = 1) is evidence against."""

    def __init__(self):
        super().__init__()
        w = torch.zeros(SHAPE)
        w[REGION] = 1.0 / float(torch.ones(SHAPE)[REGION].sum())
        self.register_buffer("w", w)

    def forward(self, x):
        z = 10 * (0.6 - (x[:, 0] * self.w).flatten(1).sum(1))
        return torch.stack([-z, z], 1)


def atrophic_image():
    """GM 0.8 everywhere, 0.3 in the region: P(AD) high."""
    x = torch.full((1, 1, *SHAPE), 0.8)
    x[0, 0][REGION] = 0.3
    return x


def region_maps():
    good = torch.zeros(SHAPE)
    good[REGION] = 1.0
    return good, 1 - good


def test_mask_baseline_restores_gm_and_rewards_the_map_of_the_atrophy():
    """With the masks' mu = 1, deleting the atrophic region restores it: P(AD) falls, the map that
    points at it gets the lower deletion AUC; zeros (the seed's choice) invert the judgement."""
    from robustmaps.faithfulness import faithfulness

    model = Atrophy().eval()
    x = atrophic_image().repeat(2, 1, 1, 1, 1)
    good, bad = region_maps()
    maps, t = torch.stack([good, bad]), torch.tensor([1, 1])
    mask = faithfulness(model, None, x, maps, t, steps=10, baseline="mask", mu=1.0, coherency=False)
    assert mask.deletion_auc[0] < mask.deletion_auc[1] and mask.insertion_auc[0] > mask.insertion_auc[1]
    # the explanation image m x + (1 - m) mu: the good map keeps the atrophy (no drop), the bad
    # one restores it (a drop)
    assert mask.average_drop[0] == pytest.approx(0, abs=1e-6) and mask.average_drop[1] > 0.5
    zero = faithfulness(model, None, x, maps, t, steps=10, baseline="zero", coherency=False)
    assert zero.deletion_auc[0] > zero.deletion_auc[1]  # zeros are atrophy: the wrong map wins


def test_mask_baseline_is_equation_1_of_the_masks_with_their_mu():
    """The baseline image is robustmaps.masks' mu: a number, a per-voxel reference map as
    load_reference returns it, or one per target class; zero and blur stay available."""
    from robustmaps.faithfulness import baseline_images, blurred, faithfulness
    from robustmaps.masks import masked

    x = torch.rand(2, 1, *SHAPE, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([1, 0])
    ref = torch.rand(1, 1, *SHAPE, generator=torch.Generator().manual_seed(1))  # load_reference's shape
    torch.testing.assert_close(baseline_images(x, t, "mask", mu=1.0), torch.ones_like(x))
    torch.testing.assert_close(baseline_images(x, t, "mask", mu=ref), ref.expand_as(x))
    per_class = baseline_images(x, t, "mask", mu={1: ref, 0: 0.5})
    torch.testing.assert_close(per_class[0], ref[0])
    torch.testing.assert_close(per_class[1], torch.full_like(x[1], 0.5))
    torch.testing.assert_close(baseline_images(x, t, "zero"), torch.zeros_like(x))
    torch.testing.assert_close(baseline_images(x, t, "blur", blur_sigma_voxels=1.5), blurred(x, 1.5))
    with pytest.raises(ValueError, match="baseline must be one of"):
        baseline_images(x, t, "noise")
    with pytest.raises(ValueError, match="no mu for target"):
        baseline_images(x, t, "mask", mu={1: ref})
    # Average Drop's explanation image is masked(x, map, mu) of the masks
    model = Atrophy().eval()
    m = torch.rand(2, *SHAPE, generator=torch.Generator().manual_seed(2))
    table = faithfulness(model, None, x, m, t, steps=4, baseline="mask", mu=ref, coherency=False)
    expected = torch.softmax(model(masked(x, m[:, None], ref)), 1)[[0, 1], [1, 0]]
    np.testing.assert_allclose(table.score_masked, expected.numpy(), rtol=1e-5)


def test_rule_entry_takes_mu_from_the_masks_reference_map(trained_model, tmp_path):
    """saliency_maps reads the masks' reference (robustmaps.volumes.load_reference): a reference of ones is
    mu = 1 (no reference), one of zeros is the zero baseline."""
    from test_masks import tiny_grids

    from robustmaps.grid import Grid
    from robustmaps.io import save_nifti
    from robustmaps.jobs.saliency import saliency_maps

    t, grids = trained_model, tiny_grids()
    params = {"target": "predicted", "layer": "auto", "batch_size": 8, "seed": 0}
    faith = {"steps": 4, "blur_sigma_mm": 6.0, "coherency": False, "max_sessions": 4, "baseline": "mask"}
    affine = Grid.from_config(grids["working"]).affine
    for name, value in (("ones", 1.0), ("zeros", 0.0)):
        save_nifti(np.full(t["images"].shape[1:], value, np.float32), affine, tmp_path / f"{name}.nii.gz")

    def scores(tag, reference=None, **kw):
        out = {k: tmp_path / f"{tag}-{k}.nii.gz" for k in ("maps", "group", "group_native")}
        out |= {"index": tmp_path / f"{tag}-index.tsv", "faithfulness": tmp_path / f"{tag}.tsv"}
        saliency_maps(t["model"], t["store"], t["index"], t["validation"], out, method="gradcam", params=params,
                      grids=grids, faith={**faith, **kw}, device="cpu", reference_nii=reference)
        return pd.read_csv(out["faithfulness"], sep="\t")[["deletion_auc", "insertion_auc", "average_drop"]]

    default = scores("default")
    pd.testing.assert_frame_equal(scores("ones", tmp_path / "ones.nii.gz", baseline="mask"), default, atol=1e-6)
    pd.testing.assert_frame_equal(scores("zeros", tmp_path / "zeros.nii.gz"), scores("zero", baseline="zero"),
                                  atol=1e-6)
    assert not np.allclose(scores("blur", baseline="blur").deletion_auc, default.deletion_auc)


def test_ties_are_broken_by_a_seeded_permutation_not_memory_order():
    from robustmaps.faithfulness import deletion_order, ranks

    flat = torch.zeros(SHAPE)
    n = flat.numel()
    a, b, c = ranks(flat, seed=3), ranks(flat, seed=3), ranks(flat, seed=4)
    assert torch.equal(torch.sort(a.flatten()).values, torch.arange(n))  # a permutation of the ranks
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a.flatten(), torch.arange(n))  # not raster order
    # the first tenth deleted is spread over the volume, not the front of the array
    first = deletion_order(flat, seed=3)[: n // 10]
    assert float((first < n // 2).float().mean()) < 0.8
    # distinct values keep their order; ties among them are shuffled, within their level
    m = torch.zeros(SHAPE)
    m[REGION] = 1.0
    r = ranks(m, seed=5)
    k = int(m.sum())
    assert set(r[m == 1].tolist()) == set(range(k))
    assert not torch.equal(r[m == 1], torch.arange(k))


def test_faithfulness_seeds_ties_per_session_position():
    """Every image gets its own tie order, the same for every method (image_seed(seed, position))."""
    from robustmaps.faithfulness import image_seed

    assert image_seed(0, 3) == image_seed(0, 3)
    assert len({image_seed(0, i) for i in range(20)} | {image_seed(1, 0)}) == 21


def test_paired_comparison_exact_sign_flip_and_bootstrap():
    from robustmaps.faithfulness import paired_comparison

    r = paired_comparison([1.0] * 5)  # 32 sign patterns: |mean| >= 1 for all + and all -
    assert r["n"] == 5 and r["mean"] == 1 and r["p"] == pytest.approx(2 / 32)
    assert r["lo"] == r["hi"] == 1
    d = np.random.default_rng(0).normal(-0.05, 0.02, 40)
    r = paired_comparison(d, permutations=2000, bootstrap=1000, seed=1)
    assert r["p"] < 0.01 and r["lo"] < r["mean"] < r["hi"] < 0
    assert r == paired_comparison(d, permutations=2000, bootstrap=1000, seed=1)
    assert np.isnan(paired_comparison([])["p"])


def per_map_rows(diffs_deletion, diffs_insertion, n_images=8, models=((0, 0), (1, 0))):
    """per-map rows of Random-CAM (deletion 0.4, insertion 0.4 + noise) and of methods whose paired
    differences are given per (model, image)."""
    rng = np.random.default_rng(0)
    rows = []
    for fold, seed in models:
        for i in range(n_images):
            d0, i0 = 0.4 + 0.05 * rng.normal(), 0.4 + 0.05 * rng.normal()
            ids = {"fold": fold, "seed": seed, "participant_id": f"sub-{i:02d}", "session_id": "ses-M000",
                   "average_drop": 0.1, "average_increase": 0.0, "coherency": 0.9, "runtime_ms": 5.0}
            rows.append({"method": "randomcam", **ids, "deletion_auc": d0, "insertion_auc": i0})
            for method in diffs_deletion:
                k = fold * n_images + i
                rows.append({"method": method, **ids, "deletion_auc": d0 + diffs_deletion[method][k],
                             "insertion_auc": i0 + diffs_insertion[method][k]})
    return pd.DataFrame(rows)


def test_beats_random_is_a_paired_test_not_a_comparison_of_means():
    from robustmaps.faithfulness import faithfulness_table

    n = 16
    consistent = np.full(n, -0.05) + np.linspace(-0.01, 0.01, n)
    noisy = np.resize([0.3, -0.36], n)  # mean -0.03: lower on average, but either way per pair
    per_map = per_map_rows({"gradcam": consistent, "vanilla": noisy},
                           {"gradcam": -consistent, "vanilla": -noisy})
    t = faithfulness_table(per_map).set_index("method")
    assert t.loc["vanilla", "deletion_auc"] < t.loc["randomcam", "deletion_auc"]  # better mean ...
    assert t.loc["vanilla", "insertion_auc"] > t.loc["randomcam", "insertion_auc"]
    assert not t.loc["vanilla", "beats_random"]  # ... but not significantly
    assert t.loc["vanilla", "deletion_p"] > 0.05 and t.loc["vanilla", "deletion_diff_lo"] < 0 < \
        t.loc["vanilla", "deletion_diff_hi"]
    assert t.loc["gradcam", "beats_random"] and t.loc["gradcam", "n_pairs"] == n
    assert t.loc["gradcam", "deletion_p"] < 1e-3 and t.loc["gradcam", "deletion_diff_hi"] < 0
    assert t.loc["gradcam", "deletion_diff"] == pytest.approx(consistent.mean())
    assert t.loc["gradcam", "insertion_diff_lo"] > 0
    assert pd.isna(t.loc["randomcam", "beats_random"]) and pd.isna(t.loc["randomcam", "deletion_p"])
    # lower deletion but lower insertion too: not beating (both are required)
    t2 = faithfulness_table(per_map_rows({"x": consistent}, {"x": consistent})).set_index("method")
    assert not t2.loc["x", "beats_random"]


def test_acceptance_notes_a_method_that_does_not_beat_random_cam(tmp_path):
    from robustmaps import acceptance
    from robustmaps.io import write_tsv
    from robustmaps.faithfulness import faithfulness_table

    n = 16
    consistent = np.full(n, -0.05)
    noisy = np.resize([0.3, -0.36], n)
    table = faithfulness_table(per_map_rows({"gradcam": consistent, "vanilla": noisy},
                                            {"gradcam": -consistent, "vanilla": -noisy}))
    (tmp_path / "saliency").mkdir()
    write_tsv(table, tmp_path / "saliency" / "faithfulness_summary.tsv")
    notes = acceptance.note_beats_random(tmp_path, {})
    assert len(notes) == 1 and notes[0].startswith("vanilla: does not beat Random-CAM")
    assert "16 (image, model) pairs" in notes[0] and "p = " in notes[0] and "[" in notes[0]
    assert acceptance.note_beats_random in acceptance.NOTES.values()
    assert all("Random-CAM" not in name for name in acceptance.CHECKS)
