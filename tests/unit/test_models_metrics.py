import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from robustmaps.metrics import binary_metrics, bootstrap_ci
from robustmaps.models import PadMaxPool3d, build_model


@pytest.mark.parametrize("spec", [
    {"name": "paper", "n_blocks": 3, "filters": 4, "sub_blocks": [1, 2, 3], "fc_layers": 2, "fc_units": 16},
    {"name": "paper", "n_blocks": 4, "filters": 4, "downsampling": "stride"},
    {"name": "conv5fc3"},
    {"name": "DenseNet121", "dropout_prob": 0.0},
    {"name": "resnet10", "feed_forward": True},
], ids=["paper", "paper-stride", "conv5fc3", "densenet121", "resnet10"])
def test_each_architecture_builds_and_runs_a_forward_pass(spec):
    model = build_model(spec, (40, 48, 40))
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(2, 1, 40, 48, 40))
    assert out.shape == (2, 2) and torch.isfinite(out).all()


def test_seven_block_paper_network_builds_on_the_full_grid():
    model = build_model({"name": "paper", "n_blocks": 7, "filters": 2, "max_filters": 16}, (121, 145, 121)).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 1, 121, 145, 121)).shape == (1, 2)


def test_padmaxpool_never_reaches_zero():
    x = torch.rand(1, 1, 121, 145, 121)
    for _ in range(7):
        x = PadMaxPool3d()(x)
    assert tuple(x.shape[2:]) == (1, 2, 1)


def test_unknown_architecture():
    with pytest.raises(ValueError, match="unknown architecture 'NoSuchNet'"):
        build_model({"name": "NoSuchNet"}, (8, 8, 8))


def test_metrics_agree_with_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
    m = binary_metrics(y, p)
    pred = (p > 0.5).astype(int)
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["sensitivity"] == pytest.approx(skm.recall_score(y, pred))
    assert m["specificity"] == pytest.approx(skm.recall_score(1 - y, 1 - pred))
    from robustmaps.metrics import _fast_metrics
    p[:20] = 0.5  # ties
    fast, ref = _fast_metrics(y, p), binary_metrics(y, p)
    assert fast == pytest.approx(ref)


def test_bootstrap_ci_brackets_the_estimate_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    def sample(n):
        y = np.repeat([0, 1], n)
        return y, np.clip(0.35 * y + 0.65 * rng.random(2 * n), 0, 1)
    y, p = sample(50)
    ci = bootstrap_ci(y, p, n_boot=300)
    est = binary_metrics(y, p)
    for k in ci:
        assert ci[k][0] <= est[k] <= ci[k][1]
    wide = ci["balanced_accuracy"][1] - ci["balanced_accuracy"][0]
    y, p = sample(800)
    ci = bootstrap_ci(y, p, n_boot=300)
    assert ci["balanced_accuracy"][1] - ci["balanced_accuracy"][0] < wide / 2
    assert bootstrap_ci(y, p, n_boot=50, seed=3) == bootstrap_ci(y, p, n_boot=50, seed=3)
