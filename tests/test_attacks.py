"""Contract tests for every registered attack x the task it applies to, on tiny models."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import DepthEstimatorOutput, ImageClassifierOutput

from hf_ssl_robust.attacks import ATTACKS, Attack, AttackResult, DepthPGD, EmbedAttack, SegPGD, make_attack
from hf_ssl_robust.attack_suites import SQUARE_LOSS
from hf_ssl_robust.attacks.objectives import DEFAULT_LOSS, LOSSES
from conftest import one_thread

TASKS = ("classification", "segmentation", "depth")
# what an encoder-surface attack reads for each task's head
ENCODER_KW = {
    "classification": {"tokens": "cls"},
    "segmentation": {"tokens": "patch"},
    "depth": {"tokens": "patch", "pre_norm": True},
}
NUM_CLASSES = 5


_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


class Classifier(nn.Module):
    def __init__(self, encoder, as_output=False):
        super().__init__()
        self.encoder, self.head, self.as_output = encoder, nn.Linear(encoder.hidden_size, NUM_CLASSES), as_output

    def forward(self, x):
        logits = self.head(self.encoder(x).cls)
        return ImageClassifierOutput(logits=logits) if self.as_output else logits


class Segmenter(nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder, self.bn = encoder, nn.BatchNorm2d(encoder.hidden_size)
        self.conv = nn.Conv2d(encoder.hidden_size, NUM_CLASSES, 1)

    def forward(self, x):
        logits = self.conv(self.bn(self.encoder(x).patch_grid()))  # [B, C, h, w]
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


class Depther(nn.Module):
    def __init__(self, encoder, as_output=False):
        super().__init__()
        self.encoder, self.conv, self.as_output = encoder, nn.Conv2d(encoder.hidden_size, 1, 1), as_output

    def forward(self, x):
        depth = F.softplus(self.conv(self.encoder(x, pre_norm=True).patch_grid())) + 0.1  # [B, 1, h, w]
        depth = F.interpolate(depth, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return DepthEstimatorOutput(predicted_depth=depth) if self.as_output else depth.squeeze(1)


def make_pixels(batch=2, size=32, seed=0):
    """Random images with whole bands at exactly 0 and 1 (where clamping matters)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, size, size, generator=g)
    x[:, :, :6] = 0.0
    x[:, :, 6:12] = 1.0
    x[:, 0, :, :3] = 1e-3
    return x


def make_case(name, task, encoder):
    """(attack kwargs, model the attack runs on, pixels, target); `name` may be `apgd:<loss>`."""
    torch.manual_seed(0)
    name, _, loss = name.partition(":")
    cls = ATTACKS[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in ENCODER_KW[task].items() if k in fields} if cls.surface == "encoder" else {}
    if loss:
        kwargs["loss"] = loss
    task_model = {"classification": Classifier, "segmentation": Segmenter, "depth": Depther}[task](encoder).eval()
    x = make_pixels()
    with torch.no_grad():
        clean = task_model(x)
    if task == "classification":
        target = clean.argmax(1)
    elif task == "segmentation":
        target = clean.argmax(1)
        target[:, :2] = 255  # some ignored pixels
    else:
        target = clean * (1 + 0.2 * torch.rand(clean.shape))
        target[:, :, :4] = 0.0  # invalid pixels
    model = encoder if cls.surface == "encoder" else task_model
    return kwargs, model, x, (None if cls.surface == "encoder" else target)


LOSS_TAKING = {"apgd": DEFAULT_LOSS, "square": SQUARE_LOSS}  # attacks that apply to every task through their loss
CASES = [
    (name, task)
    for name in sorted(ATTACKS)
    if name not in LOSS_TAKING
    for task in (TASKS if ATTACKS[name].surface == "encoder" else (ATTACKS[name].task,))
]
CASES += [(f"{name}:{losses[task]}", task) for name, losses in LOSS_TAKING.items() for task in TASKS]  # each task's default loss
IDS = [f"{n}-{t}" for n, t in CASES]
# the invariants hold for every loss of every task
ALL_LOSSES = [(n, t) for n, t in CASES if not n.startswith("apgd:")] + [(f"apgd:{loss}", t) for t in TASKS for loss in LOSSES[t]]
ALL_IDS = [f"{n}-{t}" for n, t in ALL_LOSSES]


def test_registry__every_attack_and_loss_is_covered():
    assert {n.partition(":")[0] for n, _ in ALL_LOSSES} == set(ATTACKS)
    assert sum(len(v) for v in LOSSES.values()) == sum(n.startswith("apgd:") for n, _ in ALL_LOSSES)


def _base(name):
    return name.partition(":")[0]


def objective(attack, model, x, adv, target):
    """The attack's objective at `adv` (clean `x`), step-independent (SegPGD at λ = 1/2: CE over H·W / 2).
    APGD returns each image's most damaging iterate, so for APGD this is the damage (`score`)."""
    with torch.no_grad():
        prepared = attack.prepare_target(model.eval(), x, target)
        outputs = attack.forward(model, adv)
        return attack.score(outputs, prepared) if attack.name.startswith("apgd") else attack.objective(outputs, prepared, attack.steps)


def snapshot(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        {n: (p.requires_grad, None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()},
        {n: m.training for n, m in model.named_modules()},
    )


@pytest.mark.parametrize("name,task", ALL_LOSSES, ids=ALL_IDS)
def test_attack__contract_invariants(name, task, tiny_encoder):
    kwargs, model, x, target = make_case(name, task, tiny_encoder)
    x_before = x.clone()
    # mixed modes, a known .grad, a frozen parameter
    model.train()
    next(m for m in model.modules() if isinstance(m, nn.LayerNorm)).eval()
    params = list(model.parameters())
    params[0].grad = torch.full_like(params[0], 3.0)
    params[1].requires_grad_(False)
    before = snapshot(model)
    eps = 8 / 255
    result = make_attack(_base(name), eps=eps, steps=3, seed=0, **kwargs).perturb(model, x, target)
    assert isinstance(result, AttackResult)
    adv = result.pixels
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert (adv - x).abs().max() <= eps and (adv - x).abs().max().item() <= eps
    assert adv.min() >= 0 and adv.max() <= 1
    assert not torch.equal(adv, x)
    assert torch.equal(x, x_before)
    assert result.losses.shape == (3,) and torch.isfinite(result.losses).all()
    after = snapshot(model)
    for b, a in zip(before[0].values(), after[0].values()):
        assert torch.equal(b, a)  # parameters and buffers (BatchNorm statistics)
    assert before[1].keys() == after[1].keys()
    for n in before[1]:
        (rb, gb), (ra, ga) = before[1][n], after[1][n]
        assert rb == ra and (gb is None) == (ga is None) and (gb is None or torch.equal(gb, ga)), n
    assert before[2] == after[2]


@pytest.mark.parametrize("name,task", CASES, ids=IDS)
def test_attack__eps_zero_is_identity(name, task, tiny_encoder):
    kwargs, model, x, target = make_case(name, task, tiny_encoder)

    def exploding_model(_):
        raise AssertionError("eps=0 must not call the model")

    result = make_attack(_base(name), eps=0.0, seed=0, **kwargs).perturb(exploding_model, x, target)
    assert torch.equal(result.pixels, x) and result.pixels is not x


@pytest.mark.parametrize("name,task", CASES, ids=IDS)
def test_attack__seeded_deterministic(name, task, tiny_encoder):
    kwargs, model, x, target = make_case(name, task, tiny_encoder)
    run = lambda seed: make_attack(_base(name), steps=2, seed=seed, **kwargs).perturb(model, x, target)  # noqa: E731
    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a.pixels, b.pixels) and torch.equal(a.losses, b.losses)
    assert not torch.equal(a.pixels, c.pixels)


@pytest.mark.parametrize("name,task", CASES, ids=IDS)
def test_attack__objective_increases(name, task, tiny_encoder):
    kwargs, model, x, target = make_case(name, task, tiny_encoder)
    start = make_attack(_base(name), steps=0, seed=0, **kwargs)  # steps=0: the random start itself
    attack = make_attack(_base(name), steps=8, seed=0, **kwargs)
    x0 = start.perturb(model, x, target).pixels
    adv = attack.perturb(model, x, target).pixels
    assert objective(attack, model, x, adv, target).mean() > objective(attack, model, x, x0, target).mean()


@pytest.mark.parametrize("name,task", CASES, ids=IDS)
def test_attack__works_under_no_grad_and_inference_mode(name, task, tiny_encoder):
    kwargs, model, x, target = make_case(name, task, tiny_encoder)
    attack = make_attack(_base(name), steps=2, seed=0, **kwargs)
    ref = attack.perturb(model, x, target).pixels
    with torch.no_grad():
        assert torch.equal(attack.perturb(model, x, target).pixels, ref)
    with torch.inference_mode():
        x_inf = x.clone()
        target_inf = None if target is None else target.clone()
        adv = attack.perturb(model, x_inf, target_inf).pixels
    assert torch.equal(adv, ref)


@pytest.mark.parametrize("name,task", CASES, ids=IDS)
def test_attack__bf16_autocast_keeps_fp32_perturbation(name, task, tiny_encoder):
    """The GPU recipe (bf16 forward under autocast), checked on CPU: pixels, ball and [0, 1] stay fp32-exact."""
    kwargs, model, x, target = make_case(name, task, tiny_encoder)
    eps = 8 / 255
    with torch.autocast("cpu", dtype=torch.bfloat16):
        adv = make_attack(_base(name), eps=eps, steps=3, seed=0, **kwargs).perturb(model, x, target).pixels
    assert adv.dtype == torch.float32 and torch.isfinite(adv).all()
    assert (adv - x).abs().max() <= eps + 1e-7 and adv.min() >= 0 and adv.max() <= 1
    assert (adv - x).abs().max() > eps / 2  # it moved


@pytest.mark.parametrize("name,task", CASES, ids=IDS)
def test_attack__l2_ball(name, task, tiny_encoder):
    kwargs, model, x, target = make_case(name, task, tiny_encoder)
    eps = 0.5
    attack = make_attack(_base(name), eps=eps, step_size=0.2, steps=4, norm="l2", seed=0, **kwargs)
    adv = attack.perturb(model, x, target).pixels
    norms = (adv - x).flatten(1).norm(dim=1)
    assert (norms <= eps).all() and (norms > 0.1).all()
    assert adv.min() >= 0 and adv.max() <= 1


@pytest.mark.parametrize("name,task", CASES, ids=IDS)
def test_attack__track_best_beats_final_iterate(name, task, tiny_encoder):
    kwargs, model, x, target = make_case(name, task, tiny_encoder)
    final = make_attack(_base(name), steps=4, step_size=4 / 255, seed=0, **kwargs)
    best = make_attack(_base(name), steps=4, step_size=4 / 255, seed=0, track_best=True, **kwargs).perturb(model, x, target)
    adv_final = final.perturb(model, x, target).pixels
    with torch.no_grad():
        prepared = final.prepare_target(model, x, target)
        final_score = final.score(final.forward(model, adv_final), prepared)
        best_score = final.score(final.forward(model, best.pixels), prepared)
    assert best.scores.shape == (x.shape[0],)
    torch.testing.assert_close(best.scores, best_score.float())
    assert (best.scores >= final_score - 1e-6).all()
    assert (best.pixels - x).abs().max() <= 8 / 255


def test_segpgd__degenerate_masks_stay_finite(tiny_encoder):
    model = Segmenter(tiny_encoder).eval()
    x = make_pixels()
    with torch.no_grad():
        pred = model(x).argmax(1)
    masks = {
        "all_correct": pred,
        "all_wrong": (pred + 1) % NUM_CLASSES,
        "all_ignored": torch.full_like(pred, 255),
    }
    for kind, mask in masks.items():
        for random_start in (True, False):
            attack = SegPGD(steps=3, seed=0, random_start=random_start, track_best=True)
            result = attack.perturb(model, x, mask)
            assert torch.isfinite(result.losses).all() and torch.isfinite(result.pixels).all(), kind
            assert (result.pixels - x).abs().max() <= attack.eps and result.pixels.min() >= 0
            if kind == "all_ignored":  # zero loss, zero gradient: the image stays where it started
                assert torch.equal(result.losses, torch.zeros(3))
                start = SegPGD(steps=0, seed=0, random_start=random_start).perturb(model, x, mask).pixels
                assert torch.equal(result.pixels, start)


def test_segpgd__lambda_schedule_and_hw_normalisation():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0], [5.0, 5.0]]).T.reshape(1, 2, 2, 2)
    masks = torch.tensor([[[0, 0], [255, 0]]])  # pixel 0 correct, 1 wrong, 2 ignored, 3 tie -> argmax 0 correct
    ce = F.cross_entropy(logits, masks, ignore_index=255, reduction="none")[0].flatten()
    attack = SegPGD(steps=4)
    for step in range(4):
        lam = step / 8
        expected = ((1 - lam) * (ce[0] + ce[3]) + lam * ce[1]) / 4
        torch.testing.assert_close(attack.loss(logits, masks, step), expected.view(1))
    torch.testing.assert_close(attack.score(logits, masks), torch.tensor([1 / 3]))


def test_depth_pgd__invalid_pixels_do_not_matter(tiny_encoder):
    _, model, x, target = make_case("depth_pgd", "depth", tiny_encoder)
    other = target.clone()
    invalid = target == 0
    other[invalid] = torch.where(torch.rand(int(invalid.sum())) > 0.5, 0.0, 50.0)  # 0 or beyond max_depth
    attack = DepthPGD(steps=3, seed=0)
    a, b = attack.perturb(model, x, target), attack.perturb(model, x, other)
    assert torch.equal(a.pixels, b.pixels) and torch.equal(a.losses, b.losses)
    # and the gradient at invalid pixels is zero: a model whose output at a pixel depends only on that pixel
    pixelwise = lambda p: p.mean(1) + 0.5  # noqa: E731  [B, H, W] depth in metres
    adv = DepthPGD(steps=1, random_start=False).perturb(pixelwise, x, target).pixels
    assert torch.equal(adv[..., :4], x[..., :4]) and not torch.equal(adv[..., 4:], x[..., 4:])


def test_task_attacks__accept_hf_model_outputs(tiny_encoder):
    x = make_pixels()
    clf = Classifier(tiny_encoder, as_output=True).eval()
    labels = clf(x).logits.argmax(1)
    for rescale in (False, True):
        adv = make_attack("pgd", steps=2, seed=0, logit_rescale=rescale).perturb(clf, x, labels).pixels
        assert not torch.equal(adv, x)
    depther = Depther(tiny_encoder, as_output=True).eval()
    depth = depther(x).predicted_depth.detach() * 1.1  # [B, 1, H, W] target is accepted too
    assert not torch.equal(make_attack("depth_pgd", steps=2, seed=0).perturb(depther, x, depth).pixels, x)


def test_embed__patch_tokens_pre_norm(tiny_encoder):
    x = make_pixels()
    post = EmbedAttack(tokens="patch", pre_norm=False, steps=2, seed=0).perturb(tiny_encoder, x)
    pre = EmbedAttack(tokens="patch", pre_norm=True, steps=2, seed=0).perturb(tiny_encoder, x)
    assert not torch.equal(pre.pixels, post.pixels) and not torch.equal(pre.losses, post.losses)
    with torch.no_grad():
        clean = tiny_encoder(x, pre_norm=True).patches.flatten(1)
        adv = tiny_encoder(pre.pixels, pre_norm=True).patches.flatten(1)
    assert ((adv - clean).norm(dim=1) > 0).all()
    # an explicit target (DeACL: the teacher's embedding) and the cosine distance
    teacher = torch.randn(2, tiny_encoder.hidden_size)
    res = EmbedAttack(distance="cosine", steps=2, seed=0).perturb(tiny_encoder, x, teacher)
    assert res.losses.shape == (2,) and ((res.losses >= 0) & (res.losses <= 2)).all()


def test_make_attack__errors():
    with pytest.raises(ValueError, match=r"Unknown attack 'fgsm'; available: \['apgd', 'apgd_t', 'depth_pgd', 'embed', 'pgd', 'segpgd', 'square'\]"):
        make_attack("fgsm")
    with pytest.raises(ValueError, match=r"Unknown argument\(s\) \['tokens'\] for attack 'pgd'"):
        make_attack("pgd", tokens="cls")
    with pytest.raises(ValueError, match="eps must be >= 0"):
        make_attack("pgd", eps=-0.1)
    with pytest.raises(ValueError, match="steps must be an int >= 0"):
        make_attack("segpgd", steps=-1)
    with pytest.raises(ValueError, match="norm must be one of"):
        make_attack("pgd", norm="l1")
    with pytest.raises(ValueError, match="tokens must be one of"):
        make_attack("embed", tokens="all")
    with pytest.raises(ValueError, match="max_depth must be > 0"):
        make_attack("depth_pgd", max_depth=0)
    assert issubclass(ATTACKS["segpgd"], Attack) and ATTACKS["segpgd"].name == "segpgd"


def test_perturb__rejects_bad_pixels(tiny_encoder):
    attack = EmbedAttack(steps=1)
    with pytest.raises(ValueError, match=r"shape \[B, 3, H, W\]"):
        attack.perturb(tiny_encoder, torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="float pixels"):
        attack.perturb(tiny_encoder, torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        attack.perturb(tiny_encoder, torch.rand(1, 3, 32, 32) * 255)
    with pytest.raises(ValueError, match="needs a target"):
        make_attack("pgd", steps=1).perturb(Classifier(tiny_encoder), make_pixels())


def test_projection__exact_for_awkward_eps():
    from hf_ssl_robust.attacks.base import _project, _round_down

    x = torch.rand(64, 3, 16, 16, dtype=torch.float32)
    x[:8] = 0.0
    x[8:16] = 1.0
    for eps in (8 / 255, 4 / 255, 1 / 3, 0.1, 1e-3):
        e = _round_down(eps, x.dtype)
        adv = _project(x + torch.randn_like(x), x, e, linf=True)
        assert (adv - x).abs().max() <= eps and (adv - x).abs().max().item() <= eps
        assert adv.min() >= 0 and adv.max() <= 1


# --- per-(image, attack, restart) random starts ----------------------------------------------------
def _eval_starts(monkeypatch, encoder, attacks):
    """Run `evaluate` on one batch of 2 indexed images; the random-start noise of every seeded start, in call order."""
    from hf_ssl_robust.attacks import base
    from hf_ssl_robust.data import get_dataset_spec
    from hf_ssl_robust.evaluation import evaluate
    from hf_ssl_robust.heads import SSLForImageClassification
    from hf_ssl_robust.tasks import get_task

    starts, inner = [], base._random_start

    def spy(x, eps, linf, seed):
        out = inner(x, eps, linf, seed)
        if isinstance(seed, (list, tuple)):  # the per-image call (not its recursion into single images)
            starts.append(out - x)
        return out

    monkeypatch.setattr(base, "_random_start", spy)
    task, spec = get_task("classification"), get_dataset_spec("shapes", task="classification")
    torch.manual_seed(0)
    model = SSLForImageClassification.from_encoder(encoder, num_labels=spec.num_classes, image_size=32).eval()
    batch = {"pixel_values": make_pixels()[:2], "labels": torch.tensor([0, 1]), "index": torch.tensor([0, 1])}
    evaluate(model, [batch], task, spec, attacks=attacks)
    return starts


def _differ(a, b):
    """Two noises differ (not only by the rounding of (x + noise) - x, about 1e-7)."""
    return float((a - b).abs().max()) > 1e-4


def test_evaluate__attacks_on_one_image_start_from_different_noise(monkeypatch, tiny_encoder):
    attacks = {"embed": make_attack("embed", steps=1, seed=0), "pgd": make_attack("pgd", steps=1, seed=0)}
    embed, pgd = _eval_starts(monkeypatch, tiny_encoder, attacks)
    for k in range(2):  # same seed, same image, another attack: another start
        assert _differ(embed[k], pgd[k])
    assert torch.equal(_eval_starts(monkeypatch, tiny_encoder, attacks)[0], embed)  # same seed, same result


def test_evaluate__apgd_restart_differs_from_next_image_start(monkeypatch, tiny_encoder):
    restart0, restart1 = _eval_starts(monkeypatch, tiny_encoder, {"apgd": make_attack("apgd", loss="ce", steps=1, restarts=2, seed=0)})
    assert _differ(restart1[0], restart0[1])  # restart 1 of image 0 is not image 1's start
    assert _differ(restart1[0], restart0[0])


def test_mix_seed__stable_and_distinct():
    from hf_ssl_robust.attacks import image_seeds, mix_seed
    from hf_ssl_robust.attacks.base import restart_seed

    assert mix_seed(0, 1, "pgd") == mix_seed(0, 1, "pgd") and 0 <= mix_seed(-5, 2**70, "x") < 2**63
    seeds = {mix_seed(s, k, a) for s in (0, 1) for k in range(50) for a in ("pgd", "embed", "apgd")}
    seeds |= {restart_seed(s, r) for s in image_seeds(0, range(50), "apgd") for r in (1, 2)}
    assert len(seeds) == 2 * 50 * 3 + 50 * 2  # no collisions between seeds, images, attacks or restarts
    assert mix_seed(0, "1") != mix_seed(0, 1) and restart_seed(7, 0) == 7 and restart_seed(None, 3) is None
