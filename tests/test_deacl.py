"""DeACL: objective values, training effects, saved artifact, exact resume, config validation."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoModel

import hf_ssl_robust.defenses.deacl as deacl_module
from hf_ssl_robust.defenses import DeACLConfig, deacl_loss, train_deacl
from hf_ssl_robust.defenses.deacl import DenseCosineAttack, StepBatchSampler
from hf_ssl_robust.encoders import load_encoder
from conftest import one_thread

REPO = Path(__file__).resolve().parents[1]


_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


def tiny_cfg(encoder: str, out: Path, **kw) -> DeACLConfig:
    base = dict(encoder=encoder, image_size=32, num_train_samples=32, batch_size=8, max_steps=4, output_dir=str(out),
                checkpoint_every=0, log_every=1, eps="8/255")  # fmt: skip
    return DeACLConfig(**{**base, **kw})


def params(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- the objective ---------------------------------------------------------------------------------
def test_deacl_loss__hand_computed():
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    teacher = torch.tensor([[2.0, 0.0], [1.0, 0.0]])  # cos with student: 1, 0
    adv = torch.tensor([[0.0, 3.0], [0.0, 1.0]])  # cos with student: 0, 1
    loss, parts = deacl_loss(student, adv, teacher, gamma=2.0)
    assert parts["distill"].item() == pytest.approx(0.5)  # mean(1 - 1, 1 - 0)
    assert parts["robust"].item() == pytest.approx(0.5)  # mean(1 - 0, 1 - 1)
    assert loss.item() == pytest.approx(0.5 + 2.0 * 0.5)


def test_deacl_loss__tokens_match_a_loop():
    g = torch.Generator().manual_seed(0)
    s, a, t = (torch.randn(3, 5, 4, generator=g) for _ in range(3))  # [B, N, D] patch tokens
    loss, _ = deacl_loss(s, a, t, gamma=0.7)

    def cos(u, v):
        return float(u @ v) / math.sqrt(float(u @ u) * float(v @ v))

    pairs = [(b, n) for b in range(3) for n in range(5)]
    distill = sum(1 - cos(s[b, n], t[b, n]) for b, n in pairs) / len(pairs)
    robust = sum(1 - cos(a[b, n], s[b, n]) for b, n in pairs) / len(pairs)
    assert loss.item() == pytest.approx(distill + 0.7 * robust, rel=1e-5)


def test_deacl_loss__no_gradient_reaches_the_teacher():
    g = torch.Generator().manual_seed(1)
    s, a, t = (torch.randn(4, 8, generator=g).requires_grad_() for _ in range(3))
    loss, _ = deacl_loss(s, a, t)
    loss.backward()
    assert t.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0 and a.grad.abs().sum() > 0


def test_deacl_loss__shape_mismatch():
    with pytest.raises(ValueError, match="Shapes differ"):
        deacl_loss(torch.ones(2, 3), torch.ones(2, 3), torch.ones(2, 4))


# --- pieces of the loop ------------------------------------------------------------------------------
def test_step_batch_sampler__epochs_are_permutations_and_shards_partition():
    full = list(StepBatchSampler(10, 4, seed=0, start=0, total=4, rank=0, world=1))  # 2 steps per epoch
    assert len(set(full[0] + full[1])) == 8 and len(set(full[2] + full[3])) == 8
    resumed = list(StepBatchSampler(10, 4, seed=0, start=3, total=4, rank=0, world=1))
    assert resumed == full[3:]
    r0, r1 = (list(StepBatchSampler(10, 4, seed=0, start=0, total=4, rank=r, world=2)) for r in (0, 1))
    assert [a + b for a, b in zip(r0, r1)] == full


def test_dense_attack__objective_includes_patch_tokens(tiny_encoder):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = tiny_encoder(x)
    target = (out.cls, out.patches)
    adv = DenseCosineAttack(eps=8 / 255, step_size=2 / 255, steps=3, seed=0, dense_weight=1.0).perturb(tiny_encoder, x, target)
    assert (adv.pixels - x).abs().max() <= 8 / 255 + 1e-7
    attack = DenseCosineAttack(dense_weight=2.0)
    shifted = (out.cls, out.patches + 1)  # CLS identical: only the patch term is non-zero
    assert attack.loss(shifted, target, 0).min() > 0


# --- training ----------------------------------------------------------------------------------------
def test_train_deacl__student_changes_teacher_frozen_and_saved_folder_loads(tiny_dinov2_path, tmp_path, monkeypatch):
    teachers = []

    def spy_load(name, **kw):
        enc = load_encoder(name, **kw)
        teachers.append(enc)
        return enc

    monkeypatch.setattr(deacl_module, "load_encoder", spy_load)
    initial = load_encoder(tiny_dinov2_path).state_dict()
    out = train_deacl(tiny_cfg(tiny_dinov2_path, tmp_path / "run"))

    (teacher,) = teachers
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    for name, value in teacher.state_dict().items():
        torch.testing.assert_close(value, initial[name], rtol=0, atol=0)
    trained = load_encoder(out).state_dict()
    assert set(trained) == set(initial)
    assert any(not torch.equal(trained[k], initial[k]) for k in initial)
    assert set(params(out)) == set(params(Path(tiny_dinov2_path)))  # same on-disk layout

    backbone = AutoModel.from_pretrained(out)
    assert type(backbone).__name__ == "Dinov2Model"
    encoder = load_encoder(out)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(encoder(x).cls, backbone(pixel_values=encoder.normalize(x)).last_hidden_state[:, 0])
    processor = AutoImageProcessor.from_pretrained(out)  # what pipeline("image-feature-extraction", model=out) loads
    assert processor.do_normalize and processor.size.height == 32
    torch.testing.assert_close(torch.tensor(processor.image_std), encoder.std.flatten())
    resolved = json.loads((out / "deacl_config.json").read_text())
    assert resolved["total_steps"] == 4 and resolved["image_size"] == 32 and resolved["eps"] == pytest.approx(8 / 255)
    log = read_jsonl(out / "log.jsonl")
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert all(r["loss"] == pytest.approx(r["distill"] + 2.0 * r["robust"], rel=1e-5) for r in log)


def test_train_deacl__resume_is_bit_identical(tiny_dinov2_path, tmp_path):
    # 32 images, batch 8: 4 steps per epoch, so the 6 steps cross an epoch boundary.
    common = dict(max_steps=6, checkpoint_every=3, attack_steps=2)
    a = train_deacl(tiny_cfg(tiny_dinov2_path, tmp_path / "a", **common))
    b_dir = tmp_path / "b"
    train_deacl(tiny_cfg(tiny_dinov2_path, b_dir, stop_after_steps=3, **common))
    assert not (b_dir / "model.safetensors").exists()  # interrupted: no final encoder yet
    assert (b_dir / "checkpoints" / "step_3" / "trainer_state.json").is_file()
    b = train_deacl(tiny_cfg(tiny_dinov2_path, b_dir, resume=True, **common))
    final_a, final_b = params(a), params(b)
    assert set(final_a) == set(final_b)
    for name in final_a:
        torch.testing.assert_close(final_b[name], final_a[name], rtol=0, atol=0, msg=name)
    assert read_jsonl(a / "log.jsonl") == read_jsonl(b / "log.jsonl")


def test_train_deacl__keep_last(tiny_dinov2_path, tmp_path):
    out = train_deacl(tiny_cfg(tiny_dinov2_path, tmp_path / "k", checkpoint_every=1, keep_last=2, attack_steps=1))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_3", "step_4"]


def test_train_deacl__attack_on_teacher_runs(tiny_dinov2_path, tmp_path):
    out = train_deacl(tiny_cfg(tiny_dinov2_path, tmp_path / "t", attack_on="teacher", max_steps=2, attack_steps=2))
    assert (out / "model.safetensors").is_file()


def test_train_deacl__dense_objective_adds_patch_terms(tiny_dinov2_path, tmp_path):
    out = train_deacl(tiny_cfg(tiny_dinov2_path, tmp_path / "d", objective="dense", dense_weight=0.5, max_steps=3, attack_steps=2))
    rows = read_jsonl(out / "log.jsonl")
    for r in rows:
        # 1 - cos lies in [0, 2]; at step 1 the student equals the teacher, so the distillation terms are 0
        # in exact arithmetic and within float rounding of it (either sign) on a real machine
        assert all(math.isfinite(r[k]) and -1e-6 <= r[k] <= 2 for k in ("distill", "robust", "dense_distill", "dense_robust"))
        expected = r["distill"] + 2 * r["robust"] + 0.5 * (r["dense_distill"] + 2 * r["dense_robust"])
        assert r["loss"] == pytest.approx(expected, rel=1e-5, abs=1e-7)
    assert abs(rows[0]["dense_distill"]) < 1e-5  # student == teacher before the first update
    assert rows[0]["dense_robust"] > 1e-4  # the attack moves the patch tokens from the first step
    assert rows[-1]["dense_distill"] > 1e-4  # once the student moves, its patch tokens leave the teacher's


def test_train_deacl__eval_callback_writes_evolution(tiny_dinov2_path, tmp_path):
    seen = []

    def eval_fn(step, encoder):
        seen.append((step, encoder.training))
        return {"score": float(step)}

    out = train_deacl(tiny_cfg(tiny_dinov2_path, tmp_path / "e", eval_every=2, attack_steps=1), eval_fn=eval_fn)
    assert seen == [(0, False), (2, False), (4, False)]
    assert read_jsonl(out / "evolution.jsonl") == [{"step": s, "score": float(s)} for s in (0, 2, 4)]


def test_script_main__config_file_and_flags(tiny_dinov2_path, tmp_path):
    from hf_ssl_robust.cli import deacl_main, parse_config

    config = tmp_path / "run.yaml"
    config.write_text(f"encoder: {tiny_dinov2_path}\nimage_size: 32\nnum_train_samples: 16\nbatch_size: 8\nmax_steps: 5\n")
    cfg = parse_config(DeACLConfig, ["--config", str(config), "--max_steps", "1", "--eps", "2/255", "--output_dir", str(tmp_path / "s")], "deacl")
    assert cfg.max_steps == 1 and cfg.image_size == 32 and cfg.eps == pytest.approx(2 / 255)
    assert deacl_main(["--config", str(config), "--max_steps", "1", "--attack_steps", "1", "--output_dir", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s" / "model.safetensors").is_file()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"epsilon": 0.1}))
    with pytest.raises(ValueError, match="Unknown field"):
        parse_config(DeACLConfig, ["--config", str(bad)], "deacl")


# --- configuration -----------------------------------------------------------------------------------
def test_config__paper_defaults_and_eps_parsing():
    cfg = DeACLConfig()
    assert cfg.eps == pytest.approx(4 / 255) and cfg.attack_step_size == pytest.approx(1 / 255)
    assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size, cfg.epochs, cfg.gamma) == (0.05, 0.9, 0.0, 128, 100, 2.0)
    assert DeACLConfig(eps=0.01).eps == 0.01
    assert DeACLConfig(eps="8/255", attack_step_size="2/255").attack_step_size == pytest.approx(2 / 255)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(eps="8/0"), "eps"),
        (dict(eps="-1"), "eps"),
        (dict(eps="__import__('os')"), "eps"),
        (dict(attack_step_size="abc"), "attack_step_size"),
        (dict(attack_on="both"), "attack_on"),
        (dict(objective="patch"), "objective"),
        (dict(mixed_precision="fp8"), "mixed_precision"),
        (dict(gamma=-0.5), "gamma"),
        (dict(batch_size=0), "batch_size"),
        (dict(max_steps=0), "max_steps"),
        (dict(lr=0), "lr"),
        (dict(momentum=1.0), "momentum"),
        (dict(warmup_ratio=1.5), "warmup_ratio"),
        (dict(warmup_epochs=100, epochs=100), "warmup_epochs"),
        (dict(min_crop_scale=0), "min_crop_scale"),
        (dict(keep_last=0), "keep_last"),
        (dict(dataset="imagenet-nope"), "Unknown dataset"),
    ],
)
def test_config__validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DeACLConfig(**kwargs)


def test_train_deacl__errors(tiny_dinov2_path, tmp_path):
    with pytest.raises(ValueError, match="fewer than batch_size"):
        train_deacl(tiny_cfg(tiny_dinov2_path, tmp_path / "x", num_train_samples=4))
    with pytest.raises(ValueError, match="No images"):
        (tmp_path / "empty").mkdir()
        train_deacl(tiny_cfg(tiny_dinov2_path, tmp_path / "y", image_folder=str(tmp_path / "empty")))


def test_train_deacl__image_folder(tiny_dinov2_path, tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs" / "class_a"
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for i in range(8):
        arr = (torch.rand(40 + i, 48, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(folder / f"{i}.png")
    out = train_deacl(tiny_cfg(tiny_dinov2_path, tmp_path / "f", image_folder=str(tmp_path / "imgs"), max_steps=1, attack_steps=1))
    assert json.loads((out / "deacl_config.json").read_text())["num_train_images"] == 8


# --- distributed -------------------------------------------------------------------------------------
def test_script__two_cpu_processes(tiny_dinov2_path, tmp_path):
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "scripts" / "deacl.py"),
           "--encoder", tiny_dinov2_path, "--image_size", "32", "--num_train_samples", "32", "--batch_size", "8",
           "--max_steps", "3", "--attack_steps", "2", "--checkpoint_every", "2", "--output_dir", str(tmp_path / "ddp")]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "ddp" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "ddp" / "deacl_config.json").read_text())["num_processes"] == 2


def test_robustness_evolution__small_benchmark_per_step_and_plot(tiny_dinov2_path, tmp_path):
    """`--eval_every`: each evaluated step trains quick heads on a copy of the student and plots."""
    from hf_ssl_robust.evolution import make_evolution_eval, plot_evolution

    eval_fn = make_evolution_eval(tasks=("classification", "depth"), steps=2, num_train_samples=24, max_eval_samples=8,
                                  image_size=32, head_epochs=1)
    out = train_deacl(tiny_cfg(tiny_dinov2_path, tmp_path / "evo", eval_every=2, attack_steps=1), eval_fn=eval_fn)
    rows = read_jsonl(out / "evolution.jsonl")
    assert [r["step"] for r in rows] == [0, 2, 4]
    assert set(rows[0]["classification"]) == {"none", "embed", "pgd"} and set(rows[0]["depth"]) == {"none", "embed", "depth_pgd"}
    assert plot_evolution(out / "evolution.jsonl", tmp_path / "evo.png").stat().st_size > 1000
    # The step-0 evaluation must not freeze the student: training still moved its weights afterwards.
    start, end = load_encoder(tiny_dinov2_path).state_dict(), load_encoder(str(out)).state_dict()
    assert any(not torch.equal(start[k], end[k]) for k in start)


def test_deacl_crops__come_from_the_full_image():
    """The random resized crop sees the whole image (a centre-cropped 224 image would never show the sides)."""
    from hf_ssl_robust.defenses.deacl import FullImageCrops

    x = torch.zeros(3, 32, 96)
    x[:, :, :32] = x[:, :, 64:] = 1.0  # only the sides are bright; the centre square is dark

    class One(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return {"pixel_values": x}

    crops = FullImageCrops(One(), 16, min_scale=0.1)
    outs = [crops[(0, seed)]["pixel_values"] for seed in range(20)]
    assert all(o.shape == (3, 16, 16) for o in outs)
    assert any(float(o.max()) > 0.5 for o in outs)  # some crops reach outside the centre square
    assert torch.equal(crops[(0, 7)]["pixel_values"], outs[7])  # a pure function of (index, seed)
    pairs = list(StepBatchSampler(10, 4, seed=0, start=0, total=2, rank=0, world=1, seeded=True))
    assert [i for i, _ in pairs[0]] == list(StepBatchSampler(10, 4, seed=0, start=0, total=2, rank=0, world=1))[0]


def test_train_deacl__robust_encoder_keeps_its_teachers_mean_and_std(tiny_dinov2_path, tmp_path):
    """A DeACL'd SAT encoder (dinov3-vitl16-sat's own constants) reloads with them, and its
    preprocessor_config.json applies them, instead of falling back to ImageNet's."""
    from hf_ssl_robust.encoders import SAT_MEAN, SAT_STD

    load_encoder(tiny_dinov2_path, mean=SAT_MEAN, std=SAT_STD).save_pretrained(tmp_path / "sat")  # the teacher folder
    out = train_deacl(tiny_cfg(str(tmp_path / "sat"), tmp_path / "run", max_steps=1, attack_steps=1))
    robust = load_encoder(str(out))
    torch.testing.assert_close(robust.mean.flatten(), torch.tensor(SAT_MEAN))
    torch.testing.assert_close(robust.std.flatten(), torch.tensor(SAT_STD))
    processor = AutoImageProcessor.from_pretrained(str(out))
    assert list(processor.image_mean) == list(SAT_MEAN) and list(processor.image_std) == list(SAT_STD)
