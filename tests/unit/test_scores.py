"""One class score for the package (robustmaps.models.class_score): its two kinds against closed
forms, and the masks, occlusion and Sobol reading their scores through it with unchanged results."""

import numpy as np
import pytest
import torch
from torch import nn

from robustmaps.models import SCORE_KINDS, class_score


def random_logits(n_classes, seed=0, dtype=torch.float32):
    return (torch.randn(6, n_classes, generator=torch.Generator().manual_seed(seed)) * 4).to(dtype)


@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_class_score_kinds_match_their_closed_forms(n_classes):
    """probability = softmax; log_odds = log p / (1 - p) (target against all the other classes),
    which does not move when every logit shifts by the same amount (a raw logit would)."""
    z = random_logits(n_classes, dtype=torch.float64)
    p = torch.softmax(z, 1)
    for t in range(n_classes):
        torch.testing.assert_close(class_score(z, t, "probability"), p[:, t])
        torch.testing.assert_close(class_score(z, t, "log_odds"), torch.log(p[:, t] / (1 - p[:, t])))
        torch.testing.assert_close(class_score(z + 7.0, t, "log_odds"), class_score(z, t, "log_odds"))
    if n_classes == 2:  # two classes: the difference of the logits
        torch.testing.assert_close(class_score(z, 1, "log_odds"), z[:, 1] - z[:, 0])
    assert class_score(z, 0).shape == (6,)  # probability by default


def test_class_score_takes_one_target_per_image():
    """A batch may mix targets (saliency): each image scored by its own class, as one int would."""
    z = random_logits(3, seed=1)
    target = torch.tensor([0, 2, 1, 1, 0, 2])
    for kind in SCORE_KINDS:
        per = class_score(z, target, kind)
        one = torch.stack([class_score(z[i:i + 1], int(target[i]), kind)[0] for i in range(6)])
        torch.testing.assert_close(per, one)
    assert class_score(z, np.int64(2), "log_odds").shape == (6,)  # numpy ints are ints


def test_class_score_rejects_unknown_kinds_naming_the_valid_ones():
    """'logit' was the masks' old name: it must fail loudly, not fall back to a probability."""
    z = random_logits(2)
    with pytest.raises(ValueError, match="probability, log_odds"):
        class_score(z, 1, "logit")


def old_log_odds(logits):
    """The inline log-odds of saliency/gradients.py and saliency/sobol.py before class_score."""
    out = torch.empty_like(logits)
    for c in range(logits.shape[1]):
        others = torch.cat([logits[:, :c], logits[:, c + 1:]], 1)
        out[:, c] = logits[:, c] - torch.logsumexp(others, 1)
    return out


@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_occlusion_log_odds_are_unchanged_bit_for_bit(n_classes):
    """Occlusion's activation now reads models.class_score: the same numbers as before."""
    from robustmaps.saliency.gradients import log_odds

    z = random_logits(n_classes, seed=n_classes)
    assert torch.equal(log_odds(z), old_log_odds(z))


class RoiLinear(nn.Module):
    """Logits linear in the image (three classes, so that log-odds differ from a logit difference)."""

    def __init__(self, shape):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.w = nn.Parameter(torch.randn(3, *shape, generator=g) / np.prod(shape), requires_grad=False)

    def forward(self, x):
        return torch.einsum("bxyz,cxyz->bc", x[:, 0], self.w) * 20 + torch.tensor([0.5, -0.2, 0.1])


@pytest.mark.parametrize("output", ["probability", "log_odds"])
def test_sobol_outputs_are_unchanged(output):
    """Sobol's Y (mean target score over images) now reads models.class_score: the same numbers as
    the inline formulas (up to float32 rounding: the reference runs one factor row at a time)."""
    from robustmaps.saliency.sobol import evaluate, roi_lookup

    shape = (4, 5, 4)
    rng = np.random.default_rng(0)
    atlas = rng.integers(0, 4, shape)
    pos = roi_lookup(atlas, [1, 2, 3])
    images = torch.from_numpy(rng.uniform(0, 1, (3, 1, *shape)).astype(np.float32))
    factors = rng.uniform(0.5, 1.5, (7, 3))
    model = RoiLinear(shape).eval()
    got = evaluate(model, images, pos, factors, target=1, output=output, batch_size=6)
    want = []
    with torch.no_grad():
        for row in factors:
            lut = torch.from_numpy(np.concatenate([[1.0], row]).astype(np.float32))
            z = model(lut[pos][None, None] * images).float()
            y = torch.softmax(z, 1)[:, 1] if output == "probability" else old_log_odds(z)[:, 1]
            want.append(float(y.mean()))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_mask_score_term_is_the_class_score():
    """The masks' f of eq. (2) is class_score of the model's logits, for both kinds."""
    from robustmaps.masks import score_term

    shape = (4, 5, 4)
    model = RoiLinear(shape).eval()
    x = torch.rand(2, 1, *shape, generator=torch.Generator().manual_seed(4))
    for kind in SCORE_KINDS:
        with torch.no_grad():
            assert torch.equal(score_term(model, x, 2, kind), class_score(model(x), 2, kind))
