"""Square Attack: the schedule and patterns of the paper, the query budget, per-image seeds, all three tasks.

The contract invariants (ball, [0, 1], eps = 0, input and model untouched, seeds) run in test_attacks.py."""

import math

import pytest
import torch
from torch import nn

from hf_ssl_robust.attacks import make_attack
from hf_ssl_robust.attacks.square import Square, ring_pattern, split_pattern, window_fraction
from conftest import one_thread
from test_attacks import Classifier, Depther, Segmenter, make_case, make_pixels

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


class Counting(nn.Module):
    """Wraps a model and counts the images it is called on."""

    def __init__(self, model):
        super().__init__()
        self.model, self.images, self.calls = model, 0, 0

    def forward(self, x):
        self.images += x.shape[0]
        self.calls += 1
        return self.model(x)


def test_window_fraction__paper_schedule_rescaled_to_the_budget():
    # 10,000 queries: p halves after 10, 50, 200, ... (the paper's checkpoints)
    assert window_fraction(0.8, 0, 10000) == 0.8 and window_fraction(0.8, 9, 10000) == 0.8
    assert window_fraction(0.8, 10, 10000) == 0.4 and window_fraction(0.8, 50, 10000) == 0.2
    assert window_fraction(0.8, 9999, 10000) == 0.8 / 2**9
    # 1,000 queries: the same shape, ten times faster
    assert window_fraction(0.8, 0, 1000) == 0.8 and window_fraction(0.8, 1, 1000) == 0.4
    assert window_fraction(0.8, 999, 1000) == 0.8 / 2**9


def test_ring_pattern__hand_values():
    # side 3 (n = 1): the centre sums 1/2² + 1/1², the ring around it 1/2² only
    torch.testing.assert_close(ring_pattern(3, 3), torch.tensor([[0.25, 0.25, 0.25], [0.25, 1.25, 0.25], [0.25, 0.25, 0.25]]))
    eta = split_pattern(6)
    assert eta.shape == (6, 6) and math.isclose(float(eta.norm()), 1.0, rel_tol=1e-6)
    assert (eta[:, :3] > 0).all() and (eta[:, 3:] < 0).all()  # two halves of opposite sign
    torch.testing.assert_close(eta[:, :3].sum(), -eta[:, 3:].sum())


def test_square__linf_init_is_vertical_stripes_at_the_vertices():
    x = torch.full((2, 3, 16, 16), 0.5)
    start = Square(eps=8 / 255, steps=0, seed=0).perturb(lambda p: p.mean((2, 3)), x, torch.zeros(2, dtype=torch.long))
    delta = start.pixels - x
    torch.testing.assert_close(delta.abs(), torch.full_like(delta, 8 / 255))  # every pixel at x ± eps
    assert torch.equal(delta, delta[:, :, :1].expand_as(delta))  # constant down each column
    assert len(delta[0, 0, 0].unique()) == 2


def test_square__l2_init_fills_the_ball():
    x = torch.full((2, 3, 20, 20), 0.5)
    start = Square(eps=1.0, steps=0, norm="l2", seed=0).perturb(lambda p: p.mean((2, 3)), x, torch.zeros(2, dtype=torch.long))
    norms = (start.pixels - x).flatten(1).norm(dim=1)
    assert ((norms > 0.999) & (norms <= 1.0)).all()


def test_square__l2_updates_keep_the_ball_and_use_it(tiny_encoder):
    _, model, x, target = make_case("square:margin", "classification", tiny_encoder)
    res = make_attack("square", eps=0.5, norm="l2", steps=30, seed=0).perturb(model, x, target)
    norms = (res.pixels - x).flatten(1).norm(dim=1)
    assert (norms <= 0.5).all() and (norms > 0.3).all()
    assert (res.losses[1:] >= res.losses[:-1]).all()  # only improvements are accepted


def test_square__query_budget_and_early_stop(tiny_encoder):
    model = Counting(Classifier(tiny_encoder).eval())
    x = make_pixels(batch=4)
    with torch.no_grad():
        labels = model.model(x).argmax(1)
    model.images = model.calls = 0
    Square(eps=8 / 255, steps=10, seed=0).perturb(model, x, labels)
    assert model.calls <= 11 and model.images <= 4 * 11  # start point + at most one query per step, no backward
    # a model that is wrong everywhere: every image stops at once, only the start point is scored
    model.images = model.calls = 0
    res = Square(eps=8 / 255, steps=10, seed=0).perturb(model, x, (labels + 1) % 5)
    assert model.calls == 1 and (res.scores > 0).all()


@pytest.mark.parametrize("task,loss", [("classification", "margin"), ("segmentation", "pixel_margin"), ("depth", "depth")])
def test_square__per_image_seeds_make_results_batch_independent(task, loss, tiny_encoder):
    _, model, x, target = make_case(f"square:{loss}", task, tiny_encoder)
    attack = make_attack("square", loss=loss, steps=6, seed=(10, 11))
    both = attack.perturb(model, x, target)
    alone = make_attack("square", loss=loss, steps=6, seed=(11,)).perturb(model, x[1:], target[1:])
    torch.testing.assert_close(both.pixels[1:], alone.pixels, atol=1e-6, rtol=0)
    torch.testing.assert_close(both.scores[1:], alone.scores, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("task,loss", [("segmentation", "pixel_margin"), ("depth", "depth")])
def test_square__dense_tasks_raise_the_task_loss_per_image(task, loss, tiny_encoder):
    _, model, x, target = make_case(f"square:{loss}", task, tiny_encoder)
    start = make_attack("square", loss=loss, steps=0, seed=0)
    res = make_attack("square", loss=loss, steps=25, seed=0).perturb(model, x, target)
    x0 = start.perturb(model, x, target).pixels
    with torch.no_grad():
        prepared = start.prepare_target(model, x, target)
        before = start.objective(start.forward(model, x0), prepared, 0)
        after = start.objective(start.forward(model, res.pixels), prepared, 0)
    assert (after >= before).all() and (after > before).any()
    torch.testing.assert_close(res.scores, start.score(start.forward(model, res.pixels), prepared))


def test_square__beats_a_saturated_softmax_where_the_gradient_is_zero():
    """Logits x 1e4: CE and its gradient are exactly 0, PGD stays at its random start; Square reads the margin."""
    from test_diagnostics_blackbox import ChannelMeans, scenes

    x = scenes(n=16)
    plain, saturated = ChannelMeans(1.0).eval(), ChannelMeans(1e4).eval()
    with torch.no_grad():
        top2 = plain(x).topk(2, dim=1).values
        x = x[top2[:, 0] - top2[:, 1] > 0.05]  # margins x 1e4 > 500: exp(-500) underflows, the gradient is exactly 0
        labels = plain(x).argmax(1)
    assert len(x) >= 6
    x_adv = make_attack("pgd", steps=5, seed=0).perturb(saturated, x, labels).pixels
    start = make_attack("pgd", steps=0, seed=0).perturb(saturated, x, labels).pixels
    assert torch.equal(x_adv, start)  # zero gradient: PGD never moved from its random start
    res = Square(eps=8 / 255, steps=40, seed=0).perturb(saturated, x, labels)
    with torch.no_grad():
        assert (saturated(res.pixels).argmax(1) != labels).sum() >= 2 + (saturated(x_adv).argmax(1) != labels).sum()


def test_square__bad_settings_give_clear_errors(tiny_encoder):
    with pytest.raises(ValueError, match=r"p_init .* must lie in \(0, 1\]"):
        make_attack("square", p_init=0)
    with pytest.raises(ValueError, match="Unknown attack loss 'cw'"):
        make_attack("square", loss="cw")
    with pytest.raises(ValueError, match="max_depth must be > 0"):
        make_attack("square", loss="depth", max_depth=0)
    clf = Classifier(tiny_encoder).eval()
    with pytest.raises(ValueError, match="needs a target"):
        Square(steps=1).perturb(clf, make_pixels())
    with pytest.raises(ValueError, match=r"Attack loss 'pixel_margin' is a segmentation loss: it expects logits \[B, C, H, W\]"):
        Square(loss="pixel_margin", steps=1).perturb(clf, make_pixels(), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="Got 3 per-image seeds for 2 images"):
        Square(steps=1, seed=(1, 2, 3)).perturb(clf, make_pixels(), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        Square(steps=1).perturb(clf, make_pixels() * 3, torch.zeros(2, dtype=torch.long))


def test_square__unused_modules_keep_working(tiny_encoder):
    """Segmenter and Depther with HF outputs go through the same objective selection as APGD."""
    x = make_pixels()
    seg, dep = Segmenter(tiny_encoder).eval(), Depther(tiny_encoder, as_output=True).eval()
    with torch.no_grad():
        masks, depth = seg(x).argmax(1), dep(x).predicted_depth[:, 0] * 1.2
    assert not torch.equal(make_attack("square", loss="js", steps=3, seed=0).perturb(seg, x, masks).pixels, x)
    assert not torch.equal(make_attack("square", loss="depth", steps=3, seed=0).perturb(dep, x, depth).pixels, x)
