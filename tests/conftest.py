"""Shared fixtures: tiny random encoders saved to disk, offline Hub, fixed seeds."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    DINOv3ConvNextConfig,
    DINOv3ConvNextModel,
    DINOv3ViTConfig,
    DINOv3ViTModel,
    Dinov2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    ResNetConfig,
    ResNetModel,
    SiglipConfig,
    SiglipModel,
    SiglipVisionConfig,
    SiglipVisionModel,
    ViTConfig,
    ViTModel,
)

from hf_ssl_robust.encoders import load_encoder

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4)

def one_thread():
    """Fixture body for modules of tiny tensors: one intra-op thread is faster and does not fight
    other jobs for the cores. Use as `_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)



TINY_TOWER = dict(image_size=32, intermediate_size=64, **TINY)  # CLIP / SigLIP / DINOv3 ViT
TINY_TEXT = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4)


def make_tiny_backbone(kind: str = "dinov2", patch_size: int = 8, seed: int = 0):
    """A seeded random tiny backbone: `dinov2`, `dinov2_reg` (4 registers), `vit` (DINO v1 style),
    `resnet` (two basic stages, total stride 8 whatever `patch_size`; BatchNorm statistics made non-trivial),
    `dinov3_vit` (4 registers, RoPE), `dinov3_convnext` (two stages, total stride 8 whatever `patch_size`),
    `clip` / `siglip` (vision towers, trained size 32) and `clip_full` / `siglip_full` (image-text models
    with a one-layer text tower, as full Hub checkpoints are saved)."""
    torch.manual_seed(seed)
    if kind in ("clip", "clip_full", "siglip", "siglip_full"):
        return _make_tiny_tower(kind, patch_size)
    if kind == "dinov3_vit":
        cfg = DINOv3ViTConfig(patch_size=patch_size, num_register_tokens=4, **TINY_TOWER)
        return DINOv3ViTModel(cfg).eval()
    if kind == "dinov3_convnext":
        return DINOv3ConvNextModel(DINOv3ConvNextConfig(hidden_sizes=[16, 32], depths=[1, 1])).eval()
    if kind == "dinov2":
        return Dinov2Model(Dinov2Config(image_size=32, patch_size=patch_size, mlp_ratio=2, **TINY)).eval()
    if kind == "dinov2_reg":
        cfg = Dinov2WithRegistersConfig(image_size=32, patch_size=patch_size, mlp_ratio=2, num_register_tokens=4, **TINY)
        return Dinov2WithRegistersModel(cfg).eval()
    if kind == "vit":
        cfg = ViTConfig(image_size=32, patch_size=patch_size, intermediate_size=64, **TINY)
        return ViTModel(cfg, add_pooling_layer=False).eval()
    if kind == "resnet":
        cfg = ResNetConfig(embedding_size=8, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic", downsample_in_first_stage=False)
        model = ResNetModel(cfg)
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.running_mean.uniform_(-0.2, 0.2)
                    module.running_var.uniform_(0.5, 1.5)
        return model.eval()
    raise ValueError(kind)


def _make_tiny_tower(kind: str, patch_size: int):
    vision_cls, config_cls, full_cls, full_config_cls = {
        "clip": (CLIPVisionModel, CLIPVisionConfig, CLIPModel, CLIPConfig),
        "siglip": (SiglipVisionModel, SiglipVisionConfig, SiglipModel, SiglipConfig),
    }[kind.removesuffix("_full")]
    vision = dict(patch_size=patch_size, **TINY_TOWER)
    if kind.endswith("_full"):
        model = full_cls(full_config_cls(text_config=TINY_TEXT, vision_config=vision))
    else:
        model = vision_cls(config_cls(**vision))
    with torch.no_grad():  # LayerNorm weights of 1 and biases of 0 would hide a missing or misplaced norm
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_dinov2_path(tmp_path_factory):
    """Folder with a tiny random Dinov2Model written by save_pretrained (patch 8)."""
    path = tmp_path_factory.mktemp("tiny_dinov2")
    make_tiny_backbone("dinov2").save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_vit_path(tmp_path_factory):
    """Folder with a tiny random DINO-v1-style ViTModel (patch 16, no pooler)."""
    path = tmp_path_factory.mktemp("tiny_vit")
    make_tiny_backbone("vit", patch_size=16).save_pretrained(path)
    return str(path)


@pytest.fixture
def tiny_encoder(tiny_dinov2_path):
    """A fresh tiny PixelEncoder (eval mode) loaded from disk."""
    return load_encoder(tiny_dinov2_path)


@pytest.fixture(scope="session")
def format_twins(tmp_path_factory):
    """`{dataset: folder}`: tiny copies of every registered real dataset in its exact format (tests/format_twins.py)."""
    from format_twins import write_format_twins

    return write_format_twins(tmp_path_factory.mktemp("twins"))
