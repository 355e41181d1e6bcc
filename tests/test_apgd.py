"""APGD and the per-task objectives: peer check against torchattacks, losses against plain
re-implementations, the step-size schedule, and APGD never weaker than PGD at equal steps."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hf_ssl_robust.attacks import make_attack
from hf_ssl_robust.attacks.apgd import APGD, APGDStep, checkpoints
from hf_ssl_robust.attacks.objectives import LOSSES, damage

from test_attacks import make_case, make_pixels  # the contract tests' tiny task models
from conftest import one_thread

PEER_HINT = "The README install command installs it: pip install --no-deps torchattacks==3.5.1 (its torchvision dependency is never imported)."


_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


def small_cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()


@pytest.mark.parametrize("norm,eps,loss", [("linf", 2 / 255, "ce"), ("linf", 2 / 255, "dlr"), ("l2", 0.25, "dlr")])
def test_apgd__matches_torchattacks(norm, eps, loss):
    """Peer check: robust accuracy of our APGD and torchattacks.APGD (a port of AutoAttack's) on 128 images."""
    try:
        import torchattacks
    except ImportError:
        pytest.fail("torchattacks is missing. " + PEER_HINT)
    model = small_cnn()
    x = torch.rand(128, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    peer = torchattacks.APGD(model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, steps=20, n_restarts=1, seed=0, loss=loss)
    ours = make_attack("apgd", loss=loss, eps=eps, steps=20, norm=norm, seed=0).perturb(model, x, y).pixels
    pgd = make_attack("pgd", eps=eps, step_size=eps / 4, steps=20, norm=norm, seed=0, track_best=True).perturb(model, x, y).pixels
    with torch.no_grad():
        robust = {name: int((model(adv).argmax(1) == y).sum()) for name, adv in [("peer", peer(x, y)), ("ours", ours), ("pgd", pgd)]}
    assert 0 < robust["ours"] < 120, robust  # the check means something: some images fall, some stand
    assert abs(robust["ours"] - robust["peer"]) <= 2, robust
    if loss == "dlr":  # and it is not plain PGD under another name: here DLR finds what CE-PGD misses
        assert robust["ours"] < robust["pgd"] - 3, robust


def _seg_batch(seed=0, classes=5):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, classes, 6, 7, generator=g) * 2
    masks = torch.randint(0, classes, (3, 6, 7), generator=g)
    masks[0, :2] = 255
    masks[2] = 255  # an image with no labelled pixel
    masks[1, logits[1].argmax(0) == masks[1]] = (masks[1, logits[1].argmax(0) == masks[1]] + 1) % classes  # image 1: all wrong
    masks[1, 0, 0] = logits[1, :, 0, 0].argmax()  # ...but one pixel
    return logits, masks


def _attack(**kw):
    return APGD(loss="masked_ce", **kw)


def test_js__matches_a_plain_reimplementation():
    logits, masks = _seg_batch()
    got = LOSSES["segmentation"]["js"](logits, masks, 0, _attack())
    for b in range(logits.shape[0]):
        values = []
        for i in range(masks.shape[1]):
            for j in range(masks.shape[2]):
                label = int(masks[b, i, j])
                if label == 255:
                    continue
                p = logits[b, :, i, j].double().softmax(0)
                e = F.one_hot(torch.tensor(label), p.numel()).double()
                m = (p + e) / 2
                kl = lambda a, c: sum(float(a[k] * math.log(a[k] / c[k])) for k in range(len(a)) if a[k] > 0)  # noqa: E731
                values.append(0.5 * kl(p, m) + 0.5 * kl(e, m))
        expected = sum(values) / len(values) if values else 0.0
        assert got[b].item() == pytest.approx(expected, rel=1e-5, abs=1e-7)
    assert (got >= 0).all() and (got <= math.log(2)).all()


def test_masked_ce_and_balanced__match_plain_reimplementations():
    logits, masks = _seg_batch()
    attack = _attack()
    masked = LOSSES["segmentation"]["masked_ce"](logits, masks, 0, attack)
    balanced = LOSSES["segmentation"]["balanced_masked_ce"](logits, masks, 0, attack)
    for b in range(logits.shape[0]):
        labelled, total, per_class, counts = 0, 0.0, {}, {}
        for i in range(masks.shape[1]):
            for j in range(masks.shape[2]):
                label = int(masks[b, i, j])
                if label == 255:
                    continue
                labelled += 1
                counts[label] = counts.get(label, 0) + 1
                if int(logits[b, :, i, j].argmax()) == label:
                    ce = -float(logits[b, :, i, j].log_softmax(0)[label])
                    total += ce
                    per_class[label] = per_class.get(label, 0.0) + ce
        assert masked[b].item() == pytest.approx(total / max(labelled, 1), rel=1e-5, abs=1e-7)
        expected = sum(v / counts[c] for c, v in per_class.items()) / max(len(counts), 1)
        assert balanced[b].item() == pytest.approx(expected, rel=1e-5, abs=1e-7)
    assert masked[2] == 0 and balanced[2] == 0  # nothing labelled
    # the mask is detached: a wrong pixel gets no gradient, a correct one does
    logits = logits.clone().requires_grad_(True)
    LOSSES["segmentation"]["masked_ce"](logits, masks, 0, attack).sum().backward()
    wrong = (logits.argmax(1) != masks) | (masks == 255)
    assert (logits.grad.abs().sum(1)[wrong] == 0).all() and (logits.grad.abs().sum(1)[~wrong] > 0).all()


def test_dlr_and_damage__hand_values():
    logits = torch.tensor([[4.0, 1.0, 0.0, -1.0], [0.0, 3.0, 1.0, 2.0]])
    labels = torch.tensor([0, 0])
    dlr = LOSSES["classification"]["dlr"](logits, labels, 0, APGD(loss="dlr"))
    torch.testing.assert_close(dlr, torch.tensor([-(4 - 1) / (4 - 0), -(0 - 3) / (3 - 1)]))
    torch.testing.assert_close(damage("classification", logits, labels, None), torch.tensor([-3.0, 3.0]))
    depth_ref, valid = torch.full((1, 2, 2), 2.0), torch.tensor([[[True, True], [True, False]]])
    pred = torch.tensor([[[2.0, 4.0], [1.0, 9.0]]])
    assert damage("depth", pred, (depth_ref, valid), None).item() == pytest.approx(math.sqrt((0 + 4 + 1) / 3))


def test_depth_tol__only_pixels_within_tolerance_get_gradient():
    ref = torch.full((1, 4, 4), 2.0)
    pred = ref.clone()
    pred[0, 0] = 3.0  # ratio 1.5: outside δ1
    pred[0, 1] = 2.2
    pred.requires_grad_(True)
    loss = LOSSES["depth"]["depth_tol"](pred, (ref, torch.ones_like(ref, dtype=torch.bool)), 0, APGD(loss="depth_tol"))
    loss.sum().backward()
    assert (pred.grad[0, 0] == 0).all() and pred.grad[0, 1:].abs().sum() > 0


def test_checkpoints__autoattack_schedule():
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]  # ⌈p_j·100⌉ of the paper's p_j
    assert checkpoints(20)[:3] == [4, 7, 9] and checkpoints(1) == []


def test_apgd_step__halves_and_restarts_from_best_when_stalled():
    x = torch.full((2, 3, 4, 4), 0.5)
    policy = APGDStep(APGD(loss="ce", steps=10, eps=0.1), x, 0.1)
    grad = torch.ones_like(x)
    xs = [x.clone()]
    best_point = None
    for step in range(3):  # checkpoint at step 2 (k = 2 for 10 steps)
        # image 0: objective rises every step; image 1: first iterate is its best, then it falls
        loss = torch.tensor([float(step), -float(step)])
        if step == 0:
            best_point = xs[-1][1].clone()
        xs.append(policy.next(xs[-1], grad if step < 2 else -grad, loss, step))
    assert policy.eta.tolist() == pytest.approx([0.2, 0.1])  # 2ε, halved for image 1 only
    # image 1 restarted from its best point (0.5) with that point's gradient (+1), not the current one (-1):
    # z = 0.5 + 0.1, then momentum from the previous base point 0.6: 0.5 + 0.75·0.1 + 0.25·(0.5 − 0.6)
    torch.testing.assert_close(xs[-1][1], torch.full_like(best_point, 0.55))
    torch.testing.assert_close(xs[-1][0], torch.full_like(best_point, 0.45))  # image 0 kept going, with -grad


@pytest.mark.parametrize("task,pgd,loss", [("classification", "pgd", "ce"), ("segmentation", "segpgd", "masked_ce"),
                                           ("depth", "depth_pgd", "depth")])
def test_apgd__never_weaker_than_pgd_at_equal_steps(task, pgd, loss, tiny_encoder):
    """On the tiny models' batches, APGD's damage per image is at least that of PGD-20 with its best iterate."""
    _, model, _, _ = make_case(pgd, task, tiny_encoder)
    x = make_pixels(batch=8, seed=3)
    with torch.no_grad():
        clean = model(x)
    target = clean.argmax(1) if task != "depth" else clean * 1.05
    eps = 4 / 255
    apgd = make_attack("apgd", loss=loss, eps=eps, steps=20, seed=0)
    ref = make_attack(pgd, eps=eps, step_size=eps / 4, steps=20, seed=0, track_best=True)
    with torch.no_grad():
        prepared = apgd.prepare_target(model, x, target)
        hurt = {name: damage(task, apgd.forward(model, a.perturb(model, x, target).pixels), prepared, apgd)
                for name, a in [("apgd", apgd), ("pgd", ref)]}
    assert hurt["apgd"].mean() >= hurt["pgd"].mean(), hurt
    if task == "classification":
        assert ((hurt["apgd"] > 0).sum() >= (hurt["pgd"] > 0).sum()), hurt


def test_apgd__restarts_keep_the_most_damaging(tiny_encoder):
    _, model, x, target = make_case("pgd", "classification", tiny_encoder)
    one = APGD(loss="ce", steps=3, seed=0).perturb(model, x, target)
    two = APGD(loss="ce", steps=3, seed=0, restarts=2).perturb(model, x, target)
    assert (two.scores >= one.scores).all() and two.losses.shape == (6,)
    assert (two.pixels - x).abs().max() <= 8 / 255


def test_apgd__bad_settings_give_clear_errors(tiny_encoder):
    with pytest.raises(ValueError, match=r"Unknown attack loss 'cw'; available per task: classification: ce, dlr, margin; segmentation"):
        make_attack("apgd", loss="cw")
    with pytest.raises(ValueError, match="restarts must be an int >= 1"):
        make_attack("apgd", restarts=0)
    with pytest.raises(ValueError, match="needs track_best"):
        make_attack("apgd", restarts=2, track_best=False)
    _, segmenter, x, masks = make_case("segpgd", "segmentation", tiny_encoder)
    with pytest.raises(ValueError, match="'dlr' is a classification loss: it expects logits"):
        make_attack("apgd", loss="dlr", steps=1).perturb(segmenter, x, masks)
    two_classes = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 2))
    with pytest.raises(ValueError, match="at least 3 classes"):
        make_attack("apgd", loss="dlr", steps=1).perturb(two_classes, x, torch.zeros(2, dtype=torch.long))


def test_apgd__progressive_radius_goes_beyond_eps_but_returns_inside(tiny_encoder):
    """SEA's schedule: forwards see perturbations up to 2ε in the first phase; the result is inside ε."""
    _, model, x, masks = make_case("segpgd", "segmentation", tiny_encoder)
    seen = []
    model.register_forward_pre_hook(lambda m, inp: seen.append(float((inp[0].detach() - x).abs().max())))
    eps = 4 / 255
    attack = make_attack("apgd", loss="js", eps=eps, steps=10, seed=0, progressive=True)
    result = attack.perturb(model, x, masks)
    assert (result.pixels - x).abs().max() <= eps and result.pixels.min() >= 0 and result.pixels.max() <= 1
    assert max(seen[:4]) > 1.5 * eps and max(seen[:4]) <= 2 * eps + 1e-6  # phase 1 (steps 0-2): up to 2ε
    assert max(seen[7:]) <= eps + 1e-6  # iterates of the last phase (steps 7-9) and the final one: inside ε
    assert torch.equal(attack.perturb(model, x, masks).pixels, result.pixels)  # deterministic
    with pytest.raises(ValueError, match="needs track_best"):
        make_attack("apgd", progressive=True, track_best=False)


def test_apgd__restarts_with_per_image_seeds(tiny_encoder):
    _, model, x, target = make_case("pgd", "classification", tiny_encoder)
    res = APGD(loss="dlr", steps=2, seed=(3, 4), restarts=2).perturb(model, x, target)
    alone = APGD(loss="dlr", steps=2, seed=(4,), restarts=2).perturb(model, x[1:], target[1:])
    assert torch.equal(res.pixels[1:], alone.pixels)  # an image's result does not depend on its batch
