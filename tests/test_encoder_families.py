"""Encoder families: a contract every registered family meets (tokens against the raw backbone, any
input size, every attack, head reload, DeACL), the refusals, and the ResNet family's details."""

import json
import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import make_tiny_backbone, one_thread
from test_attacks import CASES, make_case, snapshot
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForDepthEstimation,
    AutoModelForImageClassification,
    AutoModelForSemanticSegmentation,
    BertConfig,
    BertModel,
    CLIPModel,
    DeiTConfig,
    Siglip2Config,
    SiglipModel,
    ViTMAEConfig,
)

from hf_ssl_robust.attacks import make_attack
from hf_ssl_robust.data import get_dataset_spec
from hf_ssl_robust.defenses import DeACLConfig, train_deacl
from hf_ssl_robust.encoders import FAMILIES, PixelEncoder, centre_pad, get_family, load_encoder
from hf_ssl_robust.heads import HEADS
from hf_ssl_robust.sizes import FAMILY_OF_MODEL_TYPE, InputSize, encoder_family, resolve_input_size

# one tiny maker per registered model type: (kind for make_tiny_backbone, patch size asked for)
FAMILY_CASES = {
    "vit": ("vit", 16), "dinov2": ("dinov2", 8), "dinov2_with_registers": ("dinov2_reg", 8), "resnet": ("resnet", 8),
    "dinov3_vit": ("dinov3_vit", 8), "dinov3_convnext": ("dinov3_convnext", 8),
    "clip_vision_model": ("clip", 8), "clip": ("clip_full", 8),
    "siglip_vision_model": ("siglip", 8), "siglip": ("siglip_full", 8),
}
# one model type per family, for the slower checks (a full image-text checkpoint loads the same tower)
ONE_PER_FAMILY = sorted({id(FAMILIES[t]): t for t in sorted(FAMILY_CASES, reverse=True)}.values())

# Normalisation constants as the families' papers / processors publish them, written out here so that
# the reference below does not reuse the library's own numbers.
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CONSTANTS = {"clip_vision_model": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
             "siglip_vision_model": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))}
CONSTANTS |= {"clip": CONSTANTS["clip_vision_model"], "siglip": CONSTANTS["siglip_vision_model"]}
PADDED = {"resnet": 8, "dinov3_convnext": 8}  # conv families: centre-padded to their total stride
PIXEL_LAYERS = {"vit": "embeddings.patch_embeddings.projection", "dinov2": "embeddings.patch_embeddings.projection",
                "dinov2_with_registers": "embeddings.patch_embeddings.projection", "resnet": "embedder.embedder.convolution",
                "dinov3_vit": "embeddings.patch_embeddings", "dinov3_convnext": "model.stages.0.downsample_layers.0"}
AUTO_HEADS = {"classification": AutoModelForImageClassification, "segmentation": AutoModelForSemanticSegmentation,
              "depth": AutoModelForDepthEstimation}
HEAD_KWARGS = {"classification": dict(num_labels=5), "segmentation": dict(num_labels=4), "depth": {}}


_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


@pytest.fixture(scope="module")
def family_paths(tmp_path_factory):
    """`{model_type: folder}`: one tiny random checkpoint per registered model type."""
    root = tmp_path_factory.mktemp("families")
    paths = {}
    for model_type, (kind, patch) in FAMILY_CASES.items():
        paths[model_type] = root / model_type
        make_tiny_backbone(kind, patch_size=patch).save_pretrained(paths[model_type])
    return paths


@pytest.fixture(scope="module")
def resnet_path(family_paths):
    return family_paths["resnet"]


# --- the reference: what the raw transformers model itself returns --------------------------------
def raw_backbone(model_type, path):
    """The backbone as transformers loads it, without our loader (a full checkpoint: its vision tower)."""
    if model_type in ("clip", "siglip"):
        return {"clip": CLIPModel, "siglip": SiglipModel}[model_type].from_pretrained(path).vision_model.eval()
    return AutoModel.from_pretrained(path).eval()


def normalise(model_type, x):
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in CONSTANTS.get(model_type, IMAGENET))
    return (x - mean) / std


def final_norm_input(model, module_name, pixels, **kwargs):
    """`(output, input of the model's final norm)`: the pre-norm tokens, read with a hook."""
    seen = []
    hook = model.get_submodule(module_name).register_forward_hook(lambda m, args, out: seen.append(args[0]))
    try:
        out = model(pixel_values=pixels, **kwargs)
    finally:
        hook.remove()
    return out, seen[-1]


def reference_tokens(model_type, model, x):
    """`(global, patches, pre-norm global, pre-norm patches)` from the raw model on normalised pixels."""
    pixels = normalise(model_type, x)
    if model_type in PADDED:  # centre padding with zeros after normalisation (= the mean before)
        h, w = pixels.shape[-2:]
        s = PADDED[model_type]
        ph, pw = -h % s, -w % s
        pixels = F.pad(pixels, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
    if model_type == "resnet":  # no final norm
        out = model(pixel_values=pixels)
        patches = out.last_hidden_state.flatten(2).transpose(1, 2)
        return out.pooler_output.flatten(1), patches, out.pooler_output.flatten(1), patches
    if model_type == "dinov3_convnext":  # final layer_norm over [pooled, last-stage tokens]
        out, pre = final_norm_input(model, "layer_norm", pixels)
        return out.pooler_output, out.last_hidden_state[:, 1:], pre[:, 0], pre[:, 1:]
    if model_type in ("clip", "clip_vision_model"):  # post_layernorm normalises the pooled CLS only
        out = model(pixel_values=pixels, interpolate_pos_encoding=True)
        tokens = out.last_hidden_state
        return out.pooler_output, model.post_layernorm(tokens[:, 1:]), tokens[:, 0], tokens[:, 1:]
    if model_type in ("siglip", "siglip_vision_model"):  # no CLS: the attention-pooling head's output
        out, pre = final_norm_input(model, "post_layernorm", pixels, interpolate_pos_encoding=True)
        return out.pooler_output, out.last_hidden_state, out.pooler_output, pre
    norm = "norm" if model_type == "dinov3_vit" else "layernorm"
    kwargs = {"interpolate_pos_encoding": True} if model_type == "vit" else {}
    out, pre = final_norm_input(model, norm, pixels, **kwargs)
    skip = 1 + int(getattr(model.config, "num_register_tokens", 0) or 0)  # CLS (+ registers)
    return out.last_hidden_state[:, 0], out.last_hidden_state[:, skip:], pre[:, 0], pre[:, skip:]


# --- the contract, over the registry --------------------------------------------------------------
def test_every_registered_family_has_a_contract_case():
    assert set(FAMILIES) == set(FAMILY_CASES)


@pytest.mark.parametrize("model_type", sorted(FAMILY_CASES))
@pytest.mark.parametrize("size", ["multiple", "odd"])
def test_family_contract__tokens_equal_the_raw_backbone(model_type, size, family_paths):
    path = family_paths[model_type]
    encoder, raw = load_encoder(str(path)), raw_backbone(model_type, path)
    assert get_family(AutoConfig.from_pretrained(path)) is encoder.family and not encoder.training
    p = encoder.patch_size
    h, w = (2 * p, 3 * p) if size == "multiple" else (2 * p + 3, 3 * p + 5)  # non-square; partial patches
    x = torch.rand(2, 3, h, w)
    with torch.no_grad():
        out, pre = encoder(x), encoder(x, pre_norm=True)
        ref_cls, ref_patches, ref_pre_cls, ref_pre_patches = reference_tokens(model_type, raw, x)
    grid = encoder.grid_size(h, w)
    assert out.grid == pre.grid == grid == ((-(-h // p), -(-w // p)) if model_type in PADDED else (h // p, w // p))
    assert out.cls.shape == (2, encoder.hidden_size) and out.patches.shape == (2, grid[0] * grid[1], encoder.hidden_size)
    exact = dict(rtol=0, atol=1e-6)
    torch.testing.assert_close(out.cls, ref_cls, **exact)
    torch.testing.assert_close(out.patches, ref_patches, **exact)
    torch.testing.assert_close(pre.cls, ref_pre_cls, **exact)
    torch.testing.assert_close(pre.patches, ref_pre_patches, **exact)
    assert out.patch_grid().shape == (2, encoder.hidden_size, *grid)


@pytest.mark.parametrize("model_type", sorted(FAMILY_CASES))
def test_family_contract__gradient_reaches_the_pixels(model_type, family_paths):
    encoder = load_encoder(str(family_paths[model_type]))
    # the layer kept in fp32 under autocast is the one that sees the pixels: patch embedding or stem
    assert encoder.pixel_layer == PIXEL_LAYERS.get(model_type, "embeddings.patch_embedding")
    x = torch.rand(2, 3, 24, 40, requires_grad=True)
    out = encoder(x)
    # random projections, not plain sums: a sum over LayerNorm outputs is constant in x (see test_encoders)
    g = torch.Generator().manual_seed(0)
    ((out.cls * torch.randn(out.cls.shape, generator=g)).sum() + (out.patches * torch.randn(out.patches.shape, generator=g)).sum()).backward()
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("model_type", sorted(FAMILY_CASES))
@pytest.mark.parametrize("name,task", CASES, ids=[f"{n}-{t}" for n, t in CASES])
def test_family_contract__every_attack_keeps_its_invariants(model_type, name, task, family_paths):
    encoder = load_encoder(str(family_paths[model_type]))
    kwargs, model, x, target = make_case(name, task, encoder)
    x_before, before = x.clone(), snapshot(model)
    eps = 8 / 255
    adv = make_attack(name.partition(":")[0], eps=eps, steps=2, seed=0, **kwargs).perturb(model, x, target).pixels
    assert adv.shape == x.shape and (adv - x).abs().max() <= eps and not torch.equal(adv, x)
    assert adv.min() >= 0 and adv.max() <= 1 and torch.equal(x, x_before)
    after = snapshot(model)
    assert all(torch.equal(a, b) for a, b in zip(before[0].values(), after[0].values()))
    assert before[1].keys() == after[1].keys() and all(after[1][n][1] is None for n in after[1])
    assert before[2] == after[2]


@pytest.mark.parametrize("model_type", sorted(FAMILY_CASES))
@pytest.mark.parametrize("task", list(HEADS))
def test_family_contract__heads_reload_bit_identical_with_auto_classes(model_type, task, family_paths, tmp_path):
    torch.manual_seed(0)
    model = HEADS[task].from_encoder(str(family_paths[model_type]), image_size=32, **HEAD_KWARGS[task]).eval()
    x = torch.rand(2, 3, 32, 40)
    with torch.no_grad():
        out = model(x)
    expected = out.predicted_depth if task == "depth" else out.logits
    assert torch.isfinite(expected).all()
    model.save_pretrained(tmp_path / "head")
    reloaded = AUTO_HEADS[task].from_pretrained(tmp_path / "head").eval()
    assert type(reloaded) is type(model)
    # every tensor, non-persistent buffers included (DINOv3's RoPE frequencies, CLIP/SigLIP position ids)
    original = dict(model.named_buffers()) | dict(model.named_parameters())
    for key, value in (dict(reloaded.named_buffers()) | dict(reloaded.named_parameters())).items():
        torch.testing.assert_close(value, original[key], rtol=0, atol=0, msg=key)
    with torch.no_grad():
        again = reloaded(x)
    torch.testing.assert_close(again.predicted_depth if task == "depth" else again.logits, expected, rtol=0, atol=0)


@pytest.mark.parametrize("model_type", ONE_PER_FAMILY)
def test_family_contract__deacl_two_steps_saves_an_automodel_backbone(model_type, family_paths, tmp_path):
    path = family_paths[model_type]
    cfg = DeACLConfig(encoder=str(path), image_size=32, num_train_samples=16, batch_size=8, max_steps=2,
                      output_dir=str(tmp_path / "twin"), checkpoint_every=0, log_every=1, eps="8/255")
    out = train_deacl(cfg)
    backbone = AutoModel.from_pretrained(out)
    assert type(backbone) is type(load_encoder(str(path)).backbone)
    twin, teacher = load_encoder(out), load_encoder(str(path))
    assert twin.family is teacher.family
    assert any(not torch.equal(a, b) for a, b in zip(twin.state_dict().values(), teacher.state_dict().values()))
    assert json.loads((out / "deacl_config.json").read_text())["total_steps"] == 2


# --- default input sizes (sizes.py) -----------------------------------------------------------------
def test_every_family_but_resnet_has_paper_style_sizes():
    assert set(FAMILIES) - {"resnet"} == set(FAMILY_OF_MODEL_TYPE)  # ResNet (embedded default): the data's size


@pytest.mark.parametrize("model_type,family", [
    ("clip_vision_model", "clip@32"), ("clip", "clip@32"), ("siglip_vision_model", "siglip@32"), ("siglip", "siglip@32"),
    ("dinov3_vit", "dinov3"), ("dinov3_convnext", "dinov3"), ("dinov2", "dinov2"), ("resnet", None),
])
def test_encoder_family__fixed_resolution_families_use_their_checkpoint_size(model_type, family, family_paths):
    config = AutoConfig.from_pretrained(family_paths[model_type])  # a full CLIP/SigLIP: its vision tower's size
    assert encoder_family(config) == encoder_family(config.to_dict()) == family
    assert encoder_family(model_type) == ((family or "").partition("@")[0] or None)  # a bare type: no size


def test_resolve_input_size__new_family_rows():
    city, ade, cifar, nyu = (get_dataset_spec(n) for n in ("cityscapes", "ade20k", "cifar10", "nyu_depth_v2"))
    assert resolve_input_size("dinov3", city) == InputSize((512, 1024), 512, 341, 512)  # DINOv3's own 512 / 341
    assert resolve_input_size("dinov3", cifar) == InputSize(512)
    assert resolve_input_size("clip@224", ade) == InputSize(224, 224, 100, 224)  # the paper's stride at 224
    assert resolve_input_size("siglip@384", cifar) == InputSize(384)
    assert resolve_input_size("siglip@384", nyu) == InputSize((480, 640), crop=(480, 640))
    assert resolve_input_size("clip", cifar) == InputSize(cifar.image_size)  # size unknown: the data's own


# --- refusals -------------------------------------------------------------------------------------
@pytest.mark.parametrize("config,reason", [
    (DeiTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16), "distillation token"),
    (ViTMAEConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16), "random 75%"),
    (Siglip2Config(), "NaFlex SigLIP2.*model_type 'siglip'"),
])
def test_unsupported_families_are_refused_before_weights_load(config, reason, tmp_path):
    config.save_pretrained(tmp_path)  # a config and no weights: refused from the config alone
    with pytest.raises(ValueError, match=rf"Unsupported encoder family '{config.model_type}'.*{reason}.*load_encoder supports:.*CLIP.*register_family"):
        load_encoder(str(tmp_path))


def test_unknown_family_is_refused_with_the_supported_list(tmp_path):
    BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"Unsupported encoder family 'bert'.*ResNet.*SigLIP.*DINOv2"):
        load_encoder(str(tmp_path))
    with pytest.raises(ValueError, match="Unsupported encoder family"):
        PixelEncoder(BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)))


@pytest.mark.parametrize("kind", ["clip_full", "siglip_full"])
def test_a_built_image_text_model_asks_for_its_vision_tower(kind):
    model = make_tiny_backbone(kind)
    with pytest.raises(ValueError, match=r"full image-text model: pass its vision tower \(`model.vision_model`\)"):
        load_encoder(model)
    assert load_encoder(model.vision_model).family is get_family(model.config)


@pytest.mark.parametrize("model_type", sorted(FAMILY_CASES))
def test_token_stride__from_the_config_dict_alone(model_type, family_paths):
    """Dry runs and cards read the stride from config.json without building the model."""
    from hf_ssl_robust.families import token_stride
    from hf_ssl_robust.validation import KNOWN_ENCODERS

    config = json.loads((Path(family_paths[model_type]) / "config.json").read_text())
    assert token_stride(config) == load_encoder(family_paths[model_type]).patch_size
    assert all(token_stride(c) for c in KNOWN_ENCODERS.values())  # presets list a few fields only
    assert token_stride({"model_type": "bert"}) is None


@pytest.mark.parametrize("model_type", ["clip", "siglip"])
def test_full_checkpoint__text_tower_not_reported_but_missing_vision_weights_are(model_type, family_paths, tmp_path, caplog, monkeypatch):
    from safetensors.torch import load_file, save_file

    monkeypatch.setattr(logging.getLogger("transformers"), "propagate", True)  # to caplog, whatever other tests left
    caplog.set_level(logging.WARNING, logger="transformers")
    encoder = load_encoder(family_paths[model_type])
    report = caplog.text
    assert "UNEXPECTED" not in report and "LOAD REPORT" not in report  # the text tower is an expected leftover
    assert getattr(type(encoder.backbone), "_keys_to_ignore_on_load_unexpected", None) is None  # class restored
    # a vision weight missing from the checkpoint is still reported
    folder = tmp_path / "partial"
    folder.mkdir()
    (folder / "config.json").write_text((Path(family_paths[model_type]) / "config.json").read_text())
    weights = load_file(Path(family_paths[model_type]) / "model.safetensors")
    dropped = next(k for k in weights if k.startswith("vision_model.") and k.endswith("post_layernorm.weight"))
    save_file({k: v for k, v in weights.items() if k != dropped}, folder / "model.safetensors", metadata={"format": "pt"})
    caplog.clear()
    load_encoder(str(folder))
    assert "MISSING" in caplog.text and "UNEXPECTED" not in caplog.text


def test_siglip_without_its_pooling_head_is_refused(family_paths, tmp_path):
    config = AutoConfig.from_pretrained(family_paths["siglip_vision_model"])
    config.vision_use_head = False
    config.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no attention-pooling head"):
        load_encoder(str(tmp_path))


# --- ResNet details ---------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(37, 53), (33, 40), (8, 9), (5, 5)])
def test_resnet__any_input_size_is_centre_padded_like_the_heads(resnet_path, size):
    encoder = load_encoder(str(resnet_path))
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        out = encoder(x)
        padded, _ = centre_pad(x, 8, fill=encoder.mean)
        ref = encoder.backbone(pixel_values=encoder.normalize(padded)).last_hidden_state
    h, w = -(-size[0] // 8), -(-size[1] // 8)
    assert out.grid == (h, w) == encoder.grid_size(*size) == tuple(ref.shape[-2:])
    torch.testing.assert_close(out.patch_grid(), ref, rtol=0, atol=0)
