"""Everything is checked before any work; multi-dataset runs skip pairs that do not exist; sizes; --dry_run."""

import dataclasses

import pytest

from hf_ssl_robust.benchmark import BenchmarkConfig
from hf_ssl_robust.cli import main as cli_main
from hf_ssl_robust.data import get_dataset_spec
from hf_ssl_robust.sizes import InputSize, resolve_input_size
from hf_ssl_robust.validation import cells, parse_data_dirs


def test_cli__bad_norm_fails_before_any_training(tiny_dinov2_path, tmp_path, capsys):
    assert cli_main(["benchmark", "--encoders", tiny_dinov2_path, "--norm", "l3", "--output_dir", str(tmp_path / "o")]) == 2
    assert "Unknown norm 'l3'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # no head was trained, nothing written


def test_cli__every_problem_reported_at_once(tmp_path, capsys):
    argv = ["benchmark", "--encoders", str(tmp_path / "no-such-encoder"), "--datasets", "nope", "cityscapes",
            "--attacks", "fgsm", "--eps", "-8/255", "--data_dir", "voc2012=/nonexistent"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    for part in ["Unknown dataset 'nope'", "Unknown attack(s) ['fgsm']", "-8/255' is negative", "'voc2012' is not one of the requested",
                 "--data_dir cityscapes=PATH"]:
        assert part in err, part
    assert "5 problem(s)" in err


def test_cli__encoder_checked_before_work(tmp_path, capsys):
    assert cli_main(["benchmark", "--encoders", str(tmp_path / "missing"), "--tasks", "classification", "--output_dir", str(tmp_path / "o")]) == 2
    assert "no folder" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_cli__offline_uncached_hub_dataset_fails_before_any_work(tmp_path, capsys, monkeypatch):
    """Offline, a Hub dataset missing from the cache is reported up front, not after the other cells ran."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "empty_cache"))
    argv = ["benchmark", "--encoders", "shapes-resnet-tiny", "--datasets", "shapes", "cifar10", "ade20k", "voc2012",
            "--tasks", "classification", "segmentation", "--data_dir", f"voc2012={tmp_path}", "--output_dir", str(tmp_path / "o")]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "2 problem(s)" in err and not (tmp_path / "o").exists()
    assert "dataset 'cifar10' (Hub id 'uoft-cs/cifar10') is not in the local datasets cache" in err
    assert "dataset 'ade20k'" in err and "--data_dir ade20k=PATH" in err
    assert "voc2012" not in err.split("nothing was run")[1]  # a local copy needs no cache


def test_offline_cache_check__cached_datasets_and_online_runs_pass(monkeypatch):
    import datasets

    from hf_ssl_robust.validation import uncached_offline_datasets

    looked_up = []
    monkeypatch.setattr(datasets, "load_dataset_builder", lambda hub_id, config=None, revision=None: looked_up.append(hub_id))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = BenchmarkConfig(encoders=["x"], datasets=["shapes", "cifar10"], tasks=["classification"])  # checks once itself
    looked_up.clear()
    assert uncached_offline_datasets(cfg, {}) == [] and looked_up == ["uoft-cs/cifar10"]  # in the cache: fine
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    looked_up.clear()
    assert uncached_offline_datasets(cfg, {}) == [] and looked_up == []  # online: downloading is allowed, nothing checked


def test_config__l2_radii_above_one_and_help_text():
    cfg = BenchmarkConfig(encoders=["x"], norm="l2", eps=["0.5", "3.0"])
    assert cfg.eps_values == [0.5, 3.0]
    with pytest.raises(ValueError, match="above 1"):
        BenchmarkConfig(encoders=["x"], eps=["3.0"])
    help_text = next(f for f in dataclasses.fields(BenchmarkConfig) if f.name == "image_size").metadata["help"]
    assert "paper's size for the encoder family" in help_text


def test_data_dirs__per_dataset_and_bare(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    assert parse_data_dirs([f"cityscapes={a}", f"voc2012={b}"], ["cityscapes", "voc2012", "shapes"]) == ({"cityscapes": str(a), "voc2012": str(b)}, [])
    assert parse_data_dirs([str(a)], ["shapes", "cityscapes"]) == ({"cityscapes": str(a)}, [])  # ShapesWorld stays generated
    dirs, problems = parse_data_dirs([str(a)], ["cityscapes", "voc2012"])
    assert dirs == {} and "write NAME=PATH" in problems[0]
    cfg = BenchmarkConfig(encoders=["x"], datasets=["shapes", "voc2012"], data_dir=[f"voc2012={a}"])
    assert cfg.data_dirs == {"voc2012": str(a)}


def test_cli__repeated_data_dir_flags_are_merged(tmp_path, monkeypatch):
    from hf_ssl_robust import cli

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    cfg = cli.parse_config(BenchmarkConfig, ["--encoders", "x", "--datasets", "cityscapes", "voc2012", "--data_dir", f"cityscapes={a}",
                                             "--steps", "3", "--data_dir", f"voc2012={b}"], "t")
    assert cfg.data_dirs == {"cityscapes": str(a), "voc2012": str(b)} and cfg.steps == 3


def test_cells__unsupported_pairs_are_skipped():
    cfg = BenchmarkConfig(encoders=["x"], datasets=["cifar10", "ade20k", "nyu_depth_v2"], dry_run=True)
    run, skipped = cells(cfg)
    assert run == [("cifar10", "classification"), ("ade20k", "segmentation"), ("nyu_depth_v2", "depth")]
    assert len(skipped) == 6 and skipped[0]["dataset"] == "cifar10" and "no segmentation labels" in skipped[0]["reason"]


def test_sizes__paper_table_per_family():
    city, nyu, ade = (get_dataset_spec(n) for n in ("cityscapes", "nyu_depth_v2", "ade20k"))
    assert resolve_input_size("dinov2", city) == InputSize((518, 1036), 518, 341, 518)
    assert resolve_input_size("dino", city) == InputSize((224, 448), 224, 100, 224)
    assert resolve_input_size("dino", nyu).size == resolve_input_size("dinov2-reg", nyu).size == (480, 640)
    assert resolve_input_size("dino", ade) == InputSize(224, 224, 100, 224)
    assert resolve_input_size("dinov2", get_dataset_spec("cifar10")) == InputSize(518)
    assert resolve_input_size("dinov2", city, 64) == InputSize(64, 64, 32, 64)  # --image_size wins
    assert resolve_input_size(None, city).size == (224, 448)  # a family with no row: the dataset's own


def test_dry_run__paper_grid_without_weights_or_data(monkeypatch, capsys):
    import datasets

    import hf_ssl_robust.encoders as encoders

    def boom(*a, **k):
        raise AssertionError("--dry_run must not load weights or data")

    monkeypatch.setattr(encoders, "load_encoder", boom)
    monkeypatch.setattr(datasets, "load_dataset", boom)
    argv = ["benchmark", "--encoders", "dinov2-small", "dino-vitb16", "--datasets", "cifar10", "ade20k", "cityscapes", "nyu_depth_v2", "--dry_run"]
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.split("What one pass")[0].splitlines() if line.startswith("| dino")]  # the plan table, not the costs
    assert len(rows) == 8
    assert any("cityscapes" in r and "518x1036" in r and "518 / 341 (3)" in r for r in rows)
    assert any("cityscapes" in r and "224x448" in r and "224 / 100 (4)" in r for r in rows)
    assert sum("480x640" in r for r in rows) == 2 and "skipped ade20k x classification" in out


def test_readme__shows_the_current_dry_run_of_the_paper_grid(capsys):
    from pathlib import Path

    argv = ["benchmark", "--encoders", "dinov2-small", "dino-vitb16", "--datasets", "cifar10", "ade20k", "cityscapes", "nyu_depth_v2", "--dry_run"]
    assert cli_main(argv) == 0
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert capsys.readouterr().out in readme
