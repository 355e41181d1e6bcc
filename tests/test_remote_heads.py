"""Saved heads load without hf_ssl_robust (remote code), and lean head folders (pinned encoder reference).

* The remote module (`hf_ssl_robust/heads/remote/modeling_ssl_heads.py`, copied next to every saved head)
  is compared with the package's heads for every registered backbone family and every task.
* A child Python that cannot import hf_ssl_robust (`-I`, no PYTHONPATH, cwd outside the repo, and an import
  blocker in front of the editable install's finder; the child checks that `import hf_ssl_robust` fails)
  loads lean and embedded heads with `AutoModelFor*.from_pretrained(..., trust_remote_code=True)` and
  `pipeline(..., trust_remote_code=True)`; its outputs must equal the package's.
"""

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_backbone, one_thread
from PIL import Image
from safetensors import safe_open
from transformers import (
    AutoModelForDepthEstimation,
    AutoModelForImageClassification,
    AutoModelForSemanticSegmentation,
    pipeline,
)
from transformers.utils import logging as hf_logging

from hf_ssl_robust.encoders import bundled_encoders
from hf_ssl_robust.heads import HEADS
from hf_ssl_robust.heads.lean import REMOTE_FILE
from hf_ssl_robust.heads.remote import modeling_ssl_heads as remote
from hf_ssl_robust.identity import encoder_identity

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)

FAMILIES = ["dinov2", "dinov2_reg", "vit", "dinov3_vit", "resnet", "dinov3_convnext", "clip", "siglip"]
REMOTE = {"classification": remote.SSLForImageClassification, "segmentation": remote.SSLForSemanticSegmentation,
          "depth": remote.SSLForDepthEstimation}
AUTO = {"classification": AutoModelForImageClassification, "segmentation": AutoModelForSemanticSegmentation,
        "depth": AutoModelForDepthEstimation}
PIPELINE_TASK = {"classification": "image-classification", "segmentation": "image-segmentation", "depth": "depth-estimation"}
BUNDLED = "shapes-resnet-tiny"
SIDE = 32


def make_head(task, encoder, **kwargs):
    labels = {} if task == "depth" else {"num_labels": 3, "id2label": {0: "sky", 1: "cup", 2: "floor"}}
    head = HEADS[task].from_encoder(encoder, image_size=SIDE, **labels, **kwargs)
    torch.manual_seed(1)
    with torch.no_grad():  # non-trivial head weights and BatchNorm statistics
        for name, tensor in head.state_dict().items():
            if not name.startswith("encoder.") and tensor.is_floating_point():
                tensor.copy_(torch.rand_like(tensor) + 0.5 if "running_var" in name else torch.randn_like(tensor) * 0.5)
    return head.eval()


def output(task, out):
    return out.predicted_depth if task == "depth" else out.logits


@pytest.mark.parametrize("kind", FAMILIES)
def test_remote_module__equals_the_package_for_every_family_and_head(kind):
    backbone = make_tiny_backbone(kind, patch_size=8)
    pixels = torch.rand(2, 3, 40, 56)  # not a multiple of the stride; wider than a segmentation window
    for task, remote_class in REMOTE.items():
        head = make_head(task, backbone)
        config = remote_class.config_class.from_dict(head.config.to_dict())
        twin = remote_class(config).eval()
        twin.load_state_dict(head.state_dict(), strict=True)
        with torch.no_grad():
            expected, got = output(task, head(pixels)), output(task, twin(pixels))
        torch.testing.assert_close(got, expected, rtol=0, atol=0, msg=f"{kind} {task}")


CHILD = r'''
import json, os, sys

class _Block:  # the editable install of the package is on sys.meta_path: shadow it
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "hf_ssl_robust":
            raise ModuleNotFoundError(f"No module named {name!r}")

sys.meta_path.insert(0, _Block())
try:
    import hf_ssl_robust  # noqa: F401
    sys.exit("hf_ssl_robust is importable in the child")
except ImportError:
    pass

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import (AutoModelForDepthEstimation, AutoModelForImageClassification, AutoModelForSemanticSegmentation,
                          pipeline)

AUTO = {"classification": AutoModelForImageClassification, "segmentation": AutoModelForSemanticSegmentation,
        "depth": AutoModelForDepthEstimation}
PIPE = {"classification": "image-classification", "segmentation": "image-segmentation"}
pixels = load_file("pixels.safetensors")["pixels"]
photo = Image.open("photo.png")
outputs, pipes, classes = {}, {}, {}
for name in sorted(os.listdir("heads")):
    task = name.split("-")[0]
    model = AUTO[task].from_pretrained(os.path.join("heads", name), trust_remote_code=True).eval()
    classes[name] = type(model).__module__ + "." + type(model).__name__
    with torch.no_grad():
        out = model(pixel_values=pixels)
    outputs[name] = (out.predicted_depth if task == "depth" else out.logits).contiguous()
    if task in PIPE:
        result = pipeline(PIPE[task], model=os.path.join("heads", name), trust_remote_code=True)(photo)
        pipes[name] = [{k: (np.asarray(v).tolist() if k == "mask" else v) for k, v in r.items()} for r in result]
save_file(outputs, "outputs.safetensors")
json.dump({"pipelines": pipes, "classes": classes, "package_loaded": "hf_ssl_robust" in sys.modules},
          open("child.json", "w"))
'''


def test_saved_heads__load_and_run_without_the_package(tmp_path):
    """Lean classification, segmentation and depth heads and an embedded segmentation head, loaded in a
    Python that cannot import hf_ssl_robust, give the package's outputs; so do their pipelines."""
    from safetensors.torch import load_file, save_file

    encoder_dir = tmp_path / "encoder"
    make_tiny_backbone("dinov2", seed=2).save_pretrained(encoder_dir)
    work = tmp_path / "child"
    (work / "heads").mkdir(parents=True)
    pixels = torch.rand(2, 3, 40, 56)
    save_file({"pixels": pixels}, work / "pixels.safetensors")
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 72, 3), dtype=np.uint8))
    photo.save(work / "photo.png")

    expected, expected_pipes = {}, {}
    for name, task, embed in [("classification-lean", "classification", False), ("segmentation-lean", "segmentation", False),
                              ("depth-lean", "depth", False), ("segmentation-embedded", "segmentation", True)]:
        head = make_head(task, str(encoder_dir))
        folder = work / "heads" / name
        head.save_pretrained(folder, embed_encoder=embed)
        config = json.loads((folder / "config.json").read_text())
        assert (config["encoder_reference"] is None) == embed and (folder / REMOTE_FILE).is_file()
        loaded = HEADS[task].from_pretrained(folder)  # the package's own load of the same folder
        with torch.no_grad():
            expected[name] = output(task, loaded(pixel_values=pixels))
        torch.testing.assert_close(expected[name], output(task, head(pixels)), rtol=0, atol=0)
        if task != "depth":
            expected_pipes[name] = [{k: (np.asarray(v).tolist() if k == "mask" else v) for k, v in r.items()}
                                    for r in pipeline(PIPELINE_TASK[task], model=str(folder))(photo)]

    (work / "child.py").write_text(CHILD)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf_home"),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    run = subprocess.run([sys.executable, "-I", "child.py"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]

    report = json.loads((work / "child.json").read_text())
    assert not report["package_loaded"]
    assert all(c.startswith("transformers_modules.") for c in report["classes"].values()), report["classes"]
    got = load_file(work / "outputs.safetensors")
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=0, atol=0, msg=name)
    assert report["pipelines"].keys() == expected_pipes.keys()
    for name, results in expected_pipes.items():
        assert [r.get("label") for r in report["pipelines"][name]] == [r.get("label") for r in results], name
        for mine, theirs in zip(report["pipelines"][name], results):
            if "score" in theirs and theirs["score"] is not None:
                assert mine["score"] == pytest.approx(theirs["score"], abs=1e-6)
            assert mine.get("mask") == theirs.get("mask")


# --- lean folders ------------------------------------------------------------------------------
def _quiet_load(caplog, load):
    propagate = logging.getLogger("transformers").propagate
    hf_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            return load()
    finally:
        logging.getLogger("transformers").propagate = propagate


@pytest.mark.parametrize("task", list(HEADS))
def test_lean_head__bundled_encoder_folder_is_small_and_reloads_bit_identically(task, tmp_path, caplog):
    head = make_head(task, BUNDLED)
    head.save_pretrained(tmp_path / "head")
    folder = tmp_path / "head"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", REMOTE_FILE, "preprocessor_config.json"]
    assert sum(p.stat().st_size for p in folder.iterdir()) < 1_000_000
    with safe_open(folder / "model.safetensors", "pt") as weights:
        assert weights.keys() and not [k for k in weights.keys() if k.startswith("encoder.")]
    config = json.loads((folder / "config.json").read_text())
    ident = encoder_identity(BUNDLED)
    assert config["encoder_reference"] == {"source": str(bundled_encoders()[BUNDLED].resolve()), "kind": "local",
                                           "revision": None, "weights_sha256": ident.weights_sha256,
                                           "fingerprint": ident.fingerprint}
    assert config["auto_map"]["AutoConfig"] == "modeling_ssl_heads." + type(head).config_class.__name__
    assert head.config.encoder_reference is None  # the in-memory head is unchanged

    reloaded = _quiet_load(caplog, lambda: HEADS[task].from_pretrained(folder))
    assert type(_quiet_load(caplog, lambda: AUTO[task].from_pretrained(folder))) is HEADS[task]  # the package's class
    noisy = ("newly initialized", "not used", "missing", "unexpected")
    assert not [r.getMessage() for r in caplog.records if any(w in r.getMessage().lower() for w in noisy)]
    assert not reloaded.training and not any(p.requires_grad for p in reloaded.encoder.parameters())
    state = head.state_dict()
    assert reloaded.state_dict().keys() == state.keys()
    for key, value in reloaded.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0, msg=key)
    pixels = torch.rand(2, 3, 40, 56)
    with torch.no_grad():
        torch.testing.assert_close(output(task, reloaded(pixels)), output(task, head(pixels)), rtol=0, atol=0)
    reloaded.save_pretrained(tmp_path / "again")  # a lean head saves lean again, with the same reference
    assert json.loads((tmp_path / "again" / "config.json").read_text())["encoder_reference"] == config["encoder_reference"]


@pytest.fixture
def lean_head(tmp_path):
    encoder_dir = tmp_path / "encoder"
    make_tiny_backbone("dinov2", seed=4).save_pretrained(encoder_dir)
    head = make_head("classification", str(encoder_dir))
    head.save_pretrained(tmp_path / "head")
    return tmp_path / "head", encoder_dir


def test_lean_head__refuses_other_encoder_weights(lean_head):
    folder, encoder_dir = lean_head
    make_tiny_backbone("dinov2", seed=5).save_pretrained(encoder_dir)  # retrained in place: same path, new weights
    for load in (lambda: HEADS["classification"].from_pretrained(folder),
                 lambda: remote.SSLForImageClassification.from_pretrained(folder)):
        with pytest.raises(remote.EncoderReferenceError, match="not the one this head was trained on: its weights hash"):
            load()


def test_lean_head__missing_encoder_folder_says_how_to_fix(lean_head):
    folder, encoder_dir = lean_head
    shutil.rmtree(encoder_dir)
    with pytest.raises(remote.EncoderReferenceError, match="which is not there.*embed_encoder=True"):
        HEADS["classification"].from_pretrained(folder)


@pytest.mark.parametrize("name", [BUNDLED, "folder"])
def test_lean_head__bundled_encoder_that_moved_is_found_by_name(name, tmp_path):
    """A head trained on a bundled encoder records its absolute folder; in another install (a Space's copy of
    the package) the folder is found again by the encoder's name or the folder's name, and the hash still checked."""
    head = make_head("segmentation", BUNDLED)
    head.save_pretrained(tmp_path / "head")
    config_path = tmp_path / "head" / "config.json"
    config = json.loads(config_path.read_text())
    old = str(tmp_path / "old-install" / "assets" / BUNDLED)
    config["encoder_reference"]["source"] = old
    config["encoder_name_or_path"] = BUNDLED if name == BUNDLED else old  # train_head records the folder
    config_path.write_text(json.dumps(config))
    reloaded = HEADS["segmentation"].from_pretrained(tmp_path / "head")
    for key, value in head.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[key], value, rtol=0, atol=0, msg=key)
    config["encoder_reference"]["weights_sha256"] = "0" * 64
    config_path.write_text(json.dumps(config))
    with pytest.raises(remote.EncoderReferenceError, match="not the one this head was trained on"):
        HEADS["segmentation"].from_pretrained(tmp_path / "head")


def test_save__encoder_without_a_matching_reference_is_embedded_with_a_warning(tmp_path, caplog):
    encoder_dir = tmp_path / "encoder"
    make_tiny_backbone("dinov2", seed=6).save_pretrained(encoder_dir)
    changed = make_head("classification", str(encoder_dir))
    with torch.no_grad():
        next(changed.encoder.parameters()).add_(1.0)  # fine-tuned in memory: the folder's weights are not these
    in_memory = make_head("classification", make_tiny_backbone("dinov2", seed=6))  # a module: nothing to point at
    for head, why in ((changed, "are not those of"), (in_memory, "given as a module in memory")):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="hf_ssl_robust.heads.lean"):
            head.save_pretrained(tmp_path / "head")
        assert any("inside the head folder" in r.getMessage() and why in r.getMessage() for r in caplog.records)
        assert json.loads((tmp_path / "head" / "config.json").read_text())["encoder_reference"] is None
        reloaded = HEADS["classification"].from_pretrained(tmp_path / "head")
        for key, value in head.state_dict().items():
            torch.testing.assert_close(reloaded.state_dict()[key], value, rtol=0, atol=0, msg=key)


def _fake_hub_snapshot(cache: Path, repo_id: str, commit: str, backbone) -> None:
    """Write `backbone` into a Hub cache layout (blobs named by their SHA-256, snapshot symlinks, refs/main)."""
    from hf_ssl_robust.identity import file_sha256

    repo = cache / f"models--{repo_id.replace('/', '--')}"
    staging = cache / "staging" / commit
    backbone.save_pretrained(staging)
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "snapshots" / commit).mkdir(parents=True)
    for file in staging.iterdir():
        sha = file_sha256(file)
        shutil.move(file, repo / "blobs" / sha)
        (repo / "snapshots" / commit / file.name).symlink_to(Path("..", "..", "blobs", sha))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)


def test_lean_head__hub_encoder_is_pinned_to_its_commit(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    first, second = "a" * 40, "b" * 40
    _fake_hub_snapshot(cache, "org/tiny-encoder", first, make_tiny_backbone("dinov2", seed=7))
    head = make_head("depth", "org/tiny-encoder")
    head.save_pretrained(tmp_path / "head")
    reference = json.loads((tmp_path / "head" / "config.json").read_text())["encoder_reference"]
    assert reference["kind"] == "hub" and reference["source"] == "org/tiny-encoder" and reference["revision"] == first
    assert reference["weights_sha256"] and len(reference["weights_sha256"]) == 64

    _fake_hub_snapshot(cache, "org/tiny-encoder", second, make_tiny_backbone("dinov2", seed=8))  # a new push to main
    reloaded = HEADS["depth"].from_pretrained(tmp_path / "head")
    for key, value in head.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[key], value, rtol=0, atol=0, msg=key)

    reference["weights_sha256"] = "0" * 64
    config = json.loads((tmp_path / "head" / "config.json").read_text())
    (tmp_path / "head" / "config.json").write_text(json.dumps({**config, "encoder_reference": reference}))
    with pytest.raises(remote.EncoderReferenceError, match="not the one this head was trained on"):
        HEADS["depth"].from_pretrained(tmp_path / "head")


def test_save_pretrained__push_of_a_head_pinned_to_a_local_folder_uploads_the_encoder(lean_head, tmp_path, monkeypatch):
    """The local folder stays lean; the Hub copy (transformers' upload is faked) carries the encoder."""
    from types import SimpleNamespace

    import transformers.utils.hub as hf_hub_utils
    from transformers.utils.hub import PushToHubMixin

    uploaded = []

    def upload(self, folder, repo_id, **kwargs):
        with safe_open(Path(folder) / "model.safetensors", "pt") as weights:
            keys = list(weights.keys())
        config = json.loads((Path(folder) / "config.json").read_text())
        uploaded.append((config["encoder_reference"], any(k.startswith("encoder.") for k in keys), (Path(folder) / REMOTE_FILE).is_file()))

    monkeypatch.setattr(hf_hub_utils, "hf_api", lambda: SimpleNamespace(create_repo=lambda repo_id, **kw: SimpleNamespace(repo_id=repo_id)))
    monkeypatch.setattr(hf_hub_utils, "create_and_tag_model_card", lambda *a, **kw: SimpleNamespace(save=lambda path: None))
    monkeypatch.setattr(PushToHubMixin, "_upload_modified_files", upload)
    folder, _ = lean_head
    head = HEADS["classification"].from_pretrained(folder)
    head.save_pretrained(tmp_path / "again", push_to_hub=True, repo_id="me/tiny-head")
    assert json.loads((tmp_path / "again" / "config.json").read_text())["encoder_reference"]["kind"] == "local"
    assert uploaded == [(None, True, True)]
