"""black_box_stronger: Square beats a white-box attack whose gradient is masked, and only then."""

import pytest
import torch

from hf_ssl_robust.attacks import make_attack
from hf_ssl_robust.diagnostics_blackbox import (
    BlackBoxCheck,
    black_box_stronger,
    blackbox_flag,
    blackbox_subset,
    prediction_damage,
    stronger_per_image,
)
from conftest import one_thread
from test_attacks import Classifier, Segmenter, make_case, make_pixels

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)
EPS = 8 / 255


class ChannelMeans(torch.nn.Module):
    """A head on the simplest encoder (the channel means): class = the brightest channel, logits x `scale`.

    With scale = 1e4 the softmax saturates: CE is exactly 0 with an exactly zero gradient wherever the
    margin exceeds ~0.01, so PGD stays at its random start while the model is as fragile as before."""

    def __init__(self, scale):
        super().__init__()
        self.head, self.scale = torch.nn.Linear(3, 3), scale
        with torch.no_grad():
            self.head.weight.copy_(10 * torch.eye(3))
            self.head.bias.zero_()

    def forward(self, x):
        return self.head(x.mean((2, 3))) * self.scale


def scenes(n=12, seed=0):
    """Textured images whose channel means differ by a few /255: within reach of eps = 8/255."""
    g = torch.Generator().manual_seed(seed)
    offsets = (torch.rand(n, 3, 1, 1, generator=g) - 0.5) * 0.08
    return (0.5 + offsets + 0.2 * (torch.rand(n, 3, 32, 32, generator=g) - 0.5)).clamp(0, 1)


def test_black_box_stronger__flags_a_saturated_head_and_not_the_plain_one():
    x = scenes()
    results = {}
    for scale in (1.0, 1e4):
        model = ChannelMeans(scale).eval()
        with torch.no_grad():
            labels = model(x).argmax(1)  # every image correct when clean
        adv = make_attack("pgd", eps=EPS, steps=10, seed=0).perturb(model, x, labels).pixels
        with torch.no_grad():
            white = prediction_damage("classification", model(adv).argmax(1), labels)
        results[scale] = white, black_box_stronger(model, "classification", x, labels, white, eps=EPS, queries=50,
                                                   seeds=list(range(len(x))))
    (white_plain, plain), (white_sat, saturated) = results[1.0], results[1e4]
    assert white_plain.mean() == 1 and white_sat.mean() < 0.2  # the masked gradient left PGD (nearly) powerless
    assert saturated.flagged and int(saturated.stronger.sum()) >= 3, saturated.as_dict()
    assert not plain.flagged and int(plain.stronger.sum()) == 0, plain.as_dict()
    # Square ranks by the margin: the scale does not change what it finds
    torch.testing.assert_close(plain.square_damage, saturated.square_damage)
    assert isinstance(saturated, BlackBoxCheck) and saturated.as_dict()["images"] == 12
    assert (saturated.square_pixels - x).abs().max() <= EPS
    # several white-box attacks of a cell against one Square run
    model = ChannelMeans(1e4).eval()
    both = black_box_stronger(model, "classification", x, labels, {"pgd": white_sat, "apgd:ce": white_plain}, eps=EPS,
                              queries=50, seeds=list(range(len(x))))
    assert set(both) == {"pgd", "apgd:ce"} and both["pgd"].flagged and not both["apgd:ce"].flagged
    assert torch.equal(both["pgd"].stronger, saturated.stronger)


def test_black_box_stronger__dense_tasks_and_model_left_untouched(tiny_encoder):
    _, seg, x, masks = make_case("square:pixel_margin", "segmentation", tiny_encoder)
    seg.train()
    modes = {n: m.training for n, m in seg.named_modules()}
    clean_pred = Segmenter.forward(seg.eval(), x).argmax(1)
    seg.train()
    white = prediction_damage("segmentation", clean_pred, masks)  # a white-box attack that did nothing
    check = black_box_stronger(seg, "segmentation", x, masks, white, eps=EPS, queries=20, seeds=[0, 1])
    assert {n: m.training for n, m in seg.named_modules()} == modes
    assert check.square_damage.shape == (2,) and (check.square_damage >= 0).all()
    assert torch.equal(check.stronger, check.square_damage > white + 0.02)
    _, dep, x, depth = make_case("square:depth", "depth", tiny_encoder)
    with torch.no_grad():
        white = prediction_damage("depth", dep(x), depth)
    check = black_box_stronger(dep, "depth", x, depth, white, eps=EPS, queries=10, seeds=5)
    assert torch.isfinite(check.square_damage).all() and torch.equal(check.stronger, check.square_damage > white * 1.05)


def test_prediction_damage_and_margins__hand_values():
    assert prediction_damage("classification", torch.tensor([1, 2, 3]), torch.tensor([1, 0, 3])).tolist() == [0, 1, 0]
    pred = torch.tensor([[[0, 1], [1, 1]]])
    mask = torch.tensor([[[0, 0], [255, 1]]])
    assert prediction_damage("segmentation", pred, mask).tolist() == pytest.approx([1 / 3])
    depth = prediction_damage("depth", torch.full((2, 2, 2), 2.0), torch.tensor([[[1.0, 2.0], [0.0, 20.0]], [[0.0, 0.0], [0.0, 0.0]]]))
    assert depth[0].item() == pytest.approx((1 / 2) ** 0.5) and torch.isnan(depth[1])
    # classification: only images the white-box attack left correct count; segmentation: 2 points; depth: 5 %
    assert stronger_per_image("classification", torch.tensor([1.0, 1.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])).tolist() == [True, False, False]
    assert stronger_per_image("segmentation", torch.tensor([0.53, 0.51]), torch.tensor([0.5, 0.5])).tolist() == [True, False]
    assert stronger_per_image("depth", torch.tensor([1.06, 1.04, float("nan")]), torch.tensor([1.0, 1.0, 1.0])).tolist() == [True, False, False]


def test_blackbox_flag__share_and_count_over_the_whole_subset():
    assert not blackbox_flag(torch.zeros(0, dtype=torch.bool))
    assert not blackbox_flag(torch.tensor([True] + [False] * 4))  # 20 % but a single image
    assert blackbox_flag(torch.tensor([True, True] + [False] * 8))  # 2 of 10: 20 %
    assert not blackbox_flag(torch.tensor([True, True] + [False] * 18))  # 2 of 20: 10 %, not more


def test_blackbox_subset__seeded_and_sorted():
    a, b = blackbox_subset(100, 10, seed=0), blackbox_subset(100, 10, seed=0)
    assert a == b and a == sorted(a) and len(set(a)) == 10 and max(a) < 100
    assert a != blackbox_subset(100, 10, seed=1)
    assert blackbox_subset(5, 10) == [0, 1, 2, 3, 4]


def test_black_box_stronger__bad_input(tiny_encoder):
    clf = Classifier(tiny_encoder).eval()
    x, labels = make_pixels(), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"task must be one of \['classification', 'segmentation', 'depth'\], got 'detection'"):
        black_box_stronger(clf, "detection", x, labels, torch.zeros(2), eps=EPS)
    with pytest.raises(ValueError, match=r"white_box_damage must hold one value per image, shape \(2,\), got \(3,\)"):
        black_box_stronger(clf, "classification", x, labels, torch.zeros(3), eps=EPS)
    with pytest.raises(ValueError, match=r"white_box_damage\['pgd'\] must hold one value per image"):
        black_box_stronger(clf, "classification", x, labels, {"pgd": torch.zeros(1)}, eps=EPS)
    with pytest.raises(ValueError, match="queries must be an int >= 1"):
        black_box_stronger(clf, "classification", x, labels, torch.zeros(2), eps=EPS, queries=0)
    with pytest.raises(ValueError, match="num_images and size must be >= 0"):
        blackbox_subset(-1)
