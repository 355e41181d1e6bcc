"""Automatic warnings per cell (`diagnostics.py`) and the exact worst case (`worst_case.bound_worst`)."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import one_thread
from hf_ssl_robust.attacks import make_attack
from hf_ssl_robust.diagnostics import checkpoint_steps, flag_legend, flag_marker, not_converged
from hf_ssl_robust.evaluation import evaluate
from hf_ssl_robust.heads import SSLForDepthEstimation, SSLForImageClassification, SSLForSemanticSegmentation
from hf_ssl_robust.metrics.functional import MeanIoUMeter
from hf_ssl_robust.tasks import get_task
from hf_ssl_robust.worst_case import bound_worst, worst_predictions

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)
SPEC = SimpleNamespace(ignore_index=255, max_depth=10.0, num_classes=4)


def _classifier(encoder, scale: float = 1.0):
    torch.manual_seed(0)  # the head's random init: independent of what ran before
    model = SSLForImageClassification.from_encoder(encoder, num_labels=4, image_size=32).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(scale * 20)  # a confident head; `scale` saturates its softmax
        model.classifier.bias.mul_(scale * 20)
    return model


def _loader(model, n=8, seed=0):
    """Two batches labelled with the model's clean predictions: every image starts correct."""
    g = torch.Generator().manual_seed(seed)
    pixels = torch.rand(n, 3, 32, 32, generator=g)
    with torch.no_grad():
        labels = model(pixel_values=pixels).logits.argmax(1)
    return [{"pixel_values": pixels[i : i + n // 2], "labels": labels[i : i + n // 2]} for i in range(0, n, n // 2)]


def test_zero_gradient__logits_scaled_by_1e4_flag_pgd_not_dlr(tiny_encoder):
    task = get_task("classification")
    attacks = {"pgd": make_attack("pgd", steps=2, seed=0), "apgd:dlr": make_attack("apgd", loss="dlr", steps=2, seed=0)}
    scaled = _classifier(tiny_encoder, scale=1e4)
    out = evaluate(scaled, _loader(scaled), task, SPEC, attacks=attacks)
    assert "zero_gradient" in out["pgd"]["flags"] and out["pgd"]["zero_gradient_share"] > 0.5
    assert "zero_gradient" not in out["apgd:dlr"]["flags"]  # DLR is scale-invariant: its gradient lives
    plain = _classifier(tiny_encoder)
    out = evaluate(plain, _loader(plain), task, SPEC, attacks=attacks)
    assert out["pgd"]["zero_gradient_share"] == 0 and "zero_gradient" not in out["pgd"]["flags"]


class _DropoutLeftOn(nn.Module):
    """A head whose logits go through dropout that `eval()` does not switch off (MC dropout)."""

    def __init__(self, head):
        super().__init__()
        self.head = head

    def forward(self, pixel_values):
        return F.dropout(self.head(pixel_values=pixel_values).logits, p=0.5, training=True)


def test_randomized__dropout_left_on_flags_every_row(tiny_encoder):
    task, model = get_task("classification"), _classifier(tiny_encoder)
    attacks = {"pgd": make_attack("pgd", steps=2, seed=0)}
    out = evaluate(_DropoutLeftOn(model), _loader(model), task, SPEC, attacks=attacks)
    assert out["none"]["flags"] == ["randomized"] and "randomized" in out["pgd"]["flags"]
    out = evaluate(model, _loader(model), task, SPEC, attacks=attacks)
    assert out["none"]["flags"] == [] and "randomized" not in out["pgd"]["flags"]


def test_checkpoints__iterates_and_final_value(tiny_encoder):
    assert checkpoint_steps(20) == [5, 10, 15, 20] and checkpoint_steps(2) == [1, 2] and checkpoint_steps(1) == [1]
    task, model = get_task("classification"), _classifier(tiny_encoder)
    attacks = {"pgd": make_attack("pgd", steps=4, seed=0), "embed": make_attack("embed", steps=4, seed=0),
               "apgd": make_attack("apgd", loss="ce", steps=4, seed=0)}
    out = evaluate(model, _loader(model), task, SPEC, attacks=attacks, worst_case=True)
    for name in attacks:
        assert list(out[name]["checkpoints"]) == (["3", "4"] if name == "embed" else ["1", "2", "3", "4"]), name
    assert list(out["worst"]["checkpoints"]) == ["3", "4"]  # the iterates every attack recorded
    for name in [*attacks, "worst"]:
        assert out[name]["checkpoints"]["4"] == out[name]["accuracy"]
    # APGD returns each image's best iterate: its checkpoints (best so far) never rise
    values = list(out["apgd"]["checkpoints"].values())
    assert values == sorted(values, reverse=True)
    assert out["none"]["checkpoints"] == {} and out["none"]["flags"] == []


@pytest.mark.parametrize("ckpts,clean,higher,expected", [
    ({15: 0.50, 20: 0.40}, 0.9, True, True),    # 0.10 of 0.50 damage in the last quarter
    ({15: 0.41, 20: 0.40}, 0.9, True, False),   # 2 % of the damage: converged
    ({15: 0.40, 20: 0.45}, 0.9, True, False),   # the last quarter lost damage (fixed-step PGD oscillates)
    ({15: 1.00, 20: 1.20}, 0.5, False, True),   # RMSE: higher is damage
    ({15: 0.9004, 20: 0.9}, 0.91, True, False),  # below the absolute floor
    ({20: 0.1}, 0.9, True, False),              # T = 1: nothing to compare
])
def test_not_converged__rule(ckpts, clean, higher, expected):
    assert not_converged(ckpts, 20 if 15 in ckpts else 1, clean, higher) is expected


def test_not_converged__two_small_steps_flagged_apgd_100_not(tiny_encoder):
    task, model = get_task("classification"), _classifier(tiny_encoder, scale=0.05)  # (the random tiny model needs a large ε)
    loader = _loader(model, n=16)
    short = {"pgd": make_attack("pgd", steps=2, step_size=8 / 255, eps=16 / 255, seed=0)}
    out = evaluate(model, loader, task, SPEC, attacks=short)
    assert out["pgd"]["checkpoints"]["1"] > out["pgd"]["checkpoints"]["2"] and "not_converged" in out["pgd"]["flags"]
    out = evaluate(model, loader, task, SPEC, attacks={"apgd": make_attack("apgd", loss="ce", steps=100, eps=16 / 255, seed=0)})
    assert "not_converged" not in out["apgd"]["flags"], out["apgd"]["checkpoints"]


def test_black_box__hook_called_per_attack_on_the_subset(tiny_encoder):
    task, model = get_task("classification"), _classifier(tiny_encoder)
    calls = []

    def stub(m, pixels, target, adv_pred):
        calls.append((pixels.shape, target.shape, adv_pred.shape))
        return len(calls) == 1  # "Square won" against the first attack only

    attacks = {"pgd": make_attack("pgd", steps=2, seed=0), "embed": make_attack("embed", steps=2, seed=0)}
    out = evaluate(model, _loader(model, n=40), task, SPEC, attacks=attacks, worst_case=True, black_box=stub)
    assert calls == [((16, 3, 32, 32), (16,), (16,))] * 2  # pgd, worst; the first 16 images
    assert "black_box_stronger" in out["pgd"]["flags"]
    assert "black_box_stronger" not in out["embed"]["flags"] + out["worst"]["flags"] + out["none"]["flags"]


def test_black_box__embedding_attack_never_compared_with_square(tiny_encoder):
    """EmbedAttack does not read the labels: a label-aware Square beating it is no sign of masked gradients."""
    task, model = get_task("classification"), _classifier(tiny_encoder)
    attacks = {"embed": make_attack("embed", steps=2, seed=0), "pgd": make_attack("pgd", steps=2, seed=0)}
    out = evaluate(model, _loader(model, n=20), task, SPEC, attacks=attacks, worst_case=True, black_box=lambda *a: True)
    assert "black_box_stronger" not in out["embed"]["flags"]
    assert "black_box_stronger" in out["pgd"]["flags"] and "black_box_stronger" in out["worst"]["flags"]


def test_zero_gradient__dense_tasks_count_labelled_pixels(tiny_encoder):
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(2, 3, 32, 32, generator=g)
    seg = SSLForSemanticSegmentation.from_encoder(tiny_encoder, num_labels=4, image_size=32).eval()
    with torch.no_grad():
        masks = seg(pixel_values=pixels).logits.argmax(1)
        seg.classifier.weight.mul_(1e5)
        seg.classifier.bias.mul_(1e5)
    masks[0, :4] = 255
    out = evaluate(seg, [{"pixel_values": pixels, "mask": masks}], get_task("segmentation"), SPEC,
                   attacks={"segpgd": make_attack("segpgd", steps=1, seed=0)})
    assert out["segpgd"]["zero_gradient_share"] > 0.5 and "zero_gradient" in out["segpgd"]["flags"]
    depth = SSLForDepthEstimation.from_encoder(tiny_encoder, image_size=32, max_depth=10.0).eval()
    maps = torch.rand(2, 32, 32, generator=g) * 5 + 0.5
    out = evaluate(depth, [{"pixel_values": pixels, "depth": maps}], get_task("depth"), SPEC,
                   attacks={"depth_pgd": make_attack("depth_pgd", steps=1, seed=0)})
    assert out["depth_pgd"]["zero_gradient_share"] == 0 and out["depth_pgd"]["flags"] == []


def test_worst__constructed_miou_case_bounded_by_every_attack():
    # per image, the lowest pixel accuracy gives mIoU 0.381 although attack b alone gives 0.167
    spec = SimpleNamespace(ignore_index=255, num_classes=3)
    target = torch.tensor([[[0, 2, 0, 0]], [[2, 1, 0, 0]]])
    preds = {"none": target, "a": torch.tensor([[[2, 0, 2, 0]], [[0, 1, 2, 2]]]), "b": torch.tensor([[[1, 1, 1, 0]], [[2, 0, 1, 2]]])}

    def miou(p):
        meter = MeanIoUMeter(num_labels=3)
        meter.update(p, target)
        return meter.compute()

    picked, _ = worst_predictions("segmentation", preds, target, spec)
    assert miou(picked)["mean_iou"] == pytest.approx(0.381, abs=1e-3) and miou(preds["b"])["mean_iou"] == pytest.approx(1 / 6)
    bounded = bound_worst([miou(p) for p in preds.values()], miou(picked))
    assert bounded["mean_iou"] == pytest.approx(1 / 6)
    assert all(bounded[k] <= miou(p)[k] for p in preds.values() for k in bounded)


@pytest.mark.parametrize("task_name", ["classification", "segmentation", "depth"])
def test_worst__never_above_clean_or_any_attack(task_name, tiny_encoder):
    g = torch.Generator().manual_seed(1)
    pixels = torch.rand(6, 3, 32, 32, generator=g)
    if task_name == "classification":
        model, target = _classifier(tiny_encoder), torch.randint(0, 4, (6,), generator=g)
    elif task_name == "segmentation":
        model, target = SSLForSemanticSegmentation.from_encoder(tiny_encoder, num_labels=4, image_size=32), torch.randint(0, 4, (6, 32, 32), generator=g)
    else:
        model, target = SSLForDepthEstimation.from_encoder(tiny_encoder, image_size=32, max_depth=10.0), torch.rand(6, 32, 32, generator=g) * 5 + 0.5
    task = get_task(task_name)
    attacks = {"embed": make_attack("embed", steps=2, seed=0),
               task.task_attack: make_attack(task.task_attack, steps=2, seed=0)}
    loader = [{"pixel_values": pixels[i : i + 3], task.target_key: target[i : i + 3]} for i in (0, 3)]
    out = evaluate(model.eval(), loader, task, SPEC, attacks=attacks, worst_case=True)
    metric, sign = task.primary_metric, (1 if task.higher_is_better else -1)
    for name in ["none", *attacks]:
        assert sign * out["worst"][metric] <= sign * out[name][metric] + 1e-12, name


def test_flag_marker_and_legend():
    assert flag_marker([]) == "" and flag_marker(["not_converged", "zero_gradient"]) == " ⚠NZ"
    legend = flag_legend(["zero_gradient"])
    assert legend.startswith("- ⚠Z `zero_gradient`: ") and "Do: " in legend and "not_converged" not in legend


def test_checkpoints__progressive_radius_skips_iterates_outside_eps(tiny_encoder):
    g = torch.Generator().manual_seed(0)
    seg = SSLForSemanticSegmentation.from_encoder(tiny_encoder, num_labels=4, image_size=32).eval()
    batch = {"pixel_values": torch.rand(2, 3, 32, 32, generator=g), "mask": torch.randint(0, 4, (2, 32, 32), generator=g)}
    attacks = {"segpgd": make_attack("segpgd", steps=8, seed=0),
               "apgd": make_attack("apgd", loss="masked_ce", steps=8, progressive=True, seed=0)}
    out = evaluate(seg, [batch], get_task("segmentation"), SPEC, attacks=attacks, worst_case=True)
    assert list(out["apgd"]["checkpoints"]) == ["6", "8"]  # 2 and 4 ran at radius 2ε and 1.5ε
    assert list(out["segpgd"]["checkpoints"]) == ["2", "4", "6", "8"] and list(out["worst"]["checkpoints"]) == ["6", "8"]
