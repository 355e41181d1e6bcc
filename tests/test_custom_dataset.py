"""`--dataset_name`: any dataset (Hub id or local folder) from column names, checked before any work;
`--revision` / `--dataset_revision` reach the loaders and run_info.json."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
from safetensors.torch import load_file

import hf_ssl_robust.benchmark as bench
from hf_ssl_robust.benchmark import BenchmarkConfig
from hf_ssl_robust.cli import main as cli_main
from hf_ssl_robust.data import DATASETS, custom, get_dataset_spec
from hf_ssl_robust.data.synthetic import make_shapes_dataset
from hf_ssl_robust.identity import EncoderIdentity
from hf_ssl_robust.results import load_records
from hf_ssl_robust.training import TrainHeadConfig, head_key

from conftest import make_tiny_backbone, one_thread

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)
N_TRAIN, N_EVAL, SIZE = 24, 8, 32
RUN = ["--attacks", "embed", "pgd", "--steps", "2", "--eps", "8/255", "--head_epochs", "1", "--num_train_samples", str(N_TRAIN),
       "--max_eval_samples", str(N_EVAL), "--image_size", str(SIZE), "--num_examples", "0"]
TWIN_COLUMNS = ["img", "lab", "seg", "dep", "score", "plain"]


@pytest.fixture(autouse=True)
def _registry_restored():
    """A test's --dataset_name registrations do not leak into other tests."""
    before, identities = dict(DATASETS), dict(custom._CUSTOM)
    yield
    DATASETS.clear(), DATASETS.update(before)
    custom._CUSTOM.clear(), custom._CUSTOM.update(identities)


def _twin_split(n: int, split: str):
    """ShapesWorld scenes under non-standard column names, plus a float and a plain int column."""
    ds = make_shapes_dataset(n, SIZE, seed=0, split=split).rename_columns({"image": "img", "label": "lab", "mask": "seg", "depth": "dep"})
    ds = ds.add_column("score", [float(v) + 0.5 for v in ds["lab"]]).cast_column("score", datasets.Value("float32"))
    return ds.add_column("plain", [int(v) for v in ds["lab"]]).cast_column("plain", datasets.Value("int64"))


@pytest.fixture(scope="module")
def twin_splits():
    return datasets.DatasetDict({"train": _twin_split(N_TRAIN, "train"), "test": _twin_split(N_EVAL, "test")})


@pytest.fixture(scope="module")
def twin(tmp_path_factory, twin_splits):
    """A DatasetDict.save_to_disk folder in ShapesWorld's format with renamed columns."""
    path = tmp_path_factory.mktemp("data") / "twin"
    twin_splits.save_to_disk(str(path))
    return str(path)


def _config(twin, **kw):
    return BenchmarkConfig(**{"dataset_name": twin, "image_column": "img", **kw})


def test_custom_dataset__classification_equals_registered_shapes(tiny_dinov2_path, twin, tmp_path):
    """The same scenes through --dataset_name (save_to_disk, columns img/lab) and through the registered
    `shapes` generator: the same head weights and the same numbers, clean and attacked."""
    common = ["benchmark", "--encoders", tiny_dinov2_path, "--tasks", "classification", *RUN]
    assert cli_main([*common, "--output_dir", str(tmp_path / "shapes")]) == 0
    assert cli_main([*common, "--dataset_name", twin, "--image_column", "img", "--label_column", "lab", "--output_dir", str(tmp_path / "twin")]) == 0
    ours = [r for r in load_records(tmp_path / "twin" / "results.json")]
    theirs = {(r["attack"], r["metric"]): r for r in load_records(tmp_path / "shapes" / "results.json") if r["encoder"] != "prior"}
    assert {r["dataset"] for r in ours} == {"twin"} and {(r["attack"], r["metric"]) for r in ours} == set(theirs)
    for r in ours:
        assert r["value"] == pytest.approx(theirs[(r["attack"], r["metric"])]["value"], abs=1e-6) and r["num_samples"] == N_EVAL
    heads = [load_file(next((tmp_path / run / "heads").glob("*/model.safetensors"))) for run in ("shapes", "twin")]
    assert heads[0].keys() == heads[1].keys() and all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])
    info = json.loads((tmp_path / "twin" / "run_info.json").read_text())
    assert info["config"]["dataset_name"] == twin and info["revisions"]["datasets"]["twin"]["path"] == str(Path(twin).resolve())
    assert {"datasets", "huggingface_hub", "evaluate", "transformers", "torch"} <= set(info["versions"])
    assert "| twin |" in (tmp_path / "twin" / "results.md").read_text()  # the folder's basename in the tables


def test_custom_dataset__segmentation_and_depth_from_mask_and_depth_columns(tiny_dinov2_path, twin, tmp_path):
    argv = ["benchmark", "--encoders", tiny_dinov2_path, "--dataset_name", twin, "--image_column", "img", "--mask_column", "seg",
            "--depth_column", "dep", "--num_labels", "7", "--max_depth", "10", *RUN, "--attacks", "embed", "segpgd", "depth_pgd",
            "--output_dir", str(tmp_path)]
    assert cli_main(argv) == 0
    records = load_records(tmp_path / "results.json")
    got = {(r["task"], r["attack"], r["metric"]): r["value"] for r in records if r["encoder"] != "prior"}
    assert {t for t, *_ in got} == {"segmentation", "depth"}  # no label column: no classification
    assert {a for t, a, _ in got if t == "segmentation"} == {"none", "embed", "segpgd"}
    assert {a for t, a, _ in got if t == "depth"} == {"none", "embed", "depth_pgd"}
    assert 0.0 <= got[("segmentation", "none", "mean_iou")] <= 1.0 and 0.0 < got[("depth", "none", "rmse")] < 10.0
    assert all(r["num_samples"] == N_EVAL for r in records)
    seg_head = json.loads(next((tmp_path / "heads").glob("*segmentation*/config.json")).read_text())
    assert len(seg_head["id2label"]) == 7 and seg_head["ignore_index"] == 255
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert {s["task"] for s in info["skipped"]} == {"classification"}


def test_custom_dataset__wrong_column_lists_columns_before_any_work(tiny_dinov2_path, twin, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "train_head", lambda *a, **k: pytest.fail("a head was trained"))
    out = tmp_path / "out"
    argv = ["benchmark", "--encoders", tiny_dinov2_path, "--dataset_name", twin, "--image_column", "img", "--label_column", "labl",
            "--output_dir", str(out)]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "no column 'labl' (--label_column) in splits 'train', 'test'" in err and "(did you mean 'lab'?)" in err
    assert f"columns are {TWIN_COLUMNS}" in err and err.startswith("hf-ssl-robust benchmark: error:")
    assert not out.exists()  # nothing written: no heads, no cells


@pytest.mark.parametrize("kw,match", [
    (dict(label_column="score"), r"--label_column 'score' holds Value\(float32\); classification needs integer class ids"),
    (dict(label_column="plain"), r"plain int64 column \(no ClassLabel names\): pass --num_labels K"),
    (dict(label_column="plain", num_labels=3), r"holds \[3, 4, 5\] in split 'train', outside 0..2"),
    (dict(label_column="lab", num_labels=4), r"--num_labels 4 disagrees with the ClassLabel column 'lab' \(6 classes"),
    (dict(label_column="lab", mask_column="seg", num_labels=3), r"mask values \[.*\] are outside 0..2"),  # --num_labels counts mask classes
    (dict(mask_column="dep", num_labels=7), r"--mask_column 'dep' holds Array2D\(float32\) arrays; masks need integer class ids"),
    (dict(mask_column="lab", num_labels=7), r"--mask_column 'lab' holds ClassLabel\(int64\) scalars, not masks"),
    (dict(mask_column="seg"), r"--mask_column 'seg': pass --num_labels"),
    (dict(mask_column="seg", num_labels=7, ignore_index=3), r"ignore_index=3 collides with a class id"),
    (dict(mask_column="seg", num_labels=3), r"mask values \[.*\] are outside 0..2"),
    (dict(depth_column="plain"), r"--depth_column 'plain' holds Value\(int64\), not depth maps"),
    (dict(label_column="lab", image_column="lab"), r"--image_column 'lab' holds ClassLabel\(int64\) scalars, not images"),
    (dict(label_column="lab", image_column="score"), r"--image_column 'score' holds Value\(float32\) scalars, not images"),
    (dict(), r"give at least one target column .* columns are \['img', 'lab'"),
    (dict(label_column="lab", eval_split="validation"), r"Split 'validation' not found .* available: \['test', 'train'\]"),
    (dict(label_column="lab", eval_split="train"), r"--train_split and --eval_split are both 'train'"),
    (dict(label_column="lab", dataset_revision="v1"), r"is a local folder: --dataset_revision / --dataset_config only apply to Hub"),
    (dict(label_column="lab", revision="v1", encoders=["shapes-resnet-tiny"]), r"--revision 'v1' pins a Hub commit.*'shapes-resnet-tiny' is a local"),
])
def test_custom_dataset__bad_columns_and_options_give_clear_errors(twin, kw, match):
    with pytest.raises(ValueError, match=match):
        _config(twin, **kw)


def test_custom_dataset__folder_problems(tmp_path, twin_splits):
    with pytest.raises(ValueError, match=r"--dataset_name './nope': no such folder"):
        BenchmarkConfig(dataset_name="./nope", label_column="lab")
    twin_splits["train"].save_to_disk(str(tmp_path / "one"))
    with pytest.raises(ValueError, match=r"holds a single split \(Dataset.save_to_disk\); save a DatasetDict with 'train' and 'test'"):
        BenchmarkConfig(dataset_name=str(tmp_path / "one"), image_column="img", label_column="lab")
    twin_splits.save_to_disk(str(tmp_path / "shapes"))
    with pytest.raises(ValueError, match=r"would be shown as 'shapes', a registered dataset"):
        BenchmarkConfig(dataset_name=str(tmp_path / "shapes"), image_column="img", label_column="lab")
    with pytest.raises(ValueError, match=r"--label_column, --num_labels only apply with --dataset_name"):
        BenchmarkConfig(label_column="lab", num_labels=3)


def test_custom_dataset__tasks_follow_columns_and_datasets_replace_the_default(twin):
    cfg = _config(twin, label_column="lab", depth_column="dep")
    assert cfg.datasets == ["twin"] and DATASETS["twin"].tasks == ("classification", "depth")
    assert DATASETS["twin"].num_classes == 6 and DATASETS["twin"].class_names[0] == "disc"  # from the ClassLabel
    _config(twin, label_column="lab", mask_column="seg", num_labels=7)  # --num_labels counts the mask classes
    assert [get_dataset_spec("twin", task=t).num_classes for t in ("classification", "segmentation")] == [6, 7]
    assert _config(twin, label_column="lab", datasets=["shapes", "twin"]).datasets == ["shapes", "twin"]  # named: kept as given
    assert _config(twin, label_column="lab", tasks=["depth"], depth_column="dep").datasets == ["twin"]


def test_head_key__custom_dataset_path_and_columns(tmp_path, twin_splits):
    """Two folders shown under one name, or one folder read through other columns, never share a head."""
    keys, cells = [], []
    ident = EncoderIdentity(name="x", source="x", kind="local", revision=None, weights_sha256=None, fingerprint="f" * 16)
    for folder, column in (("a", "lab"), ("b", "lab"), ("b", "plain")):
        twin_splits.save_to_disk(str(tmp_path / folder / "scenes")) if not (tmp_path / folder / "scenes").exists() else None
        cfg = _config(str(tmp_path / folder / "scenes"), label_column=column, num_labels=6 if column == "plain" else None)
        keys.append(head_key(TrainHeadConfig(encoder="x", dataset="scenes"), "f" * 16, "no"))
        cells.append(bench._cell_key(cfg, "x", "classification", "scenes", 8 / 255, ident))
    assert keys[0]["dataset"] == keys[1]["dataset"] == "scenes"
    assert keys[0] != keys[1] and keys[1] != keys[2]
    assert cells[0] != cells[1] and cells[1] != cells[2] and cells[2]["dataset_identity"] == keys[2]["dataset_identity"]
    assert keys[2]["dataset_identity"]["columns"] == {"classification": "plain"}
    assert "dataset_identity" not in head_key(TrainHeadConfig(encoder="x", dataset="shapes"), "f" * 16, "no")  # registered: unchanged


def test_custom_dataset__hub_id_reaches_load_dataset_with_config_and_revision(monkeypatch, twin_splits, tmp_path):
    calls = []

    def fake_load_dataset(path, name=None, split=None, revision=None, **kw):
        calls.append((path, name, split, revision))
        return twin_splits[split]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(datasets, "load_dataset_builder", lambda *a, **k: None)  # the offline cache check of Hub datasets
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    refs = tmp_path / "datasets--me--scenes" / "refs"
    refs.mkdir(parents=True)
    (refs / "v2").write_text("c" * 40)
    cfg = BenchmarkConfig(dataset_name="me/scenes", dataset_config="small", dataset_revision="v2", image_column="img", label_column="lab")
    assert calls == [("me/scenes", "small", "train", "v2"), ("me/scenes", "small", "test", "v2")]
    spec = DATASETS["me/scenes"]
    assert cfg.datasets == ["me/scenes"] and (spec.hub_id, spec.hub_config, spec.revision, spec.data_dir) == ("me/scenes", "small", "v2", None)
    ident = custom.dataset_identity("me/scenes")
    assert (ident["revision"], ident["commit"], ident["config"]) == ("v2", "c" * 40, "small")
    info = custom.run_provenance(cfg, {})
    assert info["revisions"]["datasets"]["me/scenes"] == {"hub_id": "me/scenes", "config": "small", "requested": "v2", "commit": "c" * 40}


def _fake_hub_encoder(cache: Path, repo: str = "me/tiny-enc") -> dict[str, str]:
    """A Hub cache holding two commits of a tiny encoder: `main` and the tag `v1` (other weights)."""
    root = cache / f"models--{repo.replace('/', '--')}"
    shas = {}
    for ref, seed in (("main", 0), ("v1", 1)):
        shas[ref] = hashlib.sha1(ref.encode()).hexdigest()
        make_tiny_backbone("dinov2", seed=seed).save_pretrained(root / "snapshots" / shas[ref])
        (root / "refs").mkdir(parents=True, exist_ok=True)
        (root / "refs" / ref).write_text(shas[ref])
    return shas


def test_revision__reaches_from_pretrained_and_run_info(tmp_path):
    """`--revision v1` loads v1's weights (a lean head pins v1's commit only when the weights in memory
    are exactly what that commit loads), and run_info.json records the requested and resolved revision."""
    shas = _fake_hub_encoder(tmp_path / "cache")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "MPLBACKEND": "Agg"}
    argv = [sys.executable, "-m", "hf_ssl_robust.cli", "benchmark", "--encoders", "me/tiny-enc", "--revision", "v1",
            "--tasks", "classification", *RUN, "--attacks", "embed", "--output_dir", str(tmp_path / "out")]
    run = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    info = json.loads((tmp_path / "out" / "run_info.json").read_text())
    assert info["revisions"]["encoders"]["me/tiny-enc"] == {"requested": "v1", "commit": shas["v1"]}
    assert info["encoder_identities"]["me/tiny-enc"]["revision"] == shas["v1"] and info["config"]["revision"] == "v1"
    assert {"datasets", "huggingface_hub", "evaluate", "transformers", "torch"} <= set(info["versions"])
    head = next((tmp_path / "out" / "heads").glob("*/config.json"))
    assert json.loads(head.read_text())["encoder_reference"]["revision"] == shas["v1"] != shas["main"]
    assert not (head.parent / "encoder").exists() and "encoder.embeddings" not in str(load_file(head.parent / "model.safetensors").keys())


def test_custom_dataset__parquet_folder(tmp_path, twin_splits):
    """A folder of parquet files (what `push_to_hub` writes) loads through `datasets`' parquet builder, features kept."""
    for split, ds in twin_splits.items():
        ds.to_parquet(str(tmp_path / "scenes" / f"{split}.parquet"))
    cfg = _config(str(tmp_path / "scenes"), label_column="lab", depth_column="dep")
    assert cfg.datasets == ["scenes"] and DATASETS["scenes"].num_examples == {"train": N_TRAIN, "test": N_EVAL}
    from hf_ssl_robust.data import make_dataset

    item = make_dataset(get_dataset_spec("scenes", task="depth"), "eval", image_size=SIZE)[0]
    assert item["pixel_values"].shape == (3, SIZE, SIZE) and item["depth"].max() > 0


def test_custom_dataset__uncached_hub_id_offline_is_one_clear_error(capsys, tmp_path):
    argv = ["benchmark", "--dataset_name", "me/not-cached", "--label_column", "label", "--output_dir", str(tmp_path / "out")]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "--dataset_name 'me/not-cached': Could not load dataset" in err and "HF_HUB_OFFLINE is set" in err
    assert not (tmp_path / "out").exists()
