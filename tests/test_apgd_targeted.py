"""APGD-T (targeted DLR over the runner-up classes) and the losses added for SEA and Square:
hand values, gradients where they should (not) be, and APGD-T at least as strong as APGD-DLR."""

import pytest
import torch
from torch import nn

from hf_ssl_robust.attacks import make_attack
from hf_ssl_robust.attacks.apgd import APGD
from hf_ssl_robust.attacks.apgd_targeted import APGDT, targeted_dlr
from hf_ssl_robust.attacks.objectives import LOSSES, damage
from conftest import one_thread
from test_attacks import make_case

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


def small_cnn(classes=10):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, classes)).eval()


class Counting(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.images = model, []

    def forward(self, x):
        self.images.append(x.shape[0])
        return self.model(x)


def test_targeted_dlr__hand_values():
    logits = torch.tensor([[5.0, 3.0, 1.0, 0.0, -2.0]])
    y, t = torch.tensor([0]), torch.tensor([2])
    # −(z_y − z_t) / (z_π1 − (z_π3 + z_π4) / 2) = −(5 − 1) / (5 − (1 + 0) / 2)
    torch.testing.assert_close(targeted_dlr(logits, y, t), torch.tensor([-4 / 4.5]))
    torch.testing.assert_close(targeted_dlr(logits * 7 + 3, y, t), torch.tensor([-4 / 4.5]))  # shift and scale invariant
    with pytest.raises(ValueError, match="at least 4 classes"):
        targeted_dlr(logits[:, :3], y, t)


def test_masked_spherical__hand_values_and_gradient_only_on_correct_pixels():
    # pixel (0,0): label 0, logits (3, 4) -> wrong; (0,1): label 1, logits (1, 2) -> correct, −2/√5;
    # (1,0): ignored; (1,1): label 0, logits (6, -8) -> correct, −6/10
    logits = torch.tensor([[[3.0, 1.0], [9.0, 6.0]], [[4.0, 2.0], [9.0, -8.0]]])[None]  # [1, 2, 2, 2]
    masks = torch.tensor([[[0, 1], [255, 0]]])
    attack = APGD(loss="masked_spherical")
    value = LOSSES["segmentation"]["masked_spherical"](logits, masks, 0, attack)
    torch.testing.assert_close(value, torch.tensor([(0 - 2 / 5**0.5 - 0.6) / 3]))
    torch.testing.assert_close(LOSSES["segmentation"]["masked_spherical"](logits * 50, masks, 0, attack), value)  # scale invariant
    logits = logits.clone().requires_grad_(True)
    LOSSES["segmentation"]["masked_spherical"](logits, masks, 0, attack).sum().backward()
    g = logits.grad.abs().sum(1)[0]
    assert g[0, 0] == 0 and g[1, 0] == 0 and g[0, 1] > 0 and g[1, 1] > 0


def test_margin_and_pixel_margin__hand_values():
    logits = torch.tensor([[4.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    labels = torch.tensor([0, 0])
    torch.testing.assert_close(LOSSES["classification"]["margin"](logits, labels, 0, None), torch.tensor([-3.0, 3.0]))
    seg = torch.tensor([[[2.0, 0.0]], [[0.0, 5.0]]])[None]  # [1, C=2, 1, 2]: pixel 0 correct by 2, pixel 1 wrong by 5
    masks = torch.tensor([[[0, 0]]])
    value = LOSSES["segmentation"]["pixel_margin"](seg, masks, 0, APGD(loss="pixel_margin"))
    torch.testing.assert_close(value, torch.tensor([(-2.0 + 0.0) / 2]))  # the wrong pixel counts 0, not +5


def test_apgd_t__at_least_as_strong_as_apgd_dlr_and_targets_runner_ups():
    model = Counting(small_cnn())
    torch.manual_seed(1)
    x = torch.rand(16, 3, 16, 16)
    with torch.no_grad():
        labels = model.model(x).argmax(1)
    eps = 2 / 255
    dlr = make_attack("apgd", loss="dlr", eps=eps, steps=10, seed=0).perturb(model.model, x, labels)
    model.images.clear()
    tgt = make_attack("apgd_t", eps=eps, steps=10, seed=0, target_classes=3).perturb(model, x, labels)
    with torch.no_grad():
        hurt = {k: damage("classification", model.model(r.pixels), labels, None) for k, r in (("dlr", dlr), ("t", tgt))}
    assert (hurt["t"] > 0).sum() >= (hurt["dlr"] > 0).sum() and (hurt["t"] > 0).any(), hurt
    torch.testing.assert_close(tgt.scores, hurt["t"])
    assert (tgt.pixels - x).abs().max() <= eps and tgt.losses.shape == (10,)
    # one clean forward, then per target class a run of 11 forwards on the images still correct
    assert model.images[0] == 16 and len(model.images) <= 1 + 3 * 11
    assert model.images[-1] <= 16 - int((tgt.scores > 0).sum()) + int((hurt["t"] > 0).sum())


def test_apgd_t__more_target_classes_never_hurt_less():
    model = small_cnn()
    torch.manual_seed(2)
    x = torch.rand(32, 3, 16, 16)
    with torch.no_grad():
        labels = model(x).argmax(1)
    wrong = [int((make_attack("apgd_t", eps=1 / 255, steps=5, seed=0, target_classes=k).perturb(model, x, labels).scores > 0).sum())
             for k in (1, 3, 9)]
    untargeted = int((make_attack("apgd", loss="dlr", eps=1 / 255, steps=5, seed=0).perturb(model, x, labels).scores > 0).sum())
    assert wrong == sorted(wrong) and wrong[-1] > wrong[0] and wrong[-1] > untargeted, (wrong, untargeted)  # measured: [8, 9, 9], 8


def test_apgd_t__per_image_seeds_and_contract(tiny_encoder):
    _, model, x, target = make_case("apgd_t", "classification", tiny_encoder)
    both = APGDT(steps=2, seed=(3, 4), target_classes=2).perturb(model, x, target)
    alone = APGDT(steps=2, seed=(4,), target_classes=2).perturb(model, x[1:], target[1:])
    assert torch.equal(both.pixels[1:], alone.pixels)


def test_apgd_t__bad_settings_give_clear_errors():
    with pytest.raises(ValueError, match="apgd_t ascends the targeted DLR loss: loss must be 'dlr', got 'ce'"):
        make_attack("apgd_t", loss="ce")
    with pytest.raises(ValueError, match="target_classes must be an int >= 1"):
        make_attack("apgd_t", target_classes=0)
    three = small_cnn(classes=3)
    with pytest.raises(ValueError, match="apgd_t needs at least 4 classes"):
        make_attack("apgd_t", steps=1).perturb(three, torch.rand(2, 3, 8, 8), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="needs a target"):
        make_attack("apgd_t", steps=1).perturb(small_cnn(), torch.rand(2, 3, 8, 8))
