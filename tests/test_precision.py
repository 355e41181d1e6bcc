"""Mixed precision keeps attacks exact: the pixel layer of every family runs in fp32 under autocast,
every attack keeps its contract under bf16, and bf16 attacks succeed like fp32 ones.

`HF_SSL_ROBUST_TEST_DEVICE=cuda` runs the device-dependent tests on a GPU (scripts/gpu_speed.sh).
"""

import json
import os

import numpy as np
import pytest
import test_attacks as contract  # the attack contract's cases and tests, rerun here under bf16
import torch
from accelerate.state import AcceleratorState
from conftest import make_tiny_backbone, one_thread

from hf_ssl_robust.attacks import make_attack
from hf_ssl_robust.data import get_dataset_spec, make_dataset
from hf_ssl_robust.data.loading import collate
from hf_ssl_robust.encoders import IMAGENET_MEAN, IMAGENET_STD, load_encoder
from hf_ssl_robust.precision import (
    autocast_for,
    effective_precision,
    find_pixel_layer,
    keep_pixel_layer_fp32,
    make_accelerator,
    resolve_precision,
)

DEVICE = os.environ.get("HF_SSL_ROBUST_TEST_DEVICE", "cpu")
QUARTER = 0.25 / 255  # a quarter of a grey level: bf16 spacing near normalised 2.25 is ~0.9/255


def bf16():
    return autocast_for("bf16", DEVICE)


def family_backbones() -> dict:
    """Tiny random backbones of every family with a first layer on pixels (registered or to come)."""
    torch.manual_seed(0)
    kinds = {"vit": ("vit", 16), "dinov2": ("dinov2", 8), "dinov2_reg": ("dinov2_reg", 8), "dinov3_vit": ("dinov3_vit", 8),
             "dinov3_convnext": ("dinov3_convnext", 8), "resnet": ("resnet", 8), "clip": ("clip", 8), "siglip": ("siglip", 8)}
    return {name: make_tiny_backbone(kind, patch_size=patch) for name, (kind, patch) in kinds.items()}


_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate keeps one process-wide state (with its precision): start and leave it blank."""
    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


def white_with_red_nudge(size=32):
    """A white image and the same with 0.25/255 less red. Red normalises to 143.93/64 and bf16 steps
    there are 1/64 (0.9/255 in pixels): both round to 144/64, so a bf16 first layer sees no change."""
    x = torch.ones(2, 3, size, size)
    nudged = x.clone()
    nudged[:, 0] -= QUARTER
    return x.to(DEVICE), nudged.to(DEVICE)


def normalise(pixels):
    mean = torch.tensor(IMAGENET_MEAN, device=pixels.device).view(1, 3, 1, 1)
    return (pixels - mean) / torch.tensor(IMAGENET_STD, device=pixels.device).view(1, 3, 1, 1)


@pytest.mark.parametrize("family", list(family_backbones()))
def test_pixel_layer__is_the_first_layer_to_run_and_keeps_a_quarter_grey_level_in_bf16(family):
    backbone = family_backbones()[family].eval().to(DEVICE)
    name = keep_pixel_layer_fp32(backbone)
    layer = dict(backbone.named_modules())[name]
    seen = []
    hooks = [m.register_forward_hook(lambda mod, i, o: seen.append(mod)) for m in backbone.modules() if not list(m.children())]
    outputs = []
    hooks.append(layer.register_forward_hook(lambda mod, i, o: outputs.append(o.float())))
    x, nudged = white_with_red_nudge()
    with torch.no_grad():
        backbone(pixel_values=normalise(x))
        assert seen[0] is layer, f"{family}: {name} is not the first layer that sees pixels"
        backbone(pixel_values=normalise(nudged))  # fp32 reference
        with bf16():
            backbone(pixel_values=normalise(x))
            backbone(pixel_values=normalise(nudged))
    for h in hooks:
        h.remove()
    fp32_change, bf16_change = outputs[1] - outputs[0], outputs[3] - outputs[2]
    assert fp32_change.abs().max() > 0
    torch.testing.assert_close(bf16_change, fp32_change)  # lost (exactly 0) if the layer rounds to bf16


@pytest.mark.parametrize("kind", ["dinov2", "vit"])
def test_encoder__quarter_grey_level_changes_the_tokens_under_bf16(kind):
    encoder = load_encoder(make_tiny_backbone(kind)).to(DEVICE)
    x, nudged = white_with_red_nudge()
    with torch.no_grad(), bf16():
        change = (encoder(nudged).patches - encoder(x).patches).abs().amax(dim=(1, 2))
    assert (change > 0).all()  # identical tokens: the nudge was rounded away before the first layer
    assert encoder.pixel_layer == "embeddings.patch_embeddings.projection"


@pytest.mark.parametrize("family", list(family_backbones()))
def test_encoder__bf16_weights_keep_a_quarter_grey_level(family, tmp_path):
    """`load_encoder(dtype=torch.bfloat16)`: the pixel layer keeps fp32 parameters and sees the exact
    pixels (transformers casts them to that layer's dtype), with or without autocast, on every family."""
    family_backbones()[family].save_pretrained(tmp_path)
    encoder = load_encoder(str(tmp_path), dtype=torch.bfloat16).to(DEVICE)
    layer = dict(encoder.backbone.named_modules())[encoder.pixel_layer]
    assert layer.weight.dtype == torch.float32 and layer.model_dtype == torch.bfloat16
    x, nudged = white_with_red_nudge()
    for context in (torch.no_grad, bf16):  # plain: no "mixed dtype" error, bf16 tokens out
        with torch.no_grad(), context():
            clean, moved = encoder(x), encoder(nudged)
        assert clean.patches.dtype == torch.bfloat16
        change = (moved.patches.float() - clean.patches.float()).abs().amax(dim=(1, 2))
        assert (change > 0).all(), (family, context.__name__)  # identical tokens: the nudge was rounded away


def test_encoder__dtype_changes_keep_the_pixel_layer_fp32(tiny_dinov2_path):
    encoder = load_encoder(tiny_dinov2_path)
    layer = dict(encoder.backbone.named_modules())[encoder.pixel_layer]
    encoder.to(torch.bfloat16)
    assert layer.weight.dtype == torch.float32 and layer.model_dtype == torch.bfloat16
    assert encoder.backbone.embeddings.cls_token.dtype == torch.bfloat16
    encoder.float()
    assert layer.model_dtype == torch.float32
    with torch.no_grad():
        assert encoder(torch.rand(1, 3, 32, 32)).patches.dtype == torch.float32  # back to a plain fp32 model


def test_pixel_layer__state_dict_save_and_plain_forward_unchanged(tiny_dinov2_path, tmp_path):
    plain = make_tiny_backbone("dinov2")
    encoder = load_encoder(make_tiny_backbone("dinov2"))
    assert type(dict(encoder.backbone.named_modules())[encoder.pixel_layer]).__name__ == "Float32InputConv2d"
    assert list(encoder.backbone.state_dict()) == list(plain.state_dict())
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(encoder(x).patches, load_encoder(plain)(x).patches)  # outside autocast: bit-identical
    encoder.save_pretrained(tmp_path)
    assert torch.equal(load_encoder(str(tmp_path))(x).cls, encoder(x).cls)
    assert keep_pixel_layer_fp32(encoder.backbone) == encoder.pixel_layer  # idempotent
    assert find_pixel_layer(torch.nn.Linear(3, 3)) is None


@pytest.mark.parametrize("name,task", contract.CASES, ids=contract.IDS)
def test_bf16__every_attack_keeps_its_contract(name, task, tiny_dinov2_path):
    """The contract tests of test_attacks.py (ball, [0, 1], input, parameters, grads, modes, eps=0, seeds) under bf16."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        contract.test_attack__contract_invariants(name, task, load_encoder(tiny_dinov2_path))
        contract.test_attack__eps_zero_is_identity(name, task, load_encoder(tiny_dinov2_path))
        contract.test_attack__seeded_deterministic(name, task, load_encoder(tiny_dinov2_path))
        kwargs, model, x, target = contract.make_case(name, task, load_encoder(tiny_dinov2_path))
        adv = make_attack(name.partition(":")[0], eps=1 / 255, step_size=0.25 / 255, steps=2, seed=0, **kwargs).perturb(model, x, target).pixels
    assert adv.dtype == torch.float32 and (adv - x).abs().max() <= 1 / 255 and adv.min() >= 0 and adv.max() <= 1


def _success_case(name, task, encoder, n=32):
    """ShapesWorld batch, a task model on the tiny encoder, and targets = its fp32 clean predictions."""
    kwargs, model, _, _ = contract.make_case(name, task, encoder)  # on CPU; the task model moves it to DEVICE
    task_model = {"classification": contract.Classifier, "segmentation": contract.Segmenter, "depth": contract.Depther}[task](encoder)
    torch.manual_seed(0)
    task_model = task_model.eval().to(DEVICE)
    spec = get_dataset_spec("shapes", task="classification")
    x = collate([make_dataset(spec, "eval", num_samples=n, seed=0, image_size=32)[i] for i in range(n)])["pixel_values"].to(DEVICE)
    with torch.no_grad():
        clean = task_model(x)
    target = clean.argmax(1) if task != "depth" else clean
    model = task_model.encoder if model is encoder else task_model
    return kwargs, model, task_model, x, (None if model is encoder else target), target


def _damage(task, task_model, pixels, target):
    """Per image, in [0, 1]: prediction flipped (classification), share of pixels flipped
    (segmentation), share of pixels whose depth error grew past 5 % (depth)."""
    with torch.no_grad():
        out = task_model(pixels).float()
    if task == "classification":
        return (out.argmax(1) != target).float()
    if task == "segmentation":
        return (out.argmax(1) != target).float().mean(dim=(1, 2))
    return ((out - target).abs() / target > 0.05).float().mean(dim=(1, 2))


@pytest.mark.parametrize("name,task", contract.CASES, ids=contract.IDS)
def test_bf16__attack_success_within_a_few_images_of_fp32(name, task, tiny_dinov2_path):
    kwargs, model, task_model, x, target, truth = _success_case(name, task, load_encoder(tiny_dinov2_path))
    steps = 200 if name.startswith("square") else 5  # Square's steps are queries of a random search
    attack = make_attack(name.partition(":")[0], eps=8 / 255, step_size=2 / 255, steps=steps, seed=0, **kwargs)  # apgd:LOSS -> loss in kwargs
    damage = {}
    for precision in ("no", "bf16"):
        with autocast_for(precision, DEVICE):  # attack and re-scoring in one precision
            damage[precision] = float(_damage(task, task_model, attack.perturb(model, x, target).pixels, truth).sum())
    print(f"{name}/{task}: images' worth damaged of {len(x)}: fp32 {damage['no']:.2f}, bf16 {damage['bf16']:.2f}")
    # the attack does something (Square's random search is much weaker on depth: some damage is enough there)
    assert damage["no"] >= (0.05 if name == "square:depth" else 1)
    assert abs(damage["bf16"] - damage["no"]) <= 3  # a few images


def test_benchmark__precision_recorded_and_part_of_the_cell_key(tiny_dinov2_path, tmp_path, fresh_accelerate_state):
    from hf_ssl_robust.benchmark import BenchmarkConfig, run_benchmark

    kw = dict(encoders=[tiny_dinov2_path], tasks=["classification"], attacks=["pgd"], steps=1, max_eval_samples=8,
              num_train_samples=32, head_epochs=1, image_size=32, batch_size=4, num_examples=0, output_dir=str(tmp_path))
    fp32 = run_benchmark(BenchmarkConfig(**kw))
    assert json.loads((tmp_path / "run_info.json").read_text())["mixed_precision"] == "no"
    AcceleratorState._reset_state(True)
    bf16_records = run_benchmark(BenchmarkConfig(**kw, mixed_precision="bf16"))
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["mixed_precision"] == "bf16" and info["config"]["mixed_precision"] == "bf16"
    cells = sorted(json.loads(p.read_text())["key"]["mixed_precision"] for p in (tmp_path / "cells").glob("*.json") if not p.name.startswith("prior-"))
    assert cells == ["bf16", "no"]  # a second cell, not the fp32 one reused
    assert len(bf16_records) == len(fp32) and {r["attack"] for r in bf16_records} == {"none", "pgd"}


def test_precision_settings__validated_early(fresh_accelerate_state):
    from hf_ssl_robust.benchmark import BenchmarkConfig
    from hf_ssl_robust.defenses import DeACLConfig
    from hf_ssl_robust.space_backend import SpaceBackend
    from hf_ssl_robust.training import TrainHeadConfig

    for make in (BenchmarkConfig, TrainHeadConfig, DeACLConfig):
        with pytest.raises(ValueError, match="mixed_precision must be one of"):
            make(mixed_precision="fp8")
    with pytest.raises(ValueError, match="Space runs on CPU"):
        SpaceBackend(mixed_precision="fp16")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs a GPU"):
            make_accelerator("fp16")


def test_accelerate_launch_flag_sets_the_precision(fresh_accelerate_state, monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what `accelerate launch --mixed_precision bf16` sets
    accelerator = make_accelerator(None)
    assert effective_precision(accelerator) == resolve_precision(None, accelerator) == "bf16"
    with accelerator.autocast():
        assert torch.is_autocast_enabled("cpu")
    with pytest.raises(ValueError, match="the accelerator runs 'bf16'"):
        resolve_precision("no", accelerator)


def test_train_head_and_deacl__run_in_bf16_and_record_it(tiny_dinov2_path, tmp_path, fresh_accelerate_state):
    from hf_ssl_robust.defenses import DeACLConfig, train_deacl
    from hf_ssl_robust.training import TrainHeadConfig, train_head

    _, info = train_head(TrainHeadConfig(encoder=tiny_dinov2_path, task="depth", image_size=32, num_train_samples=16,
                                         num_eval_samples=4, epochs=1, mixed_precision="bf16"))
    assert info["mixed_precision"] == "bf16" and info["metrics"]["rmse"] > 0
    out = train_deacl(DeACLConfig(encoder=tiny_dinov2_path, image_size=32, num_train_samples=16, batch_size=8, max_steps=2,
                                  attack_steps=2, checkpoint_every=0, log_every=1, output_dir=str(tmp_path / "d")))
    assert json.loads((out / "deacl_config.json").read_text())["mixed_precision"] == "bf16"  # the state's precision
    assert load_encoder(str(out)).pixel_layer is not None


@pytest.mark.parametrize("task,attack", [("classification", "pgd"), ("depth", "embed")])
def test_space__bf16_requests_report_finite_numbers(task, attack, tmp_path, fresh_accelerate_state):
    from hf_ssl_robust.space_backend import SpaceBackend

    make_tiny_backbone("dinov2").save_pretrained(tmp_path / "enc")
    image = (torch.rand(40, 40, 3) * 255).to(torch.uint8).numpy()
    for _ in ("trains and caches the head", "loads it from disk"):  # a loaded head returns bf16 outputs
        backend = SpaceBackend(encoders=[str(tmp_path / "enc")], cache_dir=str(tmp_path / "cache"), heads_dir=str(tmp_path / "none"),
                               train_samples=16, train_epochs=1, mixed_precision="bf16")
        out = backend.run(str(tmp_path / "enc"), task, attack, eps_255=2, steps=2, image=image, size=32)
        assert 0 < out.metrics["linf_255"] <= 2 and all(np.isfinite(v) for v in out.losses)
        assert out.adv_image.dtype == np.uint8 and out.adv_image.shape == out.clean_image.shape


# --- fp16: input gradients scaled so that confident images still move --------------------------
class _ConfidentHead(torch.nn.Module):
    """Pixels -> 2 logits with p(class 0) = 0.9997 whatever the image; its input gradient (about
    1e-10 per pixel) underflows to exact zero in fp16 unless the objective is scaled."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
        with torch.no_grad():
            self.body[1].weight.mul_(1e-2)  # weights stay normal fp16 numbers; the gradients do not
            self.body[3].weight.mul_(1e-2)
            self.body[3].bias.copy_(torch.tensor([8.0, 0.0]))

    def forward(self, pixels):
        return self.body(pixels)


def _fp16():
    return torch.autocast("cpu", dtype=torch.float16)


@pytest.mark.parametrize("name", ["pgd", "apgd"])
def test_fp16__confident_image_moves(name):
    model, x, y = _ConfidentHead(), torch.full((2, 3, 8, 8), 0.5), torch.zeros(2, dtype=torch.int64)
    with torch.no_grad():
        assert torch.softmax(model(x), 1)[:, 0].min() > 0.9996
    attack = make_attack(name, eps=4 / 255, steps=3, random_start=False, seed=0, track_best=False)  # the iterate itself
    with _fp16():
        result = attack.perturb(model, x, y)
    moved = (result.pixels - x).abs().flatten(1).amax(1)
    assert (moved > 1 / 255).all(), moved  # unscaled: the gradient is exactly 0 and the image never moves
    assert result.losses.max() < 1e-3  # the objective as reported (APGD's schedule compares it) is unscaled


def test_fp16__scaled_input_gradient_is_the_true_one():
    from hf_ssl_robust.precision import InputGradScaler

    model, y = _ConfidentHead(), torch.zeros(2, dtype=torch.int64)
    x = torch.full((2, 3, 8, 8), 0.5, requires_grad=True)
    with _fp16():
        loss = torch.nn.functional.cross_entropy(model(x), y, reduction="none")
        (plain,) = torch.autograd.grad(loss.sum(), x, retain_graph=True)
        scaled = InputGradScaler("cpu").grad(loss, x)
    assert torch.count_nonzero(plain) == 0  # the defect: unscaled, fp16 underflows to exact zero
    (fp32,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x), y, reduction="none").sum(), x)
    assert torch.equal(scaled.sign(), fp32.sign())
    assert float((scaled - fp32).norm() / fp32.norm()) < 0.02  # the true gradient, up to fp16 rounding


def test_fp16__scale_backs_off_when_the_scaled_gradient_overflows():
    from hf_ssl_robust.precision import InputGradScaler

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 3))
    with torch.no_grad():
        model[1].weight.mul_(40.0)  # scaled gradients of ~1e4 x 40 overflow fp16's 65504 at the first try
    x = torch.rand(4, 8, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0])
    loss_fn = lambda: torch.nn.functional.cross_entropy(model(x), y, reduction="none")  # noqa: E731
    (fp32,) = torch.autograd.grad(loss_fn().sum(), x)
    with _fp16():
        scaler = InputGradScaler("cpu")
        grad = scaler.grad(loss_fn(), x)
    assert torch.isfinite(grad).all() and torch.allclose(grad, fp32, rtol=0.02, atol=1e-5)
    backed_off = scaler.scale < InputGradScaler.INIT  # per sample: only those that overflowed
    assert 1 <= int(backed_off.sum()) < 4 and torch.equal(backed_off, scaler.ceiling <= InputGradScaler.INIT)
    assert not InputGradScaler("cpu").enabled  # no autocast: plain autograd.grad
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not InputGradScaler("cpu").enabled  # bf16 has fp32's range: nothing to scale
