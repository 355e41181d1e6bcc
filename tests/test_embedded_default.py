"""The embedded default: the two bundled tiny encoders, their cards, the wheel, `benchmark` with no encoders."""

import importlib.util
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel

from hf_ssl_robust import load_encoder
from hf_ssl_robust.benchmark import BenchmarkConfig, run_benchmark
from hf_ssl_robust.encoders import ASSETS_DIR, IMAGENET_MEAN, IMAGENET_STD, bundled_encoders

REPO = Path(__file__).resolve().parents[1]
BUNDLED = ("shapes-resnet-tiny", "shapes-resnet-tiny-deacl")


def load_script(name: str):
    """Import scripts/<name>.py as a module."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_both_bundled_encoders_ship_with_the_package():
    assert set(BUNDLED) <= set(bundled_encoders())
    for name in BUNDLED:
        folder = ASSETS_DIR / name
        assert (folder / "model.safetensors").stat().st_size < 10 * 2**20  # a few MB, as promised
        card = (folder / "README.md").read_text()
        assert card.startswith("---") and name in card
    made = json.loads((ASSETS_DIR / BUNDLED[0] / "training_args.json").read_text())
    assert made["steps_done"] > 0 and made["batch_size"] > 0 and made["arch"] == "resnet"
    deacl = json.loads((ASSETS_DIR / BUNDLED[1] / "deacl_config.json").read_text())
    assert deacl["encoder"] == BUNDLED[0] and deacl["total_steps"] > 0 and "output_dir" not in deacl


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_encoder_loads_offline_by_name(name):
    encoder = load_encoder(name)
    out = encoder(torch.rand(2, 3, 64, 48))
    assert out.cls.shape == (2, encoder.hidden_size) and out.grid == (8, 6)
    assert torch.isfinite(out.patches).all()
    # A plain backbone: AutoModel loads the same folder (safetensors, no remote code).
    assert type(AutoModel.from_pretrained(ASSETS_DIR / name)).__name__ == "ResNetModel"


def test_the_deacl_twin_differs_from_its_teacher():
    a = load_file(ASSETS_DIR / BUNDLED[0] / "model.safetensors")
    b = load_file(ASSETS_DIR / BUNDLED[1] / "model.safetensors")
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)


def test_benchmark_without_encoders_uses_the_bundled_ones(tmp_path):
    assert BenchmarkConfig().resolved_encoders() == list(bundled_encoders())
    cfg = BenchmarkConfig(tasks=["classification"], attacks=["embed", "pgd"], steps=2, max_eval_samples=8, num_train_samples=32,
                          head_epochs=1, num_examples=0, output_dir=str(tmp_path))
    records = run_benchmark(cfg)
    assert {r["encoder"] for r in records} == set(bundled_encoders()) | {"prior"}  # + the image-free prior row
    assert {r["attack"] for r in records} == {"none", "embed", "pgd"}


def test_wheel_contains_the_bundled_encoders_and_card_templates(tmp_path):
    """`pip install hf-ssl-robust` (not only the editable install) must carry the weights."""
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = zipfile.ZipFile(next(tmp_path.glob("hf_ssl_robust-*.whl"))).namelist()
    for name in BUNDLED:
        for f in ("config.json", "model.safetensors", "README.md"):
            assert f"hf_ssl_robust/assets/{name}/{f}" in names
    assert "hf_ssl_robust/templates/encoder_card.md" in names


def test_embedding_shift_script(tiny_dinov2_path, tmp_path):
    """scripts/embedding_shift.py: ε = 0 moves nothing; a real attack moves the tokens; JSON written."""
    embedding_shift = load_script("embedding_shift")
    common = ["--encoders", tiny_dinov2_path, "--num_samples", "4", "--image_size", "32", "--steps", "2"]
    (still,) = embedding_shift.main([*common, "--eps", "0"])
    assert still["cls"]["relative_l2"] == 0 and abs(still["patch"]["cosine"] - 1) < 1e-5
    (moved,) = embedding_shift.main([*common, "--eps", "8/255", "--output", str(tmp_path / "shift.json")])
    assert moved["cls"]["relative_l2"] > 0.01 and moved["patch"]["cosine"] < 1
    assert json.loads((tmp_path / "shift.json").read_text())[0]["encoder"] == tiny_dinov2_path


@pytest.mark.parametrize("model", [["--arch", "vit"], ["--arch", "vit", "--patch_init", "whiten"], ["--arch", "cnn"], ["--arch", "resnet"]])
def test_supervised_ceiling_script_writes_its_curve(tmp_path, model):
    """scripts/supervised_ceiling.py: evaluates on schedule, accuracies are fractions, the JSON matches."""
    supervised_ceiling = load_script("supervised_ceiling")
    result = supervised_ceiling.main(["--steps", "4", "--batch_size", "8", "--eval_every", "2", "--num_eval", "16",
                                      "--image_size", "32", "--output", str(tmp_path / "curve.json"), *model])
    curve = result["curve"]
    assert [r["step"] for r in curve] == [2, 4] and all(0 <= r["validation_accuracy"] <= 1 for r in curve)
    assert "test_accuracy" not in curve[0] and 0 <= result["test_accuracy"] <= 1 and result["test_scenes"] == 16
    assert json.loads((tmp_path / "curve.json").read_text())["curve"] == curve


def test_whitened_patch_embedding_decorrelates_patches():
    """scripts/pretrain_tiny.py --patch_init whiten: the patch projection's outputs on fresh scenes have
    (nearly) identity covariance, unlike the random init."""
    from transformers import Dinov2Config, Dinov2Model

    from hf_ssl_robust.data.synthetic import render_scenes

    import hf_ssl_robust.pretraining as pretrain
    config = Dinov2Config(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
    backbone = Dinov2Model(config)

    def covariance():
        images = render_scenes(256, 32, seed=5)["pixel_values"]
        x = (images - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        with torch.no_grad():
            out = backbone.embeddings.patch_embeddings.projection(x).flatten(2).transpose(1, 2).reshape(-1, 32)
        return out.mean(0), torch.cov(out.T)

    _, random_cov = covariance()
    pretrain.whiten_patch_embedding(backbone, render_scenes(512, 32, seed=4)["pixel_values"])
    mean, cov = covariance()
    assert not torch.allclose(random_cov, torch.eye(32), atol=0.3)
    assert mean.abs().max() < 0.2
    assert torch.allclose(cov, torch.eye(32), atol=0.3), cov.diagonal()


def test_pretrain_tiny_saves_an_automodel_encoder_and_resumes(tmp_path, capsys):
    """A few DINO steps of scripts/pretrain_tiny.py end in a loadable Dinov2Model; --resume continues from
    the last checkpoint instead of starting over."""
    import hf_ssl_robust.pretraining as pretrain
    args = ["--arch", "vit", "--output_dir", str(tmp_path), "--image_size", "32", "--local_size", "16", "--num_local", "1",
            "--hidden_size", "32", "--layers", "1", "--heads", "2", "--out_dim", "16", "--batch_size", "4",
            "--warmup_steps", "1", "--checkpoint_every", "2", "--patch_init", "whiten"]
    pretrain.main(args + ["--max_steps", "2"])
    first = load_file(tmp_path / "model.safetensors")
    capsys.readouterr()
    pretrain.main(args + ["--max_steps", "4", "--resume"])
    assert "at step 2" in capsys.readouterr().out
    info = json.loads((tmp_path / "training_args.json").read_text())
    assert info["steps_done"] == 4 and info["patch_init"] == "whiten"
    encoder = AutoModel.from_pretrained(tmp_path)
    assert type(encoder).__name__ == "Dinov2Model" and encoder.config.image_size == 32
    assert any(not torch.equal(first[k], v) for k, v in load_file(tmp_path / "model.safetensors").items())
    assert len(list((tmp_path / "checkpoints").glob("step_*"))) == 2


def test_pretrain_tiny_renders_the_same_batches_in_dataloader_workers(tmp_path):
    """--num_workers 2 (scenes rendered in worker processes, as on a GPU) trains exactly what one process
    does: every step's views and mask depend only on (seed, step, rank)."""
    import hf_ssl_robust.pretraining as pretrain
    args = ["--arch", "vit", "--image_size", "32", "--local_size", "16", "--num_local", "1", "--hidden_size", "32", "--layers", "1",
            "--heads", "2", "--out_dim", "16", "--batch_size", "4", "--warmup_steps", "1", "--max_steps", "3",
            "--checkpoint_every", "0"]
    for workers in ("0", "2"):
        pretrain.main(args + ["--output_dir", str(tmp_path / workers), "--num_workers", workers])
    inline, workers = load_file(tmp_path / "0" / "model.safetensors"), load_file(tmp_path / "2" / "model.safetensors")
    assert inline.keys() == workers.keys() and all(torch.equal(inline[k], workers[k]) for k in inline)


RESNET_ARGS = ["--embedding_size", "8", "--hidden_sizes", "8", "16", "--depths", "1", "1", "--image_size", "24",
               "--render_size", "32", "--batch_size", "8", "--pool_scenes", "16", "--warmup_steps", "1", "--dense_points", "4"]


def test_pretrain_tiny_resnet_saves_probes_and_resumes(tmp_path, capsys):
    """--arch resnet (geometry InfoNCE + dense InfoNCE): an AutoModel-loadable ResNetModel, a random-init probe
    line before training and one at the end, --stop_after_steps stops early and --resume continues from the
    last checkpoint."""
    import hf_ssl_robust.pretraining as pretrain
    args = RESNET_ARGS + ["--output_dir", str(tmp_path), "--checkpoint_every", "2", "--probe_scenes", "32",
                          "--probe_every_minutes", "60"]
    pretrain.main(args + ["--max_steps", "4", "--stop_after_steps", "2"])  # stops at 2 on the 4-step schedule
    first = load_file(tmp_path / "model.safetensors")
    assert "probe {" in capsys.readouterr().out
    assert json.loads((tmp_path / "training_args.json").read_text())["steps_done"] == 2
    pretrain.main(args + ["--max_steps", "4", "--resume"])
    assert "at step 2" in capsys.readouterr().out
    info = json.loads((tmp_path / "training_args.json").read_text())
    assert info["steps_done"] == 4 and info["scenes_seen"] == 32
    encoder = AutoModel.from_pretrained(tmp_path)
    assert type(encoder).__name__ == "ResNetModel" and encoder.config.image_size == 32
    assert any(not torch.equal(first[k], v) for k, v in load_file(tmp_path / "model.safetensors").items())
    log = [json.loads(line) for line in (tmp_path / "training_log.jsonl").read_text().splitlines()]
    probes = [r for r in log if "probe_accuracy" in r]
    assert [r["step"] for r in probes] == [0, 2, 4]  # random init, end of the first run, end of the resumed one
    assert [r["step"] for r in log if "loss" in r] == [2, 4]  # each run's last losses, though shorter than 20 steps
    assert all(0 <= r["probe_accuracy"] <= 1 and 0 <= r["probe_miou"] <= 1 and r["probe_depth_rmse"] > 0 for r in probes)
    before = (tmp_path / "training_log.jsonl").read_text(), (tmp_path / "model.safetensors").read_bytes()
    pretrain.main(args + ["--max_steps", "4", "--resume"])  # a finished run: the same command again changes nothing
    assert "nothing to do" in capsys.readouterr().out
    assert ((tmp_path / "training_log.jsonl").read_text(), (tmp_path / "model.safetensors").read_bytes()) == before


def test_pretrain_tiny_resnet_pairs_are_the_same_in_dataloader_workers(tmp_path):
    """The ResNet recipe's crops come from (seed, step): 0 and 2 DataLoader workers train the same weights."""
    import hf_ssl_robust.pretraining as pretrain
    args = RESNET_ARGS + ["--max_steps", "3", "--checkpoint_every", "0", "--probe_every_minutes", "0",
                          "--pool_cache", str(tmp_path / "pool")]
    for workers in ("0", "2"):
        pretrain.main(args + ["--output_dir", str(tmp_path / workers), "--num_workers", workers])
    inline, workers = load_file(tmp_path / "0" / "model.safetensors"), load_file(tmp_path / "2" / "model.safetensors")
    assert inline.keys() == workers.keys() and all(torch.equal(inline[k], workers[k]) for k in inline)


def test_dense_loss_matches_the_same_scene_point_in_both_views():
    """The dense InfoNCE samples both feature maps at the same source-image point through the known crops:
    with the true crop boxes two different crops of one feature image agree (low loss); told the wrong
    boxes, the same pair does not."""
    import torch.nn.functional as F

    import hf_ssl_robust.pretraining as pretrain
    torch.manual_seed(0)
    image = F.interpolate(torch.randn(4, 16, 6, 6), size=(48, 48), mode="bilinear", align_corners=False)  # smooth features
    boxes_a, boxes_b = (pretrain.crop_boxes(4, (0.4, 0.6), torch.Generator().manual_seed(s)) for s in (1, 2))
    view_a, view_b = pretrain.apply_crops(image, boxes_a, 24), pretrain.apply_crops(image, boxes_b, 24)
    right = pretrain.dense_loss(view_a, view_b, boxes_a, boxes_b, 16, 0.1, torch.Generator().manual_seed(3))
    wrong = pretrain.dense_loss(view_a, view_b, boxes_a, boxes_a, 16, 0.1, torch.Generator().manual_seed(3))
    assert right < 0.5 * wrong, (right, wrong)


def test_plot_pretraining_reads_the_probe_lines(tmp_path, capsys):
    """scripts/plot_pretraining.py: only probe lines become table rows (loss lines are skipped), and the PNG is written."""
    log = tmp_path / "training_log.jsonl"
    rows = [{"step": 0, "minutes": 0.0, "scenes": 0, "probe_accuracy": 0.2, "probe_miou": 0.15, "probe_depth_rmse": 2.1},
            {"step": 20, "loss": 9.0, "minutes": 0.5},
            {"step": 40, "minutes": 5.0, "scenes": 5120, "probe_accuracy": 0.5, "probe_miou": 0.3, "probe_depth_rmse": 1.6}]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    probes = load_script("plot_pretraining").main([str(log), "--output", str(tmp_path / "curve.png")])
    assert [p["step"] for p in probes] == [0, 40]
    table = capsys.readouterr().out
    assert "| 5.0 | 40 | 5120 | 0.500 | 0.300 | 1.600 |" in table and "9.0" not in table
    assert (tmp_path / "curve.png").stat().st_size > 1000


def test_make_embedded_default__every_step_runs_at_toy_size(tmp_path):
    """`SMOKE=1 bash scripts/make_embedded_default.sh` on a copy of the repository: pretraining, DeACL,
    bundling, both benchmarks, the README block, plots and the supervised ceiling all run, and rewrite
    the files the README and the cards are made from (which then agree with each other)."""
    import os
    import shutil

    copy = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "outputs")
    for name in ("hf_ssl_robust", "scripts", "docs", "model_cards", "space"):
        shutil.copytree(REPO / name, copy / name, ignore=ignore)
    (copy / "docs" / "embedded_default" / "logs").mkdir(exist_ok=True)
    for old in (copy / "docs" / "embedded_default" / "logs").iterdir():  # the committed run's logs: gone, so they must be rewritten
        old.unlink()
    for name in ("README.md", "pyproject.toml"):
        shutil.copy(REPO / name, copy / name)
    before = (copy / "docs" / "embedded_default" / "results.json").read_text()
    weights = (copy / "hf_ssl_robust" / "assets" / "shapes-resnet-tiny" / "model.safetensors").read_bytes()
    env = dict(os.environ, SMOKE="1", OUT=str(tmp_path / "out"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               PYTHONPATH=str(copy))  # the copy's package, not the installed one
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # this environment's hf-ssl-robust
    proc = subprocess.run(["bash", "scripts/make_embedded_default.sh"], cwd=copy, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (copy / "docs" / "embedded_default" / "results.json").read_text() != before
    assert (copy / "hf_ssl_robust" / "assets" / "shapes-resnet-tiny" / "model.safetensors").read_bytes() != weights
    docs = copy / "docs" / "embedded_default"
    for name in ("pretraining_log.jsonl", "pretraining_args.json", "deacl_log.jsonl", "random_weights_results.md",
                 "random_weights_run_info.json", "supervised_ceiling_resnet.json", "run_info.json", "robustness.png",
                 "logs/pretraining.log", "logs/benchmark.log"):
        assert (docs / name).is_file(), name
    steps = [json.loads(line) for line in (docs / "logs" / "steps.jsonl").read_text().splitlines()]
    assert {s["step"] for s in steps} >= {"pretraining", "deacl", "benchmark", "random_weights", "supervised_ceiling", "figures"}
    assert all(s["exit"] == 0 and s["seconds"] >= 0 for s in steps)
    assert any(r["encoder"] == "prior" for r in json.loads((docs / "results.json").read_text()))
    assert json.loads((copy / "docs" / "view_pairs.json").read_text())["view_pairs"]
    check = subprocess.run([sys.executable, "scripts/readme_results.py", "--check"], cwd=copy, env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr  # README's block is the new run's


def test_scene_streams_are_disjoint():
    """Every step of make_embedded_default.sh renders from its own ShapesWorld stream: the streams are distinct,
    no two share a single scene over the index ranges the steps use (each scene's generator is seeded by
    (stream, index)), and the pretraining probes score validation scenes, never the benchmark's test ones."""
    import hf_ssl_robust.pretraining as pretrain
    from hf_ssl_robust.data.loading import DEFAULT_SHAPES_SAMPLES
    from hf_ssl_robust.data.synthetic import _mix, make_shapes_dataset, render_scenes, scene_streams

    streams = scene_streams()
    assert len(set(streams.values())) == len(streams)
    used = {"pretraining": 65536, "whitening": 512, "probe_train": 2048, "supervised_ceiling": 1200 * 64,
            "train": 4096, "validation": DEFAULT_SHAPES_SAMPLES["validation"], "test": DEFAULT_SHAPES_SAMPLES["test"]}
    seen: dict[int, str] = {}
    for name, count in used.items():
        for i in range(count):
            key = _mix(streams[name], i)
            assert seen.setdefault(key, name) == name, f"{name} scene {i} is also a {seen[key]} scene"
    probes = pretrain.probe_data(32, 8, seed=0)
    validation = make_shapes_dataset(2, 32, split="validation")
    assert probes["validation"]["labels"][:2].tolist() == validation["label"]
    assert torch.equal(probes["train"]["labels"], render_scenes(8, 32, seed=streams["probe_train"])["labels"])
    assert not torch.equal(probes["validation"]["pixel_values"][:2], render_scenes(2, 32, seed=streams["test"])["pixel_values"])
