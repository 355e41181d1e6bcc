"""`transformers.pipeline` on saved heads and on the bundled encoders, run on a real photo.

Heads are saved with `save_pretrained` (what `train_head` and users call), which writes the image
processor; each pipeline's output is checked for its form and against the model called directly on
the processor's pixels, and those pixels against a plain resize of the photo divided by 255 (the
processor must not normalise: the model does).
"""

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_tiny_backbone, one_thread
from PIL import Image
from skimage import data as skimage_data  # sample photos (the dev extra)
from transformers import AutoModelForImageClassification, pipeline

from hf_ssl_robust.encoders import bundled_encoders, load_encoder, resolve_encoder_name
from hf_ssl_robust.heads import SSLForDepthEstimation, SSLForImageClassification, SSLForSemanticSegmentation
from hf_ssl_robust.processing import PROCESSOR_FILE, save_image_processor

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)

REPO = Path(__file__).resolve().parents[1]
SIDE = 32  # the tiny heads' image_size
NAMES = {0: "background", 1: "cup", 2: "saucer"}


@pytest.fixture(scope="module")
def photo():
    """A real 400x600 RGB photo (scikit-image's coffee cup), not square."""
    return Image.fromarray(skimage_data.coffee())


@pytest.fixture(scope="module")
def backbone():
    return make_tiny_backbone("dinov2")  # patch 8, hidden 32


def _plain_pixels(photo: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """The photo resized with PIL's bilinear filter and divided by 255: `[1, 3, H, W]`, no normalisation."""
    resized = np.asarray(photo.resize((size[1], size[0]), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    return torch.from_numpy(resized).permute(2, 0, 1)[None]


def _bundle_encoder_script():
    spec = importlib.util.spec_from_file_location("bundle_encoder", REPO / "scripts" / "bundle_encoder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _processed(pipe, photo) -> torch.Tensor:
    return pipe.image_processor(photo, return_tensors="pt")["pixel_values"]


def test_pipeline__image_classification(backbone, photo, tmp_path):
    head = SSLForImageClassification.from_encoder(backbone, num_labels=3, image_size=SIDE, id2label=NAMES).eval()
    head.save_pretrained(tmp_path)
    assert (tmp_path / PROCESSOR_FILE).is_file()

    classifier = pipeline("image-classification", model=str(tmp_path))
    out = classifier(photo, top_k=None)

    assert {o["label"] for o in out} == set(NAMES.values())
    assert sum(o["score"] for o in out) == pytest.approx(1.0, abs=1e-5)
    pixels = _processed(classifier, photo)
    torch.testing.assert_close(pixels, _plain_pixels(photo, (SIDE, SIDE)), rtol=0, atol=1e-6)  # square resize, [0, 1]
    with torch.no_grad():
        probs = head(pixel_values=pixels).logits.softmax(-1)[0]
    assert {o["label"]: o["score"] for o in out} == pytest.approx({NAMES[i]: float(p) for i, p in enumerate(probs)}, abs=1e-6)


def test_pipeline__image_segmentation(backbone, photo, tmp_path):
    head = SSLForSemanticSegmentation.from_encoder(backbone, num_labels=3, image_size=SIDE, id2label=NAMES).eval()
    torch.manual_seed(0)
    torch.nn.init.normal_(head.classifier.weight, std=1.0)  # several classes win somewhere on the photo
    head.save_pretrained(tmp_path)

    segmenter = pipeline("image-segmentation", model=str(tmp_path))
    out = segmenter(photo)

    pixels = _processed(segmenter, photo)
    assert pixels.shape == (1, 3, SIDE, SIDE * 600 // 400)  # short side to image_size, aspect kept
    torch.testing.assert_close(pixels, _plain_pixels(photo, pixels.shape[-2:]), rtol=0, atol=1e-6)
    with torch.no_grad():
        logits = head(pixel_values=pixels).logits
    expected = F.interpolate(logits, size=(photo.height, photo.width), mode="bilinear", align_corners=False)[0].argmax(0)
    assert len(out) >= 2 and {o["label"] for o in out} <= set(NAMES.values())
    covered = np.zeros((photo.height, photo.width), dtype=int)
    for o in out:
        assert o["mask"].size == photo.size and o["mask"].mode == "L"
        mask = np.asarray(o["mask"]) == 255
        label_id = {v: k for k, v in NAMES.items()}[o["label"]]
        np.testing.assert_array_equal(mask, expected.numpy() == label_id)
        covered += mask
    assert (covered == 1).all()  # the masks partition the photo


def test_pipeline__depth_estimation(backbone, photo, tmp_path):
    head = SSLForDepthEstimation.from_encoder(backbone, image_size=SIDE).eval()
    head.save_pretrained(tmp_path)

    estimator = pipeline("depth-estimation", model=str(tmp_path))
    out = estimator(photo)

    assert out["predicted_depth"].shape == (photo.height, photo.width) and out["depth"].size == photo.size
    pixels = _processed(estimator, photo)
    assert pixels.shape == (1, 3, SIDE, SIDE * 600 // 400)
    torch.testing.assert_close(pixels, _plain_pixels(photo, pixels.shape[-2:]), rtol=0, atol=1e-6)
    with torch.no_grad():
        depth = head(pixel_values=pixels).predicted_depth
    expected = F.interpolate(depth[:, None], size=(photo.height, photo.width), mode="bicubic", align_corners=False)[0, 0]
    torch.testing.assert_close(out["predicted_depth"], expected)


@pytest.mark.parametrize("name", sorted(bundled_encoders()))
def test_pipeline__feature_extraction_on_bundled_encoders(name, photo):
    folder = resolve_encoder_name(name)  # the alias is ours: transformers needs the folder
    extractor = pipeline("image-feature-extraction", model=folder)
    features = torch.tensor(extractor(photo))

    encoder = load_encoder(name)
    side = extractor.image_processor.size.height
    with torch.no_grad():
        out = encoder(_plain_pixels(photo, (side, side)))  # normalises inside with the family's mean/std
    h, w = out.grid
    assert features.shape == (1, encoder.hidden_size, h, w)  # ResNet: the last feature map, channels first
    torch.testing.assert_close(features.flatten(2).transpose(1, 2), out.patches, rtol=1e-4, atol=1e-4)
    pooled = torch.tensor(extractor(photo, pool=True)).flatten(1)
    torch.testing.assert_close(pooled, out.cls, rtol=1e-4, atol=1e-4)


def test_old_head_folder__loads_in_our_code_and_gets_a_processor_afterwards(backbone, photo, tmp_path):
    head = SSLForImageClassification.from_encoder(backbone, num_labels=3, image_size=SIDE, id2label=NAMES).eval()
    head.save_pretrained(tmp_path)
    (tmp_path / PROCESSOR_FILE).unlink()  # as saved before heads wrote one
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path)
    x = torch.rand(1, 3, SIDE, SIDE)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values=x).logits, head(pixel_values=x).logits, rtol=0, atol=0)
    with pytest.raises(OSError, match=PROCESSOR_FILE):
        pipeline("image-classification", model=str(tmp_path))
    save_image_processor(tmp_path)
    assert len(pipeline("image-classification", model=str(tmp_path))(photo)) == 3


@pytest.mark.parametrize("name", sorted(bundled_encoders()))
def test_bundled_encoders__card_and_processor_are_what_bundle_encoder_writes(name, tmp_path):
    """The committed README.md, model_cards/ copy and preprocessor_config.json are the current outputs of
    scripts/bundle_encoder.py (re-run it after changing a template or the processors)."""
    folder = bundled_encoders()[name]
    source = tmp_path / "source" / name
    shutil.copytree(folder, source)
    dest = _bundle_encoder_script().main(
        [str(source), name, "--results", str(REPO / "docs" / "embedded_default" / "results.json"), "--dest", str(tmp_path / "dest"),
         "--card_copy", str(tmp_path / "card.md")]
    )  # fmt: skip
    assert json.loads((dest / PROCESSOR_FILE).read_text()) == json.loads((folder / PROCESSOR_FILE).read_text())
    assert (dest / "README.md").read_text() == (folder / "README.md").read_text()
    assert (tmp_path / "card.md").read_text() == (REPO / "model_cards" / f"{name}.md").read_text()


def test_save_pretrained__push_to_hub_uploads_the_processor_too(backbone, tmp_path, monkeypatch):
    """`save_pretrained(..., push_to_hub=True)`: the uploaded folder holds the processor (the Hub is faked)."""
    from types import SimpleNamespace

    import transformers.utils.hub as hf_hub_utils
    from transformers.utils.hub import PushToHubMixin

    created, uploaded = [], []
    monkeypatch.setattr(hf_hub_utils, "hf_api", lambda: SimpleNamespace(
        create_repo=lambda repo_id, **kw: created.append(repo_id) or SimpleNamespace(repo_id=repo_id)))
    monkeypatch.setattr(hf_hub_utils, "create_and_tag_model_card", lambda *a, **kw: SimpleNamespace(save=lambda path: None))
    monkeypatch.setattr(PushToHubMixin, "_upload_modified_files",
                        lambda self, folder, repo_id, **kw: uploaded.append((repo_id, sorted(p.name for p in Path(folder).iterdir()))))
    head = SSLForImageClassification.from_encoder(backbone, num_labels=3, image_size=SIDE, id2label=NAMES)
    head.save_pretrained(tmp_path / "head", push_to_hub=True, repo_id="me/tiny-head", commit_message="test")
    assert created == ["me/tiny-head"]
    (repo_id, files), = uploaded
    assert repo_id == "me/tiny-head" and {"config.json", "model.safetensors", PROCESSOR_FILE} <= set(files)
    assert (tmp_path / "head" / PROCESSOR_FILE).is_file()
