"""The real datasets' code paths, run on their format twins (tests/format_twins.py)."""

import json
import math

import pytest

from hf_ssl_robust.cli import main as cli_main
from hf_ssl_robust.data import DATASETS, get_dataset_spec, load_split, make_dataset
from hf_ssl_robust.data.loading import to_unified
from hf_ssl_robust.results import load_records

REAL = sorted(n for n, s in DATASETS.items() if s.source != "synthetic")


def test_twins__one_per_registered_real_dataset(format_twins):
    assert sorted(format_twins) == REAL


@pytest.mark.parametrize("name", REAL)
def test_twins__load_with_the_registered_columns_and_splits(name, format_twins):
    spec = get_dataset_spec(name)
    for split in ("train", "eval"):
        ds = load_split(spec, split, data_dir=format_twins[name])
        sample = to_unified(ds[0], spec, nan_depth=spec.nan_depth)
        assert sample["pixel_values"].shape[0] == 3


def test_twins__label_conventions(format_twins):
    ade = get_dataset_spec("ade20k")
    raw = load_split(ade, "eval", data_dir=format_twins["ade20k"])[0]
    import numpy as np

    a, m = np.asarray(raw["annotation"]), to_unified(raw, ade)["mask"].numpy()
    assert (m[a == 0] == 255).all() and (m[a == 150] == 149).all() and (m[a == 1] == 0).all()  # reduce_labels
    voc = get_dataset_spec("voc2012")
    raw = load_split(voc, "eval", data_dir=format_twins["voc2012"])[0]
    assert raw["mask"].mode == "P"
    m = to_unified(raw, voc)["mask"].numpy()
    assert (m == np.asarray(raw["mask"])).all() and 255 in m  # palette indices are class ids, void stays 255
    city = get_dataset_spec("cityscapes")
    raw = load_split(city, "eval", data_dir=format_twins["cityscapes"])[0]
    ids, m = np.asarray(raw["label"]), to_unified(raw, city)["mask"].numpy()
    assert (m[ids == 7] == 0).all() and (m[ids == 26] == 13).all() and (m[ids == 1] == 255).all()  # labelIds -> train ids
    nyu = get_dataset_spec("nyu_depth_v2")
    raw = load_split(nyu, "eval", data_dir=format_twins["nyu_depth_v2"])[0]
    d = to_unified(raw, nyu, nan_depth=nyu.nan_depth)["depth"]
    assert raw["depth_map"].mode == "F" and (d[0] == 0).all() and (d[1, :3] == 0).all() and (d[2:] > 0).all()
    sizes = {tuple(s["pixel_values"].shape[-2:]) for s in make_dataset("ade20k", "eval", data_dir=format_twins["ade20k"], image_size=32)}
    assert len(sizes) > 1  # short side resized, aspect kept: mixed sizes reach evaluation


def test_cli__benchmark_over_every_twin_in_one_call(tiny_dinov2_path, format_twins, tmp_path, capsys):
    """The README command shape: every task x every dataset; unsupported pairs skipped, every record written."""
    names = [*REAL, "shapes"]
    argv = ["benchmark", "--encoders", tiny_dinov2_path, "--tasks", "classification", "segmentation", "depth",
            "--datasets", *names, "--steps", "1", "--max_eval_samples", "4", "--num_train_samples", "8", "--head_epochs", "1",
            "--image_size", "32", "--batch_size", "3", "--num_examples", "0", "--num_workers", "0", "--output_dir", str(tmp_path)]
    for name in REAL:
        argv += ["--data_dir", f"{name}={format_twins[name]}"]
    assert cli_main(argv) == 0, capsys.readouterr().err[-2000:]
    records = load_records(tmp_path / "results.json")
    pairs = {(d, t) for d in names for t in DATASETS[d].tasks}
    attacks = {"classification": "pgd", "segmentation": "segpgd", "depth": "depth_pgd"}
    for d, t in pairs:
        cell = [r for r in records if r["dataset"] == d and r["task"] == t]
        assert {r["attack"] for r in cell} == {"none", "embed", attacks[t]}, (d, t)
        assert all(r["num_samples"] == 4 and math.isfinite(r["value"]) for r in cell), (d, t)
    info = json.loads((tmp_path / "run_info.json").read_text())
    everything = {(d, t) for d in names for t in ("classification", "segmentation", "depth")}
    assert {(s["dataset"], s["task"]) for s in info["skipped"]} == everything - pairs
    out = capsys.readouterr().out
    assert "Table 2" in out and "voc2012_aug" in out


def test_num_workers__auto_and_identical_training(tiny_dinov2_path, format_twins, tmp_path, monkeypatch):
    """Workers change nothing but speed: a segmentation head trained on the VOC twin with 0 and 2 workers is identical."""
    from hf_ssl_robust.data import make_dataset
    from hf_ssl_robust.data.loaders import resolve_num_workers
    from hf_ssl_robust.training import TrainHeadConfig, train_head

    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert resolve_num_workers("auto", make_dataset("voc2012", "eval", data_dir=format_twins["voc2012"], image_size=32)) == 5
    assert resolve_num_workers("auto", make_dataset("shapes", "eval", num_samples=4)) == 0  # in memory
    with pytest.raises(ValueError, match="num_workers"):
        resolve_num_workers("-1")
    metrics = []
    for workers in ("0", "2"):
        cfg = TrainHeadConfig(encoder=tiny_dinov2_path, task="segmentation", dataset="voc2012", data_dir=format_twins["voc2012"],
                              image_size=32, epochs=2, num_workers=workers, output_dir=None)
        metrics.append(train_head(cfg)[1]["metrics"])
    assert metrics[0] == metrics[1]
