import subprocess
import sys
import time

import pytest
import torch
from transformers import AutoModel

from hf_ssl_robust.encoders import (
    CLIP_MEAN,
    CLIP_STD,
    ENCODER_PRESETS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PRESETS,
    SAT_MEAN,
    SAT_STD,
    EncoderNotFoundError,
    GatedEncoderError,
    PixelEncoder,
    load_encoder,
    resolve_encoder_name,
)

from conftest import make_tiny_backbone


def _normalize(x):
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@pytest.mark.parametrize("kind,patch", [("dinov2", 8), ("dinov2", 14), ("vit", 16), ("vit", 8), ("dinov2_reg", 8)])
def test_load_encoder__equals_automodel_on_normalized_pixels(tmp_path, kind, patch):
    make_tiny_backbone(kind, patch_size=patch).save_pretrained(tmp_path)
    encoder = load_encoder(str(tmp_path))
    assert isinstance(encoder, PixelEncoder) and not encoder.training
    reference = AutoModel.from_pretrained(tmp_path).eval()
    x = torch.rand(2, 3, 2 * patch, 3 * patch)
    with torch.no_grad():
        out = encoder(x)
        kwargs = {"interpolate_pos_encoding": True} if kind == "vit" else {}
        ref = reference(pixel_values=_normalize(x), **kwargs).last_hidden_state
    registers = 4 if kind == "dinov2_reg" else 0
    torch.testing.assert_close(out.cls, ref[:, 0])
    torch.testing.assert_close(out.patches, ref[:, 1 + registers :])
    assert out.grid == (2, 3)
    assert out.patches.shape == (2, 6, 32)
    assert out.patch_grid().shape == (2, 32, 2, 3)
    assert encoder.patch_size == patch and encoder.hidden_size == 32


def test_load_encoder__vit_has_no_random_pooler(tiny_vit_path):
    encoder = load_encoder(tiny_vit_path)
    assert getattr(encoder.backbone, "pooler", None) is None


@pytest.mark.parametrize("size", [(32, 48), (48, 32), (40, 40), (37, 53)])
def test_encoder__non_square_inputs_and_partial_patches(tiny_encoder, size):
    out = tiny_encoder(torch.rand(1, 3, *size))
    h, w = size[0] // 8, size[1] // 8
    assert out.grid == (h, w)
    assert out.patches.shape == (1, h * w, 32)
    assert out.cls.shape == (1, 32)


def test_encoder__pre_norm_tokens_are_last_block_before_layernorm(tiny_encoder):
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        pre = tiny_encoder(x, pre_norm=True)
        post = tiny_encoder(x)
        hidden = tiny_encoder.backbone(pixel_values=_normalize(x), output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(pre.patches, hidden[:, 1:])
    torch.testing.assert_close(tiny_encoder.backbone.layernorm(pre.patches), post.patches)
    default_pre = load_encoder(tiny_encoder.backbone, pre_norm=True)
    torch.testing.assert_close(default_pre(x).cls, pre.cls)


def test_encoder__gradient_flows_to_pixels(tiny_encoder):
    x = torch.rand(1, 3, 16, 24, requires_grad=True)
    patches = tiny_encoder(x).patches
    # a random projection: the plain sum of LayerNorm outputs does not depend on x when the norm's weight
    # is constant (sum of a centred vector is 0), so its gradient is rounding noise and can be exactly 0
    probe = torch.randn(patches.shape, generator=torch.Generator().manual_seed(0))
    (patches * probe).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_load_encoder__accepts_built_modules(tiny_encoder):
    assert load_encoder(tiny_encoder) is tiny_encoder
    wrapped = load_encoder(tiny_encoder.backbone)
    assert isinstance(wrapped, PixelEncoder) and wrapped.backbone is tiny_encoder.backbone


def test_encoder__save_pretrained_reloads_with_automodel(tiny_encoder, tmp_path):
    tiny_encoder.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    reloaded = load_encoder(str(tmp_path))
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(reloaded(x).cls, tiny_encoder(x).cls, rtol=0, atol=0)


def test_encoder__save_pretrained_keeps_its_mean_and_std(tiny_dinov2_path, tmp_path):
    """A SAT-normalised encoder (e.g. a DeACL'd dinov3-vitl16-sat) reloads with SAT constants, not ImageNet's."""
    import json

    from hf_ssl_robust.processing import save_image_processor

    encoder = load_encoder(tiny_dinov2_path, mean=SAT_MEAN, std=SAT_STD)
    encoder.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "encoder_config.json").read_text()) == {"image_mean": list(SAT_MEAN), "image_std": list(SAT_STD)}
    reloaded = load_encoder(str(tmp_path))
    torch.testing.assert_close(reloaded.mean.flatten(), torch.tensor(SAT_MEAN))
    torch.testing.assert_close(reloaded.std.flatten(), torch.tensor(SAT_STD))
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(reloaded(x).cls, encoder(x).cls, rtol=0, atol=0)
    torch.testing.assert_close(load_encoder(str(tmp_path), mean=IMAGENET_MEAN).mean.flatten(), torch.tensor(IMAGENET_MEAN))  # argument wins
    processor = json.loads(save_image_processor(tmp_path).read_text())  # AutoModel users normalise the same way
    assert processor["image_mean"] == list(SAT_MEAN) and processor["image_std"] == list(SAT_STD)
    (tmp_path / "encoder_config.json").write_text('{"image_mean": [0.5, 0.5], "image_std": [1, 1, 1]}')
    with pytest.raises(ValueError, match=r"encoder_config.json.*image_mean.*3 values.*Fix or delete it"):
        load_encoder(str(tmp_path))


@pytest.mark.parametrize(
    "bad,match",
    [
        (torch.rand(3, 32, 32), r"\[B, 3, H, W\]"),
        (torch.rand(1, 1, 32, 32), r"grayscale"),
        ((torch.rand(1, 3, 32, 32) * 255).to(torch.uint8), r"x.float\(\) / 255"),
        (torch.rand(1, 3, 4, 32), r"smaller than one 8px patch"),
    ],
)
def test_encoder__bad_pixels_raise_clear_errors(tiny_encoder, bad, match):
    with pytest.raises(ValueError, match=match):
        tiny_encoder(bad)


def test_presets__map_to_hub_ids():
    assert resolve_encoder_name("dinov2-small") == "facebook/dinov2-small"
    assert resolve_encoder_name("dino-vitb16") == "facebook/dino-vitb16"
    assert {"dinov2-small", "dinov2-base", "dino-vitb16", "dino-vits16"} <= set(PRESETS)
    assert resolve_encoder_name("some/other-id") == "some/other-id"


@pytest.mark.parametrize("name,hub_id,mean,std", [
    ("dinov3-vitb16", "facebook/dinov3-vitb16-pretrain-lvd1689m", None, None),  # the family's: ImageNet
    ("dinov3-convnext-tiny", "facebook/dinov3-convnext-tiny-pretrain-lvd1689m", None, None),
    ("dinov3-vitl16-sat", "facebook/dinov3-vitl16-pretrain-sat493m", (0.430, 0.411, 0.296), (0.213, 0.156, 0.143)),
    ("clip-vitb16", "openai/clip-vit-base-patch16", (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    ("clip-vitl14-fare2", "LEAF-CLIP/CLIP-ViT-L-FARE2", (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    ("siglip-base16-224", "google/siglip-base-patch16-224", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
])
def test_presets__carry_their_checkpoints_constants(name, hub_id, mean, std):
    preset = ENCODER_PRESETS[name]
    assert resolve_encoder_name(name) == preset.hub_id == PRESETS[name] == hub_id and type(PRESETS[name]) is str
    assert (preset.mean, preset.std) == (mean, std)


@pytest.mark.parametrize("name", ["dinov3-vitl16-sat", "facebook/dinov3-vitl16-pretrain-sat493m"])
def test_presets__constants_are_applied_by_name_or_hub_id(name, tiny_dinov2_path, monkeypatch):
    """A satellite DINOv3 loaded by preset name or by Hub id normalises with the satellite constants."""
    import hf_ssl_robust.encoders as encoders

    monkeypatch.setattr(encoders, "resolve_encoder_name", lambda n: tiny_dinov2_path)  # weights stand-in
    encoder = load_encoder(name)
    torch.testing.assert_close(encoder.mean.flatten(), torch.tensor(SAT_MEAN))
    torch.testing.assert_close(encoder.std.flatten(), torch.tensor(SAT_STD))
    clip = load_encoder(name, mean=CLIP_MEAN, std=CLIP_STD)  # an explicit argument wins
    torch.testing.assert_close(clip.mean.flatten(), torch.tensor(CLIP_MEAN))


def _gated(status):
    """What huggingface_hub raises for a gated repo without access (or a plain 401/403)."""
    import httpx2
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError

    response = httpx2.Response(status, request=httpx2.Request("GET", "https://huggingface.co/api/models/x"))
    if status == 403:
        return GatedRepoError("403 Client Error. Cannot access gated repo for url ...", response=response)
    return HfHubHTTPError(f"{status} Client Error: Unauthorized", response=response)


@pytest.mark.parametrize("status", [403, 401])
def test_load_encoder__gated_repo_says_accept_licence_and_log_in(status, monkeypatch):
    """The real transformers path: its download raises, `AutoConfig` turns that into an OSError."""
    import transformers.utils.hub as hf_utils

    def no_access(*args, **kwargs):
        raise _gated(status)

    monkeypatch.setattr(hf_utils, "hf_hub_download", no_access)
    with pytest.raises(GatedEncoderError) as info:
        load_encoder("dinov3-vits16")
    message = str(info.value)
    assert "https://huggingface.co/facebook/dinov3-vits16-pretrain-lvd1689m" in message
    assert "licence" in message and "hf auth login" in message and "HF_TOKEN" in message
    assert isinstance(info.value, EncoderNotFoundError)  # callers that catch not-found still catch it


def test_load_encoder__missing_repo_is_not_called_gated(monkeypatch):
    """Without a token the Hub answers 401 for a missing repo too, as RepositoryNotFoundError: not gated."""
    import httpx2
    import transformers.utils.hub as hf_utils
    from huggingface_hub.errors import RepositoryNotFoundError

    def missing(*args, **kwargs):
        request = httpx2.Request("GET", "https://huggingface.co/api/models/x")
        raise RepositoryNotFoundError("401 Client Error. Repository Not Found", response=httpx2.Response(401, request=request))

    monkeypatch.setattr(hf_utils, "hf_hub_download", missing)
    with pytest.raises(EncoderNotFoundError) as info:
        load_encoder("someone/no-such-encoder")
    assert not isinstance(info.value, GatedEncoderError) and "licence" not in str(info.value)


def test_load_encoder__gated_weights_after_a_readable_config(tiny_dinov2_path, monkeypatch):
    """Config readable (e.g. cached) but the weights download is refused: the same clear message."""
    import hf_ssl_robust.encoders as encoders

    def no_access(*args, **kwargs):
        raise OSError("You are trying to access a gated repo.") from _gated(403)

    monkeypatch.setattr(encoders.AutoModel, "from_pretrained", no_access)
    with pytest.raises(GatedEncoderError, match="accept its licence"):
        load_encoder(tiny_dinov2_path)


def test_load_encoder__offline_miss_is_fast_and_clear():
    start = time.perf_counter()
    with pytest.raises(EncoderNotFoundError, match=r"facebook/dinov2-small.*\n.*\nFix:") as info:
        load_encoder("dinov2-small")
    assert time.perf_counter() - start < 10
    assert "HF_HUB_OFFLINE" in str(info.value)


def test_load_encoder__missing_local_folder(tmp_path):
    with pytest.raises(EncoderNotFoundError, match="no such folder"):
        load_encoder(str(tmp_path / "nope"))


def test_load_encoder__never_runs_remote_code_or_pickles(tmp_path):
    """A folder that only has a pickled checkpoint is refused (safetensors only)."""
    model = make_tiny_backbone("dinov2")
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(EncoderNotFoundError):
        load_encoder(str(tmp_path))


def test_import_is_light_and_public_api_present():
    code = "import hf_ssl_robust as h; assert callable(h.load_encoder); print(h.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip()
