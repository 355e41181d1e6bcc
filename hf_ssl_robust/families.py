"""Backbone families: what each `transformers` vision model's tokens are, one small entry each.

A `Family` says how one kind of backbone becomes a `PixelEncoder` (`encoders.py`): its global token
and patch tokens, the tokens before its final norm (the depth head reads those), its normalisation,
its token stride and input-size rule (pad like a conv net, or floor partial patches like a ViT), and
how to load it. `register_family` adds one; a contract test (`tests/test_encoder_families.py`) runs
over the whole registry. Anything unregistered is refused by `get_family` before weights load.

| family (`model_type`) | global token | patch tokens | mean / std |
|---|---|---|---|
| DINO v1, DINOv2 (+registers) | CLS after the final layer norm | after the norm, registers dropped | ImageNet |
| DINOv3 ViT (`dinov3_vit`) | CLS after the final norm (RoPE, 4 registers) | after the norm, registers dropped | ImageNet |
| DINOv3 ConvNeXt (`dinov3_convnext`) | average-pooled last stage, normed | last stage, normed, row-major | ImageNet |
| ResNet (`resnet`) | average-pooled last stage | last stage, row-major | ImageNet |
| CLIP vision (`clip_vision_model`, `clip`) | `pooler_output`: CLS after `post_layernorm` | `post_layernorm` on each token | CLIP's |
| SigLIP vision (`siglip_vision_model`, `siglip`) | the attention-pooling head's output | after `post_layernorm` | 0.5 / 0.5 |

Example (a new family is one call):
    >>> register_family(Family("MyViT", ("my_vit",), hidden_size=lambda c: c.hidden_size,
    ...                        stride=lambda c: c.patch_size, tokens=my_tokens, pad=False, paper_image_size=224))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import Tensor

__all__ = ["CLIP_MEAN", "CLIP_STD", "FAMILIES", "Family", "IMAGENET_MEAN", "IMAGENET_STD", "SIGLIP_MEAN",
           "SIGLIP_STD", "get_family", "register_family", "token_stride"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# OpenAI CLIP's preprocessing constants (also those of the robust CLIPs fine-tuned from it).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Family:
    """How one backbone family becomes a `PixelEncoder`.

    Attributes:
        name: what error messages and docs call it.
        model_types: the `config.model_type` values it covers.
        hidden_size, stride: `config -> int`; the token width and the pixel stride of one patch token.
        tokens: `(backbone, normalised pixels, pre_norm) -> (global [B, D], patches [B, h*w, D], (h, w))`.
        pad: pad inputs (centred, with the mean) to a multiple of the stride before encoding, as
            the heads do (a conv net sees every pixel); otherwise partial patches are floored away.
        paper_image_size: its paper-style default square side (the sizes table in `sizes.py` is the
            full protocol; fixed-resolution families use their checkpoint's `image_size` first).
        mean, std: its normalisation (never read from a processor config).
        load_kwargs: extra `from_pretrained` / `from_config` arguments.
        backbone_config: `config -> config` of the model to build: a full image-text checkpoint
            (`clip`, `siglip`) gives its vision tower's config, so only the vision tower loads. It
            may raise `ValueError` for a checkpoint of the family that cannot work.
    """

    name: str
    model_types: tuple[str, ...]
    hidden_size: Callable
    stride: Callable
    tokens: Callable
    pad: bool
    paper_image_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    load_kwargs: Callable = lambda config: {}  # noqa: E731
    backbone_config: Callable = lambda config: config  # noqa: E731


FAMILIES: dict[str, Family] = {}

# Model types refused with a reason (a family that looks like a ViT but whose tokens differ).
REFUSED: dict[str, str] = {
    "deit": "DeiT puts a distillation token after CLS ([CLS, DIST, patches]); read as a ViT, it would be a patch",
    "vit_mae": "ViTMAE drops a random 75% of the patches in every forward pass (mask_ratio), so its tokens are "
               "neither complete nor deterministic",
    "siglip2": "NaFlex SigLIP2 takes variable-length patch sequences with a mask and spatial shapes, not an image "
               "tensor; the fixed-resolution SigLIP2 checkpoints (e.g. google/siglip2-base-patch16-224) are "
               "published as model_type 'siglip' and load as the SigLIP family",
}
REFUSED["siglip2_vision_model"] = REFUSED["siglip2"]


def register_family(family: Family) -> Family:
    """Add a family to the registry (one entry per `model_type`)."""
    for model_type in family.model_types:
        FAMILIES[model_type] = family
    return family


def token_stride(config: dict) -> int | None:
    """Pixels per token of a backbone config given as a dict (`config.json`, a dry run's known
    presets, which list only some fields: the rest are the config class's defaults); None for an
    unregistered family."""
    from types import SimpleNamespace

    from transformers import CONFIG_MAPPING

    fields = dict(config)
    model_type = fields.pop("model_type", None)
    if model_type not in FAMILIES:
        return None
    if isinstance(fields.get("vision_config"), dict):  # a full image-text checkpoint: its vision tower's stride
        vision = fields["vision_config"]
        return token_stride({**vision, "model_type": vision.get("model_type") or f"{model_type}_vision_model"})
    try:
        defaults = CONFIG_MAPPING[model_type]().to_dict()
        return int(FAMILIES[model_type].stride(SimpleNamespace(**{**defaults, **fields, "model_type": model_type})))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def get_family(config) -> Family:
    """The family of a backbone config; a clear error listing the supported ones otherwise."""
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        names = "; ".join(sorted({f"{f.name} [{', '.join(f.model_types)}]" for f in FAMILIES.values()}))
        reason = f" {REFUSED[model_type]}." if model_type in REFUSED else ""
        raise ValueError(
            f"Unsupported encoder family {model_type!r} ({type(config).__name__}).{reason} load_encoder supports: "
            f"{names}. Pick a checkpoint of one of these, or add the family with "
            "`hf_ssl_robust.encoders.register_family(Family(...))`: its global and patch tokens, stride, "
            "normalisation and input-size rule (the entries in hf_ssl_robust/families.py are the examples)."
        )
    return FAMILIES[model_type]


def _first(value) -> int:
    return value[0] if isinstance(value, (tuple, list)) else value


def _vit_patch(config) -> int:
    return _first(config.patch_size)


def _floor_grid(pixels: Tensor, stride: int) -> tuple[int, int]:
    return pixels.shape[-2] // stride, pixels.shape[-1] // stride


# --- ViTs with a CLS token: DINO v1, DINOv2 (+ registers), DINOv3 ViT ---------------------------
def _vit_tokens(backbone, pixels: Tensor, pre_norm: bool):
    kwargs = {"output_hidden_states": True} if pre_norm else {}
    if backbone.config.model_type == "vit":  # DINOv2 always interpolates, DINOv3 uses RoPE; ViT needs the flag
        kwargs["interpolate_pos_encoding"] = True
    out = backbone(pixel_values=pixels, **kwargs)
    tokens = out.hidden_states[-1] if pre_norm else out.last_hidden_state  # [B, 1+R+h*w, D]
    registers = int(getattr(backbone.config, "num_register_tokens", 0) or 0)
    return tokens[:, 0], tokens[:, 1 + registers :], _floor_grid(pixels, _vit_patch(backbone.config))


register_family(Family(
    "ViT with a CLS token (DINO v1 ViTModel, DINOv2, DINOv2 with registers)", ("vit", "dinov2", "dinov2_with_registers"),
    hidden_size=lambda c: c.hidden_size, stride=_vit_patch, tokens=_vit_tokens, pad=False, paper_image_size=518,
    # DINO v1 checkpoints were converted without a pooler; the default one is random.
    load_kwargs=lambda c: {"add_pooling_layer": False} if c.model_type == "vit" else {},
))
register_family(Family(
    "DINOv3 ViT (DINOv3ViTModel: CLS, 4 registers, RoPE)", ("dinov3_vit",),
    hidden_size=lambda c: c.hidden_size, stride=_vit_patch, tokens=_vit_tokens, pad=False, paper_image_size=512,
))


# --- conv nets: ResNet, DINOv3 ConvNeXt ----------------------------------------------------------
def _resnet_tokens(backbone, pixels: Tensor, pre_norm: bool):
    # No final norm in a ResNet: its pre-norm tokens are its tokens.
    out = backbone(pixel_values=pixels)
    fmap = out.last_hidden_state  # [B, D, h, w]
    return out.pooler_output.flatten(1), fmap.flatten(2).transpose(1, 2), tuple(fmap.shape[-2:])


def _resnet_stride(config) -> int:
    # stem: stride-2 conv + stride-2 max pool; every stage after the first halves the map again
    return 4 * 2 ** (len(config.depths) - 1) * (2 if config.downsample_in_first_stage else 1)


def _convnext_tokens(backbone, pixels: Tensor, pre_norm: bool):
    # last_hidden_state = layer_norm([average-pooled last stage, last-stage tokens]): [B, 1+h*w, D]
    out = backbone(pixel_values=pixels, output_hidden_states=pre_norm)
    if pre_norm:  # the last stage's map before the final norm; its global token is its average
        fmap = out.hidden_states[-1]  # [B, D, h, w]
        patches = fmap.flatten(2).transpose(1, 2)
        return patches.mean(1), patches, tuple(fmap.shape[-2:])
    grid = _floor_grid(pixels, _convnext_stride(backbone.config))
    return out.pooler_output, out.last_hidden_state[:, 1:], grid


def _convnext_stride(config) -> int:
    # stem: 4x4 conv with stride 4; every later stage starts with a 2x2 conv of stride 2
    return 4 * 2 ** (len(config.hidden_sizes) - 1)


register_family(Family(
    "ResNet (ResNetModel: pooled feature + last feature map)", ("resnet",),
    hidden_size=lambda c: c.hidden_sizes[-1], stride=_resnet_stride, tokens=_resnet_tokens, pad=True, paper_image_size=224,
))
register_family(Family(
    "DINOv3 ConvNeXt (DINOv3ConvNextModel: pooled token + last-stage tokens)", ("dinov3_convnext",),
    hidden_size=lambda c: c.hidden_sizes[-1], stride=_convnext_stride, tokens=_convnext_tokens, pad=True,
    paper_image_size=512,
))


# --- image-text towers: CLIP, SigLIP (one fixed training resolution, positions interpolated) ------
def _vision_config(config):
    """A full image-text checkpoint's vision tower config (a vision config is returned as is)."""
    return getattr(config, "vision_config", None) or config


def _clip_tokens(backbone, pixels: Tensor, pre_norm: bool):
    # CLIP's post_layernorm normalises only the pooled CLS; it is applied here to every token, so the
    # global token is exactly `pooler_output` and the patches are on its scale. Pre-norm: the last block.
    out = backbone(pixel_values=pixels, interpolate_pos_encoding=True)
    tokens = out.last_hidden_state  # [B, 1+h*w, D], before post_layernorm
    if not pre_norm:
        tokens = backbone.post_layernorm(tokens)
    return tokens[:, 0], tokens[:, 1:], _floor_grid(pixels, _vit_patch(backbone.config))


def _siglip_vision_config(config):
    vision = _vision_config(config)
    if not getattr(vision, "vision_use_head", True):
        raise ValueError(
            "This SigLIP vision tower has no attention-pooling head (vision_use_head=False), so it has no global "
            "token; load_encoder needs one (use a SigLIP checkpoint with its head, e.g. google/siglip-base-patch16-224)."
        )
    return vision


def _siglip_tokens(backbone, pixels: Tensor, pre_norm: bool):
    # No CLS token: the global token is the attention-pooling head's output (it reads the normed tokens).
    out = backbone(pixel_values=pixels, interpolate_pos_encoding=True, output_hidden_states=pre_norm)
    patches = out.hidden_states[-1] if pre_norm else out.last_hidden_state  # [B, h*w, D]
    return out.pooler_output, patches, _floor_grid(pixels, _vit_patch(backbone.config))


register_family(Family(
    "CLIP vision tower (CLIPVisionModel; a full CLIPModel loads its vision tower)", ("clip_vision_model", "clip"),
    hidden_size=lambda c: _vision_config(c).hidden_size, stride=lambda c: _vit_patch(_vision_config(c)),
    tokens=_clip_tokens, pad=False, paper_image_size=224, mean=CLIP_MEAN, std=CLIP_STD, backbone_config=_vision_config,
))
register_family(Family(
    "SigLIP vision tower, fixed resolution (SiglipVisionModel; a full SiglipModel loads its vision tower)",
    ("siglip_vision_model", "siglip"),
    hidden_size=lambda c: _vision_config(c).hidden_size, stride=lambda c: _vit_patch(_vision_config(c)),
    tokens=_siglip_tokens, pad=False, paper_image_size=224, mean=SIGLIP_MEAN, std=SIGLIP_STD,
    backbone_config=_siglip_vision_config,
))
