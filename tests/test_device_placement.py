"""Device placement, guarded on a CPU-only machine (issue 21).

A GPU run fails on the first batch where a loop mixes host and accelerator tensors, or a loaded
model stays on the host. CI has no GPU, so two guards stand in for one:

* a static check: every tensor factory (`torch.zeros`, `torch.tensor`, `torch.randperm`, ...) in the
  modules that run next to the accelerator names its `device=` (or writes into `out=`), or carries a
  `# cpu-ok: reason` comment saying why the host is right;
* the real loops on a stub accelerator (`tests/stub_device.py`: CPU values that report another device,
  with CUDA's mixing rules enforced on every op): attacks, evaluation, worst case, DeACL steps, head
  training, the benchmark (fresh heads and heads reused from disk) and the DeACL evolution callback.
  Where the stub runs them, the numbers must equal the plain CPU run's.
"""

import ast
import dataclasses
import json
import re
import sys
from pathlib import Path

import accelerate
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest import make_tiny_backbone, one_thread  # noqa: E402
from stub_device import STUB, StubDeviceMismatch, StubTensor, stub_device  # noqa: E402

from hf_ssl_robust.attack_suites import SUITES, attacks_for_task, build_attack  # noqa: E402
from hf_ssl_robust.data import get_dataset_spec, make_dataset  # noqa: E402
from hf_ssl_robust.data.loaders import IndexedDataset  # noqa: E402
from hf_ssl_robust.data.loading import collate  # noqa: E402
from hf_ssl_robust.encoders import load_encoder  # noqa: E402
from hf_ssl_robust.evaluation import evaluate  # noqa: E402
from hf_ssl_robust.tasks import get_task  # noqa: E402

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)
PACKAGE = Path(__file__).resolve().parents[1] / "hf_ssl_robust"

# Modules whose tensors meet the accelerator. data/ is left out on purpose: datasets and collate build
# batches on the host and the (prepared) loader moves them.
RUN_PATH = ["attacks", "defenses", "heads", "metrics", "benchmark.py", "training.py", "evaluation.py", "evolution.py",
            "worst_case.py", "losses.py", "tasks.py", "encoders.py", "families.py", "batching.py", "precision.py",
            "space_backend.py", "attack_suites.py"]
FACTORIES = {"zeros", "ones", "empty", "full", "arange", "range", "linspace", "logspace", "eye", "tensor", "as_tensor",
             "rand", "randn", "randint", "randperm", "empty_strided", "scalar_tensor"}
CPU_OK = re.compile(r"#\s*cpu-ok:\s*\S")


@pytest.fixture(autouse=True)
def _no_hub_kernels(monkeypatch):
    """transformers 5 kernelizes models loaded with `from_pretrained` on `.train()`, and refuses the stub's
    device type; the kernels are beside the point here."""
    monkeypatch.setenv("USE_HUB_KERNELS", "0")


@pytest.fixture
def stub_accelerator(monkeypatch):
    """Every `Accelerator` (the ones the code makes itself included) places on the stub device."""
    monkeypatch.setattr(accelerate.Accelerator, "device", property(lambda self: STUB))
    with stub_device():
        yield STUB


def _factory_calls_without_device(path: Path) -> list[str]:
    source = path.read_text()
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in FACTORIES
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"):
            continue
        if any(k.arg in ("device", "out") for k in node.keywords):
            continue
        span = lines[node.lineno - 1 : node.end_lineno]
        if any(CPU_OK.search(line) for line in span):
            continue
        found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: torch.{node.func.attr}(...) has no device= "
                     f"(add device=..., or `# cpu-ok: why` if the host is right)")
    return found


def test_device_placement__every_tensor_factory_on_the_run_path_names_its_device():
    files = []
    for entry in RUN_PATH:
        target = PACKAGE / entry
        files += sorted(target.rglob("*.py")) if target.is_dir() else [target]
    assert len(files) > 25 and all(f.is_file() for f in files)
    problems = [p for f in files for p in _factory_calls_without_device(f)]
    assert not problems, "\n".join(problems)


def test_device_placement__static_check_sees_a_missing_device():
    bad = PACKAGE / "__device_check_probe__.py"  # inside the package: the message names it relative to the repo
    try:
        bad.write_text("import torch\n\ndef f(x):\n    a = torch.zeros(3)\n    b = torch.zeros(\n        3, device=x.device)\n"
                       "    c = torch.randperm(4)  # cpu-ok: sampler indices\n    d = torch.tensor(\n        [1.0],\n    )\n")
        problems = _factory_calls_without_device(bad)
    finally:
        bad.unlink()
    assert [p.split(": ")[0] for p in problems] == ["hf_ssl_robust/__device_check_probe__.py:4", "hf_ssl_robust/__device_check_probe__.py:8"]


# ----------------------------------------------------------------------------- the stub itself


def test_stub_device__refuses_what_cuda_refuses():
    with stub_device() as device:
        x = torch.rand(2, 3).to(device)
        assert isinstance(x, StubTensor) and x.device == device
        assert torch.zeros(2, device=x.device).device == device and torch.zeros_like(x).device == device
        assert (x + torch.tensor(2.0)).device == device  # a CPU 0-dim tensor may be an input, as on CUDA
        assert x.cpu().device.type == "cpu" and not isinstance(x.cpu(), StubTensor)
        with pytest.raises(StubDeviceMismatch, match="several devices"):
            torch.zeros(3) + x[0]
        total = torch.zeros(())
        with pytest.raises(StubDeviceMismatch, match="several devices"):
            total += x.sum()  # training.py's loss accumulator: fails on a GPU as here
        with pytest.raises(StubDeviceMismatch, match="generator"):
            torch.rand(2, generator=torch.Generator().manual_seed(0), device=device)
        g = torch.Generator(device=device)
        g.manual_seed(0)
        assert torch.rand(2, generator=g, device=device).device == device
        with pytest.raises(StubDeviceMismatch, match="generator"):
            torch.rand(2, generator=g)
        with pytest.raises(StubDeviceMismatch, match="numpy"):
            x.numpy()
        indexed = x[torch.tensor([1])]  # host indices into an accelerator tensor are fine on CUDA
        assert indexed.device == device
        model = torch.nn.Linear(3, 2).to(device)
        model(x).sum().backward()
        assert model.weight.grad.device == device
    assert torch.Generator.__name__ == "Generator" and torch.tensor.__module__ != "stub_device"  # all undone
    assert not isinstance(torch.zeros(1), StubTensor)


# ----------------------------------------------------------------------------- attacks, evaluation, worst case


def _head(task_name: str, image_size: int = 32):
    torch.manual_seed(0)
    encoder = load_encoder(make_tiny_backbone("dinov2"))
    task, spec = get_task(task_name), get_dataset_spec("shapes", task=task_name)
    return task.head_class.from_encoder(encoder, **task.head_kwargs(spec, image_size)).eval(), task, spec


def _batches(task, spec):
    """Two batches of ShapesWorld; for segmentation the second mixes a 40x32 image (sliding windows) with a 32x32 one."""
    items = list(IndexedDataset(make_dataset(spec, "eval", num_samples=4, seed=0, image_size=40 if task.name == "segmentation" else 32)))
    if task.name == "segmentation":
        items = [{key: v[..., : 40 if k == 2 else 32, :32] if key in ("pixel_values", "mask", "depth") else v for key, v in it.items()}
                 for k, it in enumerate(items)]
    return [collate(items[:2]), collate(items[2:])]


@pytest.mark.parametrize("task_name", ["classification", "segmentation", "depth"])
def test_evaluate__every_attack_and_the_worst_case_run_on_the_accelerator(task_name):
    model, task, spec = _head(task_name)
    batches = _batches(task, spec)
    if task_name == "segmentation":
        assert "image_size" in batches[1]  # mixed sizes: the size-group path runs
    attacks = {n: build_attack(n, task, spec, eps=8 / 255, step_size=2 / 255, steps=2, seed=0)
               for n in attacks_for_task(SUITES["strong"], task_name)}  # paper attack + embed + every APGD loss
    on_cpu = evaluate(model, batches, task, spec, attacks=attacks, worst_case=True)
    with stub_device() as device:
        model.to(device)
        loader = [{k: v.to(device) for k, v in b.items()} for b in batches]  # what a prepared loader yields
        on_stub = evaluate(model, loader, task, spec, attacks=attacks, worst_case=True)
    assert set(on_stub) == set(attacks) | {"none", "worst"}
    # Same CPU kernels, but ops that autograd decomposes on a tensor subclass may round differently in the last bit.
    numbers = lambda m: {k: v for k, v in m.items() if k not in ("flags", "checkpoints")}  # noqa: E731
    assert {n: numbers(m) for n, m in on_stub.items()} == {n: pytest.approx(numbers(m), rel=1e-5, abs=1e-6) for n, m in on_cpu.items()}
    assert {n: m["flags"] for n, m in on_stub.items()} == {n: m["flags"] for n, m in on_cpu.items()}


@pytest.mark.parametrize("seeds", [0, (3, 4)])
def test_attacks__random_start_and_restarts_on_the_accelerator(seeds):
    model, task, spec = _head("classification")
    batch = _batches(task, spec)[0]
    pixels, labels = batch["pixel_values"], batch["labels"]
    attack = build_attack("apgd:dlr", task, spec, eps=8 / 255, steps=3, seed=seeds)
    attack = dataclasses.replace(attack, restarts=2)
    expected = attack.perturb(model, pixels, labels)
    with stub_device() as device:
        model.to(device)
        result = attack.perturb(model, pixels.to(device), labels.to(device))
        assert result.pixels.device == device and result.scores.device == device
        adv, scores = result.pixels.cpu(), result.scores.cpu()
    assert torch.equal(adv, expected.pixels) and torch.allclose(scores, expected.scores, rtol=1e-5, atol=1e-6)


def test_encoders_and_heads__wrapping_modules_already_on_the_accelerator():
    with stub_device() as device:
        backbone = make_tiny_backbone("dinov2").to(device)
        encoder = load_encoder(backbone)  # normalisation buffers join the backbone's device
        assert encoder.mean.device == device
        out = encoder(torch.rand(1, 3, 32, 32).to(device))
        assert out.cls.device == device
        spec = get_dataset_spec("shapes", task="segmentation")
        task = get_task("segmentation")
        head = task.head_class.from_encoder(encoder, **task.head_kwargs(spec, 32))  # new layers join the encoder
        assert {p.device for p in head.parameters()} == {device}
        assert head(torch.rand(1, 3, 32, 32).to(device)).logits.device == device


# ----------------------------------------------------------------------------- DeACL


def _deacl_cfg(root: Path, name: str, **kw):
    from hf_ssl_robust.defenses import DeACLConfig

    if not (root / "enc" / "config.json").is_file():
        make_tiny_backbone("dinov2").save_pretrained(root / "enc")
    kw = {"checkpoint_every": 0, **kw}
    return DeACLConfig(encoder=str(root / "enc"), dataset="shapes", num_train_samples=8, image_size=32, batch_size=4, max_steps=2,
                       attack_steps=2, log_every=1, output_dir=str(root / name), **kw)


@pytest.mark.parametrize("objective", ["cls", "dense"])
def test_deacl__steps_on_the_accelerator_match_the_cpu_run(tmp_path, objective, monkeypatch):
    from hf_ssl_robust.defenses import train_deacl

    train_deacl(_deacl_cfg(tmp_path, "cpu", objective=objective, checkpoint_every=1))
    monkeypatch.setattr(accelerate.Accelerator, "device", property(lambda self: STUB))
    with stub_device():
        train_deacl(_deacl_cfg(tmp_path, "stub", objective=objective, checkpoint_every=1))
    logs = [[json.loads(line) for line in (tmp_path / name / "log.jsonl").read_text().splitlines()] for name in ("cpu", "stub")]
    # Step 1 starts from identical weights; afterwards last-bit differences (ops a tensor subclass decomposes)
    # may flip the sign of a near-zero input gradient in the inner PGD, so later steps agree only closely.
    assert len(logs[0]) == 2 and logs[1][0] == pytest.approx(logs[0][0], rel=1e-5, abs=1e-6)
    assert logs[1][1] == pytest.approx(logs[0][1], rel=1e-2, abs=1e-4)
    from safetensors.torch import load_file

    weights = [load_file(tmp_path / name / "model.safetensors") for name in ("cpu", "stub")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.allclose(weights[0][k], weights[1][k], rtol=1e-3, atol=1e-4) for k in weights[0])
    assert (tmp_path / "stub" / "checkpoints" / "step_2").is_dir()  # Accelerator.save_state ran on the device's tensors


def test_deacl__evolution_callback_on_the_accelerator(tmp_path, stub_accelerator):
    """The evolution callback trains heads on the (device-resident) student: its feature cache must run there."""
    from hf_ssl_robust.defenses import train_deacl
    from hf_ssl_robust.evolution import make_evolution_eval

    eval_fn = make_evolution_eval(tasks=("classification",), steps=1, num_train_samples=16, max_eval_samples=4, image_size=32, head_epochs=1)
    path = train_deacl(_deacl_cfg(tmp_path, "evo", eval_every=1), eval_fn=eval_fn)
    rows = [json.loads(line) for line in (path / "evolution.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2] and set(rows[0]["classification"]) == {"none", "embed", "pgd"}


# ----------------------------------------------------------------------------- head training and the benchmark


@pytest.mark.parametrize(("task_name", "cache"), [("classification", "yes"), ("segmentation", "no"), ("depth", "yes")])
def test_train_head__on_the_accelerator_with_an_encoder_already_there(task_name, cache, stub_accelerator):
    """As in the benchmark's second task or the evolution callback: the shared encoder is on the device already."""
    from hf_ssl_robust.training import TrainHeadConfig, train_head

    encoder = load_encoder(make_tiny_backbone("dinov2")).to(stub_accelerator)
    cfg = TrainHeadConfig(encoder="", task=task_name, dataset="shapes", image_size=32, epochs=1, num_train_samples=16,
                          num_eval_samples=4, lr=1e-3, cache_features=cache)
    model, info = train_head(cfg, encoder=encoder)
    assert {p.device for p in model.parameters()} == {stub_accelerator}
    assert info["metrics"]["num_samples"] == 4


def _benchmark_kwargs(root: Path) -> dict:
    if not (root / "enc" / "config.json").is_file():
        make_tiny_backbone("dinov2").save_pretrained(root / "enc")
    return dict(encoders=[str(root / "enc")], tasks=["classification", "segmentation"], attacks=["embed", "pgd", "segpgd"], steps=1,
                max_eval_samples=4, num_train_samples=16, head_epochs=1, head_lr=1e-3, image_size=32, batch_size="4", num_examples=0)


def _values(records):
    return {(r["task"], r["attack"], r["metric"]): r["value"] for r in records}


def test_benchmark__trains_two_heads_on_one_encoder_on_the_accelerator(tmp_path, monkeypatch):
    from hf_ssl_robust.benchmark import BenchmarkConfig, run_benchmark

    on_cpu = run_benchmark(BenchmarkConfig(output_dir=str(tmp_path / "cpu"), **_benchmark_kwargs(tmp_path)))
    monkeypatch.setattr(accelerate.Accelerator, "device", property(lambda self: STUB))
    with stub_device():
        on_stub = run_benchmark(BenchmarkConfig(output_dir=str(tmp_path / "stub"), **_benchmark_kwargs(tmp_path)))
    assert _values(on_stub) == pytest.approx(_values(on_cpu), rel=1e-5, abs=1e-6, nan_ok=True)


def test_benchmark__heads_from_disk_move_to_the_accelerator(tmp_path, monkeypatch):
    """`--heads_dir` (and a resumed run) load heads with `from_pretrained`: on the host until moved."""
    from hf_ssl_robust.benchmark import BenchmarkConfig, run_benchmark

    kw = _benchmark_kwargs(tmp_path)
    on_cpu = run_benchmark(BenchmarkConfig(output_dir=str(tmp_path / "cpu"), **kw))
    monkeypatch.setattr(accelerate.Accelerator, "device", property(lambda self: STUB))
    with stub_device():
        for name in ("reuse", "auto"):  # `--batch_size auto` probes the loaded head on the device too
            on_stub = run_benchmark(BenchmarkConfig(output_dir=str(tmp_path / name), heads_dir=str(tmp_path / "cpu" / "heads"),
                                                    **{**kw, **({"batch_size": "auto"} if name == "auto" else {})}))
            assert _values(on_stub) == pytest.approx(_values(on_cpu), rel=1e-5, abs=1e-6, nan_ok=True), name


# ----------------------------------------------------------------------------- the Space


@pytest.mark.parametrize("task_name", ["segmentation", "depth"])
def test_space__heads_and_images_on_the_backend_device(tmp_path, task_name):
    """A head trained (on whatever the accelerator picks) or loaded is moved to the backend's device,
    and so is the visitor's image; results come back to the host for the figures."""
    from hf_ssl_robust.space_backend import SpaceBackend

    make_tiny_backbone("dinov2").save_pretrained(tmp_path / "tiny-enc")
    with stub_device() as device:
        backend = SpaceBackend(encoders=[str(tmp_path / "tiny-enc")], cache_dir=str(tmp_path / "cache"), heads_dir=str(tmp_path / "none"),
                               train_samples=16, train_epochs=1, device=device)
        backend.prepare_examples()
        scene = next(p for p in backend.examples if Path(p).stem == "shapesworld_0")  # its labels are known: compared on the host
        out = backend.run("tiny-enc", task_name, "task", 8, 1, scene, size=64)
        model = backend.get_model(str(tmp_path / "tiny-enc"), task_name)
        assert {p.device for p in model.parameters()} == {device}
    assert out.metrics["linf_255"] <= 8.001
    assert {"segmentation": "clean_miou", "depth": "clean_rmse_vs_truth_m"}[task_name] in out.metrics


@pytest.mark.parametrize("kind", ["dinov2", "dinov2_reg", "vit", "resnet", "dinov3_vit", "dinov3_convnext", "clip", "siglip"])
def test_encoder_families__tokens_and_an_attack_step_on_the_accelerator(kind):
    """Each family adapter (and the transformers model under it: RoPE, position ids, registers) on the device."""
    backbone = make_tiny_backbone(kind, patch_size=8)
    encoder = load_encoder(backbone)
    pixels = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    expected = [encoder(pixels, pre_norm=p) for p in (False, True)]
    with stub_device() as device:
        encoder.to(device)
        x = pixels.to(device)
        for pre_norm, ref in zip((False, True), expected):
            out = encoder(x, pre_norm=pre_norm)
            assert out.cls.device == device and out.patches.device == device and out.grid == ref.grid
            assert torch.allclose(out.patches.cpu(), ref.patches, rtol=1e-4, atol=1e-5)
        adv = build_attack("embed", get_task("segmentation"), get_dataset_spec("shapes", task="segmentation"), eps=4 / 255, steps=1,
                           seed=0).perturb(encoder, x).pixels
        assert adv.device == device and float((adv - x).abs().max()) <= 4 / 255
