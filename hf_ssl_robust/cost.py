"""What one pass of an encoder (and its task head) costs, counted exactly from the config alone.

The model is built from its config on PyTorch's `meta` device (no weights, no memory, no data) and
run once inside `torch.utils.flop_counter.FlopCounterMode`, through the same `PixelEncoder` and head
code a real run uses (windows, padding, pre-norm tokens included). Convention: **FLOPs = 2 × MACs**
(one multiply-add counts 2), matrix products and convolutions only (norms, softmax, activations and
interpolation are not counted), which is `FlopCounterMode`'s. DINOv2-S/14 at 518² counts 93.4 GFLOPs
for one forward, what an analytic count of its matrix products gives (`tests/test_cost.py`).

Kinds of pass (per input image or sliding window):
* `forward`: encoder + head, no gradient (clean evaluation, head training on a frozen encoder);
* `attack_step`: forward + backward to the input with the weights frozen (one attack step);
* `train_step`: encoder forward + backward to every weight (DeACL's student).

Memory: the tensors autograd keeps for the backward (`saved_tensors_hooks`), counted per input in
fp32 on the same meta pass. Attention is counted as the fused kernels of a real run compute it
(FlashAttention / memory-efficient attention on a GPU, the flash path on a CPU): only q, k, v are kept
and the N×N scores are recomputed in the backward, which the attack step's FLOPs include.

Configs come from a local folder, then :data:`ARCHITECTURES` (the presets' published architecture,
so plans work offline and before a gated licence is accepted), then the Hub cache.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["ARCHITECTURES", "PassCost", "backbone_config", "count_pass", "pass_cost"]

# Architecture fields of each preset's `config.json` on the Hub (the fields that shape the compute;
# everything else is the config class's default). The files cannot be downloaded here (and DINOv3's
# are gated), so they are recorded: ViT-S/B/L widths 384/768/1024 with 6/12/16 heads and 12/12/24
# layers, MLP ratio 4, as in the DINO, DINOv2, DINOv3, CLIP and SigLIP papers and model cards.
# `validation.KNOWN_ENCODERS` lists the subset a dry run's sizes need; a test keeps the two in step.
_VIT_S = dict(hidden_size=384, num_attention_heads=6, num_hidden_layers=12)
_VIT_B = dict(hidden_size=768, num_attention_heads=12, num_hidden_layers=12)
_VIT_L = dict(hidden_size=1024, num_attention_heads=16, num_hidden_layers=24)


def _mlp(vit: dict) -> dict:
    return {**vit, "intermediate_size": 4 * vit["hidden_size"]}


ARCHITECTURES: dict[str, dict] = {
    "facebook/dinov2-small": dict(model_type="dinov2", patch_size=14, image_size=518, **_VIT_S),
    "facebook/dinov2-base": dict(model_type="dinov2", patch_size=14, image_size=518, **_VIT_B),
    "facebook/dinov2-large": dict(model_type="dinov2", patch_size=14, image_size=518, **_VIT_L),
    "facebook/dinov2-with-registers-small": dict(model_type="dinov2_with_registers", patch_size=14, image_size=518,
                                                 num_register_tokens=4, **_VIT_S),
    "facebook/dino-vits16": dict(model_type="vit", patch_size=16, image_size=224, **_mlp(_VIT_S)),
    "facebook/dino-vitb16": dict(model_type="vit", patch_size=16, image_size=224, **_mlp(_VIT_B)),
    "facebook/dinov3-vits16-pretrain-lvd1689m": dict(model_type="dinov3_vit", patch_size=16, num_register_tokens=4, **_mlp(_VIT_S)),
    "facebook/dinov3-vitb16-pretrain-lvd1689m": dict(model_type="dinov3_vit", patch_size=16, num_register_tokens=4, **_mlp(_VIT_B)),
    "facebook/dinov3-vitl16-pretrain-lvd1689m": dict(model_type="dinov3_vit", patch_size=16, num_register_tokens=4, **_mlp(_VIT_L)),
    "facebook/dinov3-vitl16-pretrain-sat493m": dict(model_type="dinov3_vit", patch_size=16, num_register_tokens=4, **_mlp(_VIT_L)),
    "facebook/dinov3-convnext-tiny-pretrain-lvd1689m": dict(model_type="dinov3_convnext", hidden_sizes=[96, 192, 384, 768], depths=[3, 3, 9, 3]),
    "facebook/dinov3-convnext-small-pretrain-lvd1689m": dict(model_type="dinov3_convnext", hidden_sizes=[96, 192, 384, 768], depths=[3, 3, 27, 3]),
    "openai/clip-vit-base-patch16": dict(model_type="clip_vision_model", patch_size=16, image_size=224, **_mlp(_VIT_B)),
    "openai/clip-vit-large-patch14": dict(model_type="clip_vision_model", patch_size=14, image_size=224, **_mlp(_VIT_L)),
    "LEAF-CLIP/CLIP-ViT-L-FARE2": dict(model_type="clip_vision_model", patch_size=14, image_size=224, **_mlp(_VIT_L)),
    "google/siglip-base-patch16-224": dict(model_type="siglip_vision_model", patch_size=16, image_size=224, **_mlp(_VIT_B)),
}


def backbone_config(name: str):
    """`(backbone config, source)` of an encoder, without weights or network.

    Looks in a local folder (`config.json`), then :data:`ARCHITECTURES`, then the Hub cache. A full
    image-text checkpoint (CLIP, SigLIP) gives its vision tower's config.

    Raises:
        ValueError: nothing describes it.
    """
    from transformers import AutoConfig

    from .encoders import resolve_encoder_name
    from .families import get_family

    resolved = resolve_encoder_name(name)
    if Path(resolved).is_dir():
        config, source = AutoConfig.from_pretrained(resolved), "folder config.json"
    elif resolved in ARCHITECTURES:
        fields = dict(ARCHITECTURES[resolved])
        config, source = AutoConfig.for_model(fields.pop("model_type"), **fields), "recorded preset architecture"
    else:
        try:
            config, source = AutoConfig.from_pretrained(resolved, local_files_only=True), "Hub cache"
        except (OSError, ValueError) as err:
            raise ValueError(f"encoder {name!r}: no folder, no recorded preset architecture and not in the Hub cache, so its "
                             f"cost cannot be counted offline ({str(err).splitlines()[0]}). Pass a folder with a config.json "
                             "or download the model once.") from None
    return get_family(config).backbone_config(config), source


@dataclass(frozen=True)
class PassCost:
    """FLOPs (2 per multiply-add) and memory of one input of one pass; see the module docstring.

    Attributes:
        forward: encoder + head forward FLOPs.
        head: the head's share of `forward`.
        attack_step: forward + backward to the input, weights frozen.
        train_step: encoder forward + backward to all its weights (DeACL).
        attack_bytes, train_bytes: activations kept for those backwards, per input, fp32.
        param_bytes: encoder + head parameters, fp32.
        shape: `(H, W)` of the input.
    """

    forward: int
    head: int
    attack_step: int
    train_step: int | None
    attack_bytes: int
    train_bytes: int | None
    param_bytes: int
    shape: tuple[int, int]


def _conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """A convolution's backward: each requested gradient (input, weight) costs one forward convolution.

    Replaces torch's formula, which ignores `groups` for the weight gradient (a depthwise 7×7 conv of
    ConvNeXt then counts C times its true cost)."""
    from torch.utils.flop_counter import conv_flop_count

    one = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed=transposed)
    return one * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def _math_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """`scaled_dot_product_attention` as two matrix products and a softmax (eval: no dropout)."""
    if enable_gqa and k.shape[-3] != q.shape[-3]:
        k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
        v = v.repeat_interleave(q.shape[-3] // v.shape[-3], dim=-3)
    scores = torch.matmul(q, k.transpose(-2, -1)) * (q.shape[-1] ** -0.5 if scale is None else scale)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
    return torch.matmul(scores.softmax(-1), v)


class _FusedAttention(torch.autograd.Function):
    """Attention that keeps only q, k, v and its output for the backward and recomputes the scores there,
    as the fused kernels a real run uses do (FlashAttention and memory-efficient attention on a GPU,
    PyTorch's flash path on a CPU); on the meta device `scaled_dot_product_attention` would otherwise
    take the math path, which keeps the N×N attention matrices."""

    @staticmethod
    def forward(ctx, q, k, v, kwargs):
        with torch.no_grad():
            out = _math_attention(q, k, v, **kwargs)
        ctx.save_for_backward(q, k, v)
        ctx.kwargs = kwargs
        return out

    @staticmethod
    def backward(ctx, grad):
        inputs = [t.detach().requires_grad_(needed) for t, needed in zip(ctx.saved_tensors, ctx.needs_input_grad[:3])]
        with torch.enable_grad():
            out = _math_attention(*inputs, **ctx.kwargs)
            wanted = [t for t in inputs if t.requires_grad]
            grads = iter(torch.autograd.grad(out, wanted, grad))
        return (*(next(grads) if t.requires_grad else None for t in inputs), None)


def _fused_sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    kwargs = dict(attn_mask=attn_mask, is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)
    if not torch.is_grad_enabled() or not any(t.requires_grad for t in (q, k, v)):
        return _math_attention(q, k, v, **kwargs)
    return _FusedAttention.apply(q, k, v, kwargs)


def _count(forward, backward=None, weights: set[int] = frozenset()) -> tuple[dict, int]:
    """(FLOPs per module path, "Global" = all; bytes the forward keeps for the backward) of
    `backward(forward())` on meta tensors; `weights`: storage ids of parameters and buffers, not counted
    (a linear layer keeps its weight, or a transposed view of it, for the backward)."""
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    kept: dict[int, tuple[int, torch.Tensor]] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage._cdata not in weights:
            kept[storage._cdata] = (storage.nbytes(), t)  # the tensor keeps the storage (and its id) alive
        return t

    custom = {torch.ops.aten.convolution_backward: _conv_backward_flop}
    sdpa, F.scaled_dot_product_attention = F.scaled_dot_product_attention, _fused_sdpa
    try:
        with FlopCounterMode(display=False, custom_mapping=custom) as counter:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                out = forward()
            if backward is not None:
                backward(out)
    finally:
        F.scaled_dot_product_attention = sdpa
    flops = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    return flops, sum(nbytes for nbytes, _ in kept.values())


def _primary(out) -> torch.Tensor:
    for key in ("logits", "predicted_depth", "cls"):
        if getattr(out, key, None) is not None:
            return getattr(out, key)
    raise TypeError(f"no output tensor in {type(out).__name__}")


def count_pass(config_json: str, task: str | None, shape: tuple[int, int], head_kwargs_json: str = "{}", train: bool = False) -> PassCost:
    """Count one pass of the encoder described by `config_json` (+ the `task` head) on one `shape` input.

    Args:
        config_json: the backbone config as JSON (`config.to_json_string()`), with `model_type`.
        task: `classification`, `segmentation`, `depth`, or None for the encoder alone.
        shape: `(H, W)` of the input (a whole image or one sliding window).
        head_kwargs_json: head config fields as JSON (`Task.head_kwargs`).
        train: also count `train_step` (else it and `train_bytes` are None).
    """
    return _count_pass(config_json, task, tuple(shape), head_kwargs_json, train)


@functools.lru_cache(maxsize=256)
def _count_pass(config_json: str, task: str | None, shape: tuple[int, int], head_kwargs_json: str, train: bool) -> PassCost:
    from .encoders import PixelEncoder
    from .heads.modeling import build_encoder
    from .tasks import get_task

    config = json.loads(config_json)
    with torch.device("meta"):
        if task is None:
            from .heads.configuration import SSLHeadConfig

            encoder = build_encoder(SSLHeadConfig(encoder_config=config))
            model = encoder
        else:
            head_class = get_task(task).head_class
            model = head_class(head_class.config_class(encoder_config=config, **json.loads(head_kwargs_json)))
            encoder = model.encoder
        x = torch.empty(1, 3, *shape)
    model.eval().requires_grad_(False)
    assert isinstance(encoder, PixelEncoder)

    def forward():
        with torch.no_grad():
            model(x) if task is not None else encoder(x)

    def attack_forward():  # a leaf input and `.backward()`: same kernels as `autograd.grad` to the input
        pixels = x.clone().requires_grad_(True)
        return _primary(model(pixels) if task is not None else encoder(pixels)).float().sum()

    def train_forward():
        encoder.requires_grad_(True)
        encoder.train()
        return encoder(x).cls.float().sum()

    def backward(loss):
        loss.backward()
        encoder.eval().requires_grad_(False)

    fwd, _ = _count(forward)
    head = fwd["Global"] - fwd.get(f"{type(model).__name__}.encoder", fwd["Global"])  # what runs outside the encoder
    weights = {t.untyped_storage()._cdata for t in (*model.parameters(), *model.buffers())}
    attack, attack_bytes = _count(attack_forward, backward, weights)
    train, train_bytes = _count(train_forward, backward, weights) if train else ({"Global": None}, None)
    params = sum(p.numel() * 4 for p in model.parameters())
    return PassCost(fwd["Global"], head, attack["Global"], train["Global"], attack_bytes, train_bytes, params, shape)


def pass_cost(encoder: str, task: str | None, shape: tuple[int, int], spec=None, train: bool = False) -> PassCost:
    """The cost of one `shape` input through `encoder` (a preset, Hub id or folder) and the `task` head.

    Args:
        spec: the dataset spec of the head (its number of classes, ignore index, max depth); the head
            is sized for it. Ignored when `task` is None.
        train: also count DeACL's `train_step`.
    """
    from .tasks import get_task

    config, _ = backbone_config(encoder)
    head_kwargs = {}
    if task is not None:
        head_kwargs = get_task(task).head_kwargs(spec, image_size=max(shape)) if spec is not None else {}
        head_kwargs.pop("id2label", None)  # names do not change the cost
    return count_pass(config.to_json_string(use_diff=False), task, tuple(shape), json.dumps(head_kwargs, sort_keys=True), train)
