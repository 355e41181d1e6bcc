"""Costs of a plan: FLOP counts against independent (analytic) counts, memory, and the CPU time
estimate against a real evaluation run."""

import json

import pytest
from transformers import Dinov2Config

from hf_ssl_robust.cost import ARCHITECTURES, backbone_config, count_pass, pass_cost
from hf_ssl_robust.data import get_dataset_spec
from hf_ssl_robust.encoders import PRESETS
from hf_ssl_robust.validation import KNOWN_ENCODERS

CIFAR = get_dataset_spec("cifar10", task="classification")


def vit_macs(layers: int, width: int, mlp: int, tokens: int, patches: int, patch: int) -> int:
    """Multiply-adds of a pre-norm ViT's matrix products: patch embedding, then per layer q/k/v/out
    projections (4·N·D²), the MLP (2·N·D·M) and attention scores and mixing (2·N²·D)."""
    embed = patches * width * 3 * patch * patch
    return embed + layers * (4 * tokens * width * width + 2 * tokens * width * mlp + 2 * tokens * tokens * width)


def convnext_macs(depths, widths, side: int) -> int:
    """Multiply-adds of a ConvNeXt: 4×4 stride-4 stem, 2×2 stride-2 downsampling between stages, blocks
    of a depthwise 7×7 conv and two pointwise layers of ratio 4."""
    s = side // 4
    macs = s * s * widths[0] * 3 * 16
    for i, (depth, c) in enumerate(zip(depths, widths)):
        if i:
            s //= 2
            macs += s * s * c * widths[i - 1] * 4
        macs += depth * s * s * (c * 49 + 2 * c * 4 * c)
    return macs


def test_pass_cost__dinov2_small_at_518_matches_the_analytic_count():
    # 37×37 patches + CLS; the independent count quoted in issue 25 is 93.4 GFLOPs = 2 × 46.7 GMACs
    cost = pass_cost("dinov2-small", "classification", (518, 518), CIFAR)
    expected = 2 * vit_macs(12, 384, 1536, 37 * 37 + 1, 37 * 37, 14) + 2 * 384 * 10  # + the linear head
    assert cost.forward == expected
    assert round(cost.forward / 1e9, 1) == 93.4
    assert cost.head == 2 * 384 * 10


@pytest.mark.parametrize("name, tokens, patches, patch, layers, width", [
    ("dino-vitb16", 14 * 14 + 1, 14 * 14, 16, 12, 768),  # DINO v1 ViT-B/16 at 224
    ("clip-vitl14", 16 * 16 + 1, 16 * 16, 14, 24, 1024),  # CLIP ViT-L/14 at 224
    ("dinov3-vits16", 14 * 14 + 5, 14 * 14, 16, 12, 384),  # DINOv3 ViT-S/16: CLS + 4 registers, RoPE
])
def test_pass_cost__vit_families_match_the_analytic_count(name, tokens, patches, patch, layers, width):
    cost = pass_cost(name, None, (224, 224))
    assert cost.forward == 2 * vit_macs(layers, width, 4 * width, tokens, patches, patch)
    # backward to the input: each projection and the patch embedding once more; attention recomputed
    # (its 2 products, as fused kernels do) then differentiated (4 products)
    attention = 2 * 2 * tokens * tokens * width
    assert cost.attack_step == 2 * cost.forward + 2 * layers * attention


def test_pass_cost__convnext_matches_the_analytic_count_and_counts_depthwise_backward_right():
    cost = pass_cost("dinov3-convnext-tiny", None, (224, 224), train=True)
    # + the final norm-free pooled token; LayerNorms are not counted
    assert cost.forward == 2 * convnext_macs([3, 3, 9, 3], [96, 192, 384, 768], 224)
    assert cost.attack_step == 2 * cost.forward  # backward to the input: one more pass of each layer (no attention)
    stem = 2 * 56 * 56 * 96 * 3 * 16  # the pixels need no gradient when training the weights
    assert cost.train_step == 3 * cost.forward - stem  # + the weight gradients (torch's formula counts depthwise ones C× too much)


def test_pass_cost__segmentation_head_and_depth_padding_are_counted():
    ade = get_dataset_spec("ade20k", task="segmentation")
    seg = pass_cost("dinov2-small", "segmentation", (518, 518), ade)
    assert seg.head == 2 * 37 * 37 * 384 * ade.num_classes  # the 1x1 conv on the patch grid
    nyu = get_dataset_spec("nyu_depth_v2", task="depth")
    depth = pass_cost("dinov2-small", "depth", (480, 640), nyu)
    # the depth head pads 480x640 to 490x644: 35x46 patches reach the encoder
    assert depth.forward - depth.head == 2 * vit_macs(12, 384, 1536, 35 * 46 + 1, 35 * 46, 14)
    assert depth.head > 2 * 35 * 46 * 768 * 256  # its 1x1 conv, plus the x4 upsampling matmuls


def test_pass_cost__memory_grows_with_the_tokens_and_excludes_weights():
    small = pass_cost("dinov2-small", None, (224, 224))
    large = pass_cost("dinov2-small", None, (448, 448))
    assert 3.9 < large.attack_bytes / small.attack_bytes < 4.1  # 4x the tokens; fused attention keeps no N×N matrix
    assert 4 * 21.5e6 < small.param_bytes < 4 * 22.5e6  # ViT-S/14: 22 M parameters, fp32
    # the activations of one 224² image for an attack step: more than the tokens of 12 layers, less than
    # 12 layers of 20 token-sized tensors (and no weights: they are 84 MiB)
    assert 12 * 257 * 384 * 4 < small.attack_bytes < 20 * 12 * 257 * 384 * 4


def test_architectures__cover_every_preset_and_agree_with_the_dry_run_facts():
    assert set(PRESETS.values()) <= set(ARCHITECTURES)
    for hub_id, facts in KNOWN_ENCODERS.items():
        config, source = backbone_config(hub_id)
        assert source == "recorded preset architecture"
        vision = facts.get("vision_config", facts)
        if "patch_size" in vision:
            assert config.patch_size == vision["patch_size"], hub_id
        if "hidden_size" in vision:
            assert config.hidden_size == vision["hidden_size"], hub_id
        if "hidden_sizes" in vision:
            assert list(config.hidden_sizes) == vision["hidden_sizes"], hub_id


def test_backbone_config__reads_a_folder_and_refuses_the_unknown(tmp_path):
    Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, patch_size=8).save_pretrained(tmp_path)
    config, source = backbone_config(str(tmp_path))
    assert (config.hidden_size, source) == (32, "folder config.json")
    with pytest.raises(ValueError, match="cannot be counted offline"):
        backbone_config("nobody/no-such-encoder")


def test_count_pass__is_cached_and_deterministic():
    config = json.dumps(ARCHITECTURES["facebook/dino-vits16"] | {"model_type": "vit"})
    assert count_pass(config, None, (224, 224)) is count_pass(config, None, (224, 224))
