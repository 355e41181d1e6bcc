"""Model cards and Hub pushes, offline: the Hub API is replaced by a recorder; nothing is sent."""

import json
import re
import shutil
import time
from pathlib import Path

import pytest
import yaml
from conftest import make_tiny_backbone
from huggingface_hub import ModelCard
from huggingface_hub.errors import LocalTokenNotFoundError

from hf_ssl_robust import hub
from hf_ssl_robust.defenses.deacl import DeACLConfig
from hf_ssl_robust.encoders import bundled_encoders
from hf_ssl_robust.heads import HEADS
from hf_ssl_robust.processing import PROCESSOR_FILE
from hf_ssl_robust.results import write_json

REPO = "someone/tiny-deacl"


def _record(encoder, task, attack, metric, value, eps=8 / 255):
    return dict(encoder=encoder, task=task, dataset="shapes", attack=attack, eps=0.0 if attack == "none" else eps,
                steps=0 if attack == "none" else 20, metric=metric, value=value, num_samples=16)  # fmt: skip


def _records(encoder):
    return [
        _record(encoder, "classification", "none", "accuracy", 0.875),
        _record(encoder, "classification", "embed", "accuracy", 0.5),
        _record(encoder, "classification", "pgd", "accuracy", 0.0625),
        _record(encoder, "segmentation", "none", "mean_iou", 0.41),
        _record(encoder, "segmentation", "embed", "mean_iou", 0.22),
        _record(encoder, "segmentation", "segpgd", "mean_iou", 0.05),
        _record(encoder, "depth", "none", "rmse", 0.731),
        _record(encoder, "depth", "depth_pgd", "rmse", 1.904),
        _record(encoder, "depth", "none", "abs_rel", 0.12),  # not a primary metric: no EvalResult
    ]


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    """A tiny encoder folder as train_deacl leaves it: weights + resolved deacl_config.json (+ junk)."""
    folder = tmp_path_factory.mktemp("deacl") / "tiny-deacl"
    make_tiny_backbone("dinov2").save_pretrained(folder)
    cfg = DeACLConfig(encoder="dinov2-small", dataset="shapes", max_steps=300, eps="8/255", batch_size=64, output_dir=str(folder))
    resolved = dict(cfg.to_dict(), image_size=64, total_steps=300, warmup_steps=30, steps_per_epoch=31, num_processes=2,
                    num_train_images=2000)  # fmt: skip
    (folder / "deacl_config.json").write_text(json.dumps(resolved))
    (folder / "checkpoints" / "step_100").mkdir(parents=True)
    (folder / "checkpoints" / "step_100" / "model.safetensors").write_bytes(b"x")
    (folder / "log.jsonl").write_text('{"step": 10}\n')
    return folder


@pytest.fixture(scope="module")
def head_dir(encoder_dir, tmp_path_factory):
    from hf_ssl_robust.training import TrainHeadConfig, train_head

    out = tmp_path_factory.mktemp("head") / "tiny-head"
    cfg = TrainHeadConfig(encoder=str(encoder_dir), task="classification", image_size=32, num_train_samples=24,
                          num_eval_samples=8, epochs=1, output_dir=str(out))  # fmt: skip
    train_head(cfg)
    return out


def _header(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


class FakeApi:
    """Stands in for `huggingface_hub.HfApi`: records calls, returns what the Hub would."""

    calls: list = []
    fail_with: Exception | None = None

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, **kwargs):
        FakeApi.calls.append(("create_repo", repo_id, kwargs))
        if FakeApi.fail_with is not None:
            raise FakeApi.fail_with

    def upload_folder(self, **kwargs):
        FakeApi.calls.append(("upload_folder", kwargs["repo_id"], kwargs))

        class Info:
            commit_url = f"https://huggingface.co/{kwargs['repo_id']}/commit/abc"

        return Info()


@pytest.fixture
def fake_hub(monkeypatch):
    FakeApi.calls, FakeApi.fail_with = [], None
    validated = []
    monkeypatch.setattr(hub, "HfApi", FakeApi)
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(ModelCard, "validate", lambda self, repo_type=None: validated.append(str(self)))
    return FakeApi.calls, validated


# --- encoder cards -------------------------------------------------------------------------------
def test_render_encoder_card__metadata_parses_and_eval_results_match_records(encoder_dir, tmp_path):
    records = _records(str(encoder_dir))
    card = hub.render_encoder_card(encoder_dir, records, repo_id=REPO)
    card.save(tmp_path / "README.md")
    text = (tmp_path / "README.md").read_text()
    header = _header(text)  # valid YAML
    assert header["model-index"][0]["name"] == "tiny-deacl"
    data = ModelCard.load(tmp_path / "README.md").data
    meta = data.to_dict()
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "image-feature-extraction"
    assert meta["base_model"] == "facebook/dinov2-small"  # the preset resolved to its Hub id
    assert set(hub.TAGS) <= set(meta["tags"]) and meta["license"] == "apache-2.0"
    assert "datasets" not in meta  # ShapesWorld has no Hub id
    primary = [r for r in records if r["metric"] != "abs_rel"]
    assert len(data.eval_results) == len(primary) == 8
    got = {(e.task_type, e.metric_name): e.metric_value for e in data.eval_results}
    assert got[("image-classification", "accuracy (clean)")] == 0.875
    assert got[("image-classification", "accuracy (EmbedAttack, ε=8/255, 20 steps)")] == 0.5
    assert got[("image-classification", "accuracy (PGD, ε=8/255, 20 steps)")] == 0.0625
    assert got[("image-segmentation", "mean_iou (SegPGD, ε=8/255, 20 steps)")] == 0.05
    assert got[("depth-estimation", "rmse (DepthPGD, ε=8/255, 20 steps)")] == 1.904
    assert all(e.dataset_name == "shapes" and e.dataset_split == "test" for e in data.eval_results)


def test_render_encoder_card__body_has_tables_training_and_citations(encoder_dir):
    text = str(hub.render_encoder_card(encoder_dir, _records(str(encoder_dir)), repo_id=REPO))
    assert "{{" not in text and "{%" not in text
    assert "| Dataset | Encoder | Clean | EmbedAttack | PGD |" in text
    assert "| shapes | tiny-deacl | 0.88 | 0.50 | 0.06 |" in text  # rows renamed to the repo
    assert "| shapes | tiny-deacl | 0.731 | 1.904 |" in text
    for setting in ("`dinov2-small`", "γ = 2.0", "ε = 8/255", "5 PGD steps of 2/255", "SGD, lr 0.05, momentum 0.9",
                    "warm-up for 30 steps", "300 (31 per epoch)", "2000 images at 64×64", "64 (global) over 2 processes"):
        assert setting in text, setting
    assert f'AutoModel.from_pretrained("{REPO}")' in text and f'load_encoder("{REPO}")' in text
    assert "24,064" in text  # parameters, from the safetensors header
    assert "2407.12588" in text and "2207.10899" in text
    assert "ShapesWorld" in text and "trained against ε = 8/255" in text


def test_render_encoder_card__other_encoders_go_to_tables_not_model_index(encoder_dir):
    records = _records(str(encoder_dir)) + _records("outputs/standard-tiny")
    card = hub.render_encoder_card(encoder_dir, records, repo_id=REPO)
    assert len(card.data.eval_results) == 8
    assert "| shapes | standard-tiny | 0.88 |" in str(card) and "| shapes | tiny-deacl | 0.88 |" in str(card)


def test_render_encoder_card__from_config_without_results(tmp_path):
    card = hub.render_encoder_card(DeACLConfig(encoder="me/my-dino", dataset="cifar10", output_dir=str(tmp_path)))
    meta = card.data.to_dict()
    assert "model-index" not in meta and meta["base_model"] == "me/my-dino" and meta["datasets"] == ["uoft-cs/cifar10"]
    assert "No benchmark results" in str(card) and "ShapesWorld" not in str(card)
    assert "{{" not in str(card)


def test_render_encoder_card__plain_encoder_with_free_training_table(tmp_path):
    make_tiny_backbone("vit", patch_size=16).save_pretrained(tmp_path)
    records = [_record("x", "classification", "none", "accuracy", 0.5), _record("x", "classification", "embed", "accuracy", 0.0)]
    write_json(tmp_path / "results.json", records)  # picked up from the folder
    card = hub.render_encoder_card(tmp_path, training={"Method": "DINO self-distillation", "Data": "ShapesWorld"})
    text = str(card)
    assert "| Method | DINO self-distillation |" in text and "ViT (DINO v1)" in text
    assert len(card.data.eval_results) == 2 and "DeACL adversarial" not in text and "2207.10899" not in text
    assert "deacl" not in card.data.tags and "vision" in card.data.tags


# --- head cards ---------------------------------------------------------------------------------
def test_render_head_card__from_train_head_folder(head_dir, tmp_path):
    info = json.loads((head_dir / "train_metrics.json").read_text())
    card = hub.render_head_card(head_dir, repo_id="someone/tiny-head")
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    meta = loaded.data.to_dict()
    assert meta["pipeline_tag"] == "image-classification" and "base_model" not in meta  # local encoder: no Hub link
    assert meta["library_name"] == "transformers"  # the head carries its code: transformers loads it (trust_remote_code)
    assert (head_dir / PROCESSOR_FILE).is_file()  # train_head saves the image processor the pipeline needs
    (result,) = loaded.data.eval_results
    assert result.metric_type == "accuracy" and result.metric_value == pytest.approx(info["metrics"]["accuracy"])
    text = str(card)
    assert "{{" not in text and "AutoModelForImageClassification.from_pretrained(\"someone/tiny-head\")" in text
    assert "import hf_ssl_robust" in text and "| lr | 0.5 |" in text and "| optimizer | adam |" in text
    assert str(info["encoder"]) in text and "ShapesWorld" in text
    reference = json.loads((head_dir / "config.json").read_text())["encoder_reference"]  # train_head saves lean
    assert "holds the head's weights only" in text and reference["weights_sha256"] in text and "self-contained" not in text
    assert 'pipeline("image-classification", model="someone/tiny-head", trust_remote_code=True)' in text
    assert hub.INSTALL_LINE in text and hub.SOURCE_URL in text
    assert info["best_epoch"] == 0 and "| best epoch (on validation) | 1 of 1 |" in text  # 1-based, as train-head prints it


def test_cards__source_url_is_the_project_repository():
    import tomllib

    urls = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["urls"]
    assert hub.SOURCE_URL == urls["Repository"] and hub.SOURCE_URL in hub.INSTALL_LINE


def test_render_head_card__needs_train_metrics(encoder_dir):
    with pytest.raises(ValueError, match="train_metrics.json"):
        hub.render_head_card(encoder_dir)


# --- writing and pushing ------------------------------------------------------------------------
def test_write_card__encoder_and_head_folders(encoder_dir, head_dir, tmp_path):
    folder = tmp_path / "enc"
    make_tiny_backbone("dinov2").save_pretrained(folder)
    path = hub.write_card(folder, _records("enc"), repo_id=REPO)
    assert path == folder / "README.md" and _header(path.read_text())["model-index"]
    path.write_text("hand-edited")
    assert hub.write_card(folder, overwrite=False).read_text() == "hand-edited"
    head_readme = hub.write_card(head_dir)
    assert "linear classification head" in head_readme.read_text()


def test_push_encoder__creates_repo_and_uploads_folder(encoder_dir, fake_hub):
    calls, validated = fake_hub
    url = hub.push_encoder(encoder_dir, REPO, records=_records(str(encoder_dir)), private=True, token="hf_test")
    assert url == f"https://huggingface.co/{REPO}/commit/abc"
    (create, upload) = calls
    assert create == ("create_repo", REPO, {"private": True, "exist_ok": True})
    kwargs = upload[2]
    assert upload[1] == REPO and kwargs["folder_path"] == str(encoder_dir)
    assert "checkpoints/**" in kwargs["ignore_patterns"] and "log.jsonl" in kwargs["ignore_patterns"]
    readme = (encoder_dir / "README.md").read_text()
    assert "EmbedAttack" in readme and len(validated) == 1 and validated[0] == readme


def test_push_encoder__keeps_an_edited_card_when_asked(tmp_path, fake_hub):
    make_tiny_backbone("dinov2").save_pretrained(tmp_path)
    (tmp_path / "README.md").write_text("---\nlicense: mit\n---\n# mine\n")
    assert not (tmp_path / PROCESSOR_FILE).exists()
    hub.push_encoder(tmp_path, REPO, overwrite_card=False, validate_card=False)
    assert (tmp_path / "README.md").read_text().endswith("# mine\n") and fake_hub[1] == []
    assert (tmp_path / PROCESSOR_FILE).is_file()  # added before the upload, for the card's pipeline snippet


def test_push_head__uploads_head_card(head_dir, encoder_dir, fake_hub, tmp_path):
    with pytest.raises(ValueError, match="lean head whose encoder is the local folder.*embed_encoder=True"):
        hub.push_head(head_dir, "someone/tiny-head")  # nobody who downloads it has that folder
    assert fake_hub[0] == []
    folder = tmp_path / "tiny-head"
    shutil.copytree(head_dir, folder)
    HEADS["classification"].from_pretrained(folder).save_pretrained(folder, embed_encoder=True)
    config = json.loads((folder / "config.json").read_text())
    del config["auto_map"]  # as saved before heads carried remote code
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_ssl_heads.py").unlink()
    hub.push_head(folder, "someone/tiny-head")
    assert [c[0] for c in fake_hub[0]] == ["create_repo", "upload_folder"]
    readme = (folder / "README.md").read_text()
    assert "AutoModelForImageClassification" in readme and "self-contained" in readme
    assert (folder / "modeling_ssl_heads.py").is_file() and "auto_map" in json.loads((folder / "config.json").read_text())
    with pytest.raises(ValueError, match="train_metrics.json"):
        hub.push_head(encoder_dir, "someone/tiny-head")


@pytest.mark.parametrize("remove,match", [("model.safetensors", "lacks model.safetensors"), ("config.json", "lacks config.json")])
def test_push_encoder__folder_without_weights_or_config(tmp_path, fake_hub, remove, match):
    make_tiny_backbone("dinov2").save_pretrained(tmp_path)
    (tmp_path / remove).unlink()
    with pytest.raises(ValueError, match=match):
        hub.push_encoder(tmp_path, REPO)
    assert fake_hub[0] == []


def test_push_encoder__bad_repo_id(encoder_dir, fake_hub):
    with pytest.raises(ValueError, match="user_or_org/name"):
        hub.push_encoder(encoder_dir, "no-namespace")


def test_push_encoder__hub_errors_say_how_to_log_in(encoder_dir, fake_hub):
    FakeApi.fail_with = LocalTokenNotFoundError("Token is required")
    with pytest.raises(hub.HubPushError, match="hf auth login.*HF_TOKEN") as info:
        hub.push_encoder(encoder_dir, REPO)
    assert isinstance(info.value.__cause__, LocalTokenNotFoundError)


def test_push_encoder__offline_fails_fast_with_clear_message(encoder_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (encoder_dir / "README.md").unlink(missing_ok=True)
    start = time.perf_counter()
    with pytest.raises(hub.HubPushError, match="HF_HUB_OFFLINE is set"):
        hub.push_encoder(encoder_dir, REPO)
    assert time.perf_counter() - start < 5
    assert (encoder_dir / "README.md").is_file()  # the card is still written, for review


def test_metric_label():
    assert hub.metric_label("accuracy", "none", 0.0, 0) == "accuracy (clean)"
    assert hub.metric_label("rmse", "depth_pgd", 4 / 255, 10) == "rmse (DepthPGD, ε=4/255, 10 steps)"


def test_cli_push__dry_run_writes_card_and_offline_push_is_clear(tmp_path, capsys):
    from hf_ssl_robust.cli import main as cli_main

    folder = tmp_path / "enc"
    make_tiny_backbone("dinov2").save_pretrained(folder)
    assert cli_main(["push", str(folder), "me/tiny", "--dry_run"]) == 0
    assert "README.md" in capsys.readouterr().out and "me/tiny" in (folder / "README.md").read_text()
    assert cli_main(["push", str(folder), "me/tiny"]) == 2  # HF_HUB_OFFLINE=1 in tests
    assert "HF_HUB_OFFLINE is set" in capsys.readouterr().err


# --- the cards' code runs ---------------------------------------------------------------------------
def _run_python_blocks(text: str, folder, cwd, monkeypatch) -> dict:
    """Execute every ```python block of the card's "How to use" section, in order, in one namespace,
    from `cwd` (which holds the `photo.jpg` the snippets open). The card was rendered with
    `repo_id=folder`, so the snippets load the local folder (offline)."""
    from PIL import Image
    from skimage import data as skimage_data  # sample photos (the dev extra)

    Image.fromarray(skimage_data.coffee()).save(cwd / "photo.jpg")
    monkeypatch.chdir(cwd)
    section = text.split("## How to use")[1].split("\n## ")[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) >= 2 and all(str(folder) in b for b in blocks)
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"card-snippet-{i}", "exec"), namespace)  # noqa: S102  (our own rendered card)
    return namespace


@pytest.mark.parametrize("task", sorted(HEADS))
def test_head_card__snippets_run_on_the_saved_folder(task, tmp_path, monkeypatch):
    folder = tmp_path / f"tiny-{task}"
    kwargs = {"num_labels": 3, "id2label": {0: "a", 1: "b", 2: "c"}} if task != "depth" else {}
    HEADS[task].from_encoder(make_tiny_backbone("dinov2"), image_size=32, **kwargs).save_pretrained(folder)
    metric = {"classification": "accuracy", "segmentation": "mean_iou", "depth": "rmse"}[task]
    write_json(folder / "train_metrics.json", {"task": task, "dataset": "shapes", "metrics": {metric: 0.5, "num_samples": 8}})
    text = str(hub.render_head_card(folder, repo_id=str(folder)))
    ns = _run_python_blocks(text, folder, tmp_path, monkeypatch)
    if task == "classification":
        assert {p["label"] for p in ns["predictions"]} == {"a", "b", "c"} and ns["label"].shape == (1,)
    elif task == "segmentation":
        assert all(s["mask"].size == (600, 400) for s in ns["segments"]) and ns["mask"].shape == (1, 32, 32)
    else:
        assert ns["depth"].shape == (1, 32, 32) and ns["result"]["predicted_depth"].shape == (400, 600)


def test_encoder_card__snippets_run_on_the_bundled_encoder(tmp_path, monkeypatch):
    folder = tmp_path / "shapes-resnet-tiny"
    shutil.copytree(bundled_encoders()["shapes-resnet-tiny"], folder)
    text = str(hub.render_encoder_card(folder, repo_id=str(folder)))
    assert "resizes images to\n64×64" in text and "mean (0.485, 0.456, 0.406)" in text
    ns = _run_python_blocks(text, folder, tmp_path, monkeypatch)
    assert ns["features"].shape == (1, 128, 8, 8) and ns["cls_token"].shape == (1, 128)
    assert ns["adv"].shape == (2, 3, 64, 64)


def test_cards_name_every_registered_family():
    from hf_ssl_robust import hub
    from hf_ssl_robust.encoders import FAMILIES

    assert set(FAMILIES) <= set(hub.FAMILIES), f"add card names for {sorted(set(FAMILIES) - set(hub.FAMILIES))} to hub.FAMILIES"


def test_cards__link_the_results_dataset(encoder_dir, head_dir, tmp_path, capsys):
    from hf_ssl_robust.cli import main as cli_main

    link = "[someone/tiny-robustness](https://huggingface.co/datasets/someone/tiny-robustness)"
    enc = str(hub.render_encoder_card(encoder_dir, _records(str(encoder_dir)), repo_id=REPO, results_dataset="someone/tiny-robustness"))
    head = str(hub.render_head_card(head_dir, repo_id="someone/tiny-head", results_dataset="someone/tiny-robustness"))
    for text in (enc, head):
        assert link in text and "hf-ssl-robust leaderboard someone/tiny-robustness" in text and "{{" not in text
    assert "datasets/" not in str(hub.render_encoder_card(encoder_dir, _records(str(encoder_dir)), repo_id=REPO))
    with pytest.raises(ValueError, match="results_dataset must be a Hub dataset id 'user_or_org/name', got 'nope'"):
        hub.render_encoder_card(encoder_dir, repo_id=REPO, results_dataset="nope")
    folder = tmp_path / "enc"
    make_tiny_backbone("dinov2").save_pretrained(folder)
    assert cli_main(["push", str(folder), "me/tiny", "--dry_run", "--results_dataset", "me/tiny-results"]) == 0
    assert "https://huggingface.co/datasets/me/tiny-results" in (folder / "README.md").read_text()


def test_eval_results__flags_in_model_index_names_and_args():
    from hf_ssl_robust.hub import eval_results_from_records

    base = dict(encoder="enc", task="classification", dataset="shapes", steps=2, metric="accuracy", num_samples=8)
    results = eval_results_from_records([dict(base, attack="pgd", eps=8 / 255, value=0.4, flags=["not_converged"]),
                                         dict(base, attack="none", eps=0.0, value=0.9, flags=[])])
    flagged = next(r for r in results if r.metric_args["attack"] == "pgd")
    assert flagged.metric_name.endswith("[warning: not_converged]") and flagged.metric_args["flags"] == "not_converged"
    clean = next(r for r in results if r.metric_args["attack"] == "none")
    assert "warning" not in clean.metric_name and "flags" not in clean.metric_args


@pytest.mark.parametrize("objective", ["cls", "dense"])
def test_training_rows__inner_attack_names_the_patch_term_of_the_dense_objective(objective):
    """The DeACL card's inner-attack row says what the attack maximises: with the dense objective the patch
    tokens' term too (the loss row already did)."""
    from hf_ssl_robust.hub import _training_rows

    cfg = dict(DeACLConfig(encoder="e", dataset="shapes", objective=objective).to_dict(), total_steps=10, warmup_steps=1,
               steps_per_epoch=5)
    rows = dict(_training_rows(cfg))
    assert ("patch tokens" in rows["Inner attack"]) == (objective == "dense")
    assert ("patch tokens" in rows["Loss"]) == (objective == "dense")
