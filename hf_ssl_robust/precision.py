"""Mixed precision that keeps attacks exact.

One setting, `mixed_precision` = `no` | `bf16` | `fp16` (the `accelerate` convention; left unset,
`accelerate launch --mixed_precision X` decides through the Accelerator's state), for the
benchmark, head training, DeACL and the Space. Forwards and backwards of attacks and evaluation
run under the accelerator's autocast; the perturbation, the projection and the normalisation are
fp32 tensors, and the first layer that sees pixels (patch embedding, or a conv stem) runs in fp32:
near normalised values of 2-4 the bf16 spacing is about 0.9/255 in pixel units, so a bf16 patch
embedding would round a 0.25/255 change away entirely and steps of 0.5/255 partly.

    >>> accelerator = make_accelerator("bf16")
    >>> with accelerator.autocast():      # the encoder's pixel layer still computes in fp32
    ...     adv = make_attack("pgd", eps=1 / 255, seed=0).perturb(model, pixels, labels).pixels
"""

from __future__ import annotations

import contextlib
import logging

import torch
from torch import Tensor, nn

from .configs import PRECISIONS, check_mixed_precision  # noqa: F401  (re-export: their home was here)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
logger = logging.getLogger(__name__)


def make_accelerator(mixed_precision: str | None = None, **kwargs):
    """An `Accelerator` with this precision (None: `accelerate launch`'s, else `no`).

    Raises `ValueError` for fp16 without a GPU: accelerate would silently run it in fp32.
    """
    from accelerate import Accelerator

    accelerator = Accelerator(mixed_precision=check_mixed_precision(mixed_precision), **kwargs)
    if accelerator.mixed_precision == "fp16" and not accelerator.native_amp:
        raise ValueError(f"mixed_precision='fp16' needs a GPU (accelerate does not autocast fp16 on "
                         f"{accelerator.device.type}); use 'bf16' or 'no'.")
    return accelerator


def effective_precision(accelerator) -> str:
    """The precision the accelerator's autocast really uses: `no`, `bf16` or `fp16`."""
    if accelerator is None or not getattr(accelerator, "native_amp", False):
        return "no"
    return accelerator.mixed_precision


def resolve_precision(requested: str | None, accelerator) -> str:
    """The accelerator's effective precision; `ValueError` if `requested` (when set) disagrees."""
    used = effective_precision(accelerator)
    if requested not in (None, used):
        raise ValueError(f"mixed_precision={requested!r} but the accelerator runs {used!r}: pass the same precision "
                         "to both (or leave mixed_precision unset).")
    return used


def autocast(accelerator=None):
    """The accelerator's autocast context (a no-op without one or without mixed precision)."""
    return accelerator.autocast() if accelerator is not None else contextlib.nullcontext()


def autocast_for(precision: str, device: str | torch.device = "cpu"):
    """`torch.autocast` for a precision name, without an Accelerator (the Space, scripts)."""
    check_mixed_precision(precision)
    if precision in (None, "no"):
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=DTYPES[precision])


# -- input gradients under fp16: per-sample loss scaling -------------------------------------------
def fp16_autocast(device_type: str) -> bool:
    """Whether fp16 autocast is on for this device type."""
    return torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type) == torch.float16


# Grow a scale while the largest scaled input-gradient entry is below this: the gradients inside the
# network are of the same order, so this keeps them clear of fp16's subnormals (< 2^-14) with 2^22 of
# headroom below its largest number (65504).
_GROW_BELOW = 2.0**-6


class InputGradScaler:
    """The gradient of a per-sample objective `[B]` with respect to the input, safe under fp16.

    In fp16 (smallest subnormal 6e-8) the input gradient of a confident image underflows to exact
    zero, and `sign(0) = 0` leaves the image where it is. Under fp16 autocast each sample's objective
    is multiplied by its own scale before `autograd.grad` and the (fp32) gradient divided by it
    afterwards, so callers see the true gradient and the true objective. Samples are independent, so
    a scale per sample changes nothing else. The scales are dynamic and kept across steps: a sample
    whose scaled gradient is not finite is retried with a scale `BACKOFF` times smaller (never below 1,
    never again as large), one whose gradient is mostly exact zeros or whose largest entry is below
    `_GROW_BELOW` (underflow, lost precision) with one up to `GROW` times larger (at most `MAX`, and
    `BACKOFF` times below any scale that overflowed), at most `RETRIES` extra backward passes per call; each sample
    gets its latest finite gradient. Without fp16 autocast it is one plain `autograd.grad` (bit for
    bit as before). bf16 has fp32's range and needs none of it.
    """

    INIT, GROW, BACKOFF, MAX, RETRIES = 2.0**14, 2.0**8, 2.0**4, 2.0**100, 4  # MAX: scaled fp32 objectives stay finite

    def __init__(self, device_type: str) -> None:
        self.enabled = fp16_autocast(device_type)
        self.scale: Tensor | None = None  # [B] fp32
        self.ceiling: Tensor | None = None  # [B] smallest scale seen to overflow

    def grad(self, loss: Tensor, x: Tensor) -> Tensor:
        """`d loss.sum() / d x` (`loss` `[B]`, `x` `[B, ...]`)."""
        if not self.enabled:
            (grad,) = torch.autograd.grad(loss.sum(), x, materialize_grads=True)
            return grad
        if self.scale is None:
            self.scale = torch.full(loss.shape, self.INIT, dtype=torch.float32, device=loss.device)
            self.ceiling = torch.full_like(self.scale, float("inf"))
        result = None
        for attempt in range(self.RETRIES + 1):
            (grad,) = torch.autograd.grad((loss.float() * self.scale).sum(), x, retain_graph=attempt < self.RETRIES,
                                          materialize_grads=True)
            flat = grad.flatten(1)
            finite = torch.isfinite(flat).all(1)
            unscaled = grad / self.scale.view(-1, *[1] * (grad.ndim - 1)).to(grad.dtype)
            # per sample, the latest finite gradient (a retry that overflows keeps the earlier one)
            result = unscaled if result is None else torch.where(finite.view(-1, *[1] * (grad.ndim - 1)), unscaled, result)
            overflow = ~finite & (self.scale > 1)
            grown = torch.minimum((self.scale * self.GROW).clamp(max=self.MAX), self.ceiling / self.BACKOFF)
            tiny = ((flat == 0).float().mean(1) > 0.5) | (flat.abs().amax(1) < _GROW_BELOW)  # zeros or near-subnormals
            underflow = finite & tiny & (grown > self.scale) & (grown < self.ceiling)
            self.ceiling = torch.where(overflow, torch.minimum(self.ceiling, self.scale), self.ceiling)
            self.scale = torch.where(overflow, (self.scale / self.BACKOFF).clamp(min=1.0), torch.where(underflow, grown, self.scale))
            if attempt == self.RETRIES or not bool((overflow | underflow).any()):  # one host sync per step, fp16 only
                break
        return result


# -- the first layer that sees pixels, in fp32 -----------------------------------------------------
class Float32Input:
    """Mixin of the pixel layer: its parameters are kept in fp32 and it computes in fp32 (input and
    weights upcast) under autocast and in a model whose other weights are bf16 / fp16 (`load_encoder(
    dtype=...)`, `.to(torch.bfloat16)`), so a 0.25/255 change of a pixel reaches its output.

    `model_dtype` is the dtype the rest of the model computes in (set by `keep_pixel_layer_fp32`):
    outside autocast the output is cast to it, so the next layer gets what it expects. In an fp32
    model outside autocast it is the layer's own forward, bit for bit.
    """

    model_dtype: torch.dtype = torch.float32

    def forward(self, input: Tensor, *args, **kwargs):
        device = input.device.type
        # meta tensors (cost counting, `hf_ssl_robust.cost`) have no autocast state to ask about
        autocasting = device != "meta" and torch.is_autocast_enabled(device)
        weight = getattr(self, "weight", None)
        plain = not autocasting and self.model_dtype == torch.float32 and (weight is None or weight.dtype == torch.float32)
        if not input.is_floating_point() or plain:
            return super().forward(input, *args, **kwargs)
        with torch.autocast(device_type=device, enabled=False):
            if isinstance(self, nn.Conv2d):  # weights may be stored in bf16 (a later .to()): upcast them too
                bias = None if self.bias is None else self.bias.float()
                out = self._conv_forward(input.float(), self.weight.float(), bias)
            else:
                out = super().forward(input.float(), *args, **kwargs)
        # under autocast an fp32 model's pixel layer hands on fp32 (autocast casts per op); a bf16 / fp16
        # model gets its own dtype, after the layer has seen the exact pixels
        return out if autocasting and self.model_dtype == torch.float32 else out.to(self.model_dtype)


_FLOAT32_CLASSES: dict[type, type] = {}


def _float32_class(cls: type) -> type:
    if issubclass(cls, Float32Input):
        return cls
    if cls not in _FLOAT32_CLASSES:
        name = f"Float32Input{cls.__name__}"
        new = type(name, (Float32Input, cls), {"__module__": __name__, "__qualname__": name})
        globals()[name] = new  # importable by name, so modules stay picklable
        _FLOAT32_CLASSES[cls] = new
    return _FLOAT32_CLASSES[cls]


def find_pixel_layer(backbone: nn.Module, num_channels: int | None = None) -> tuple[str, nn.Module] | None:
    """`(name, module)` of the first layer that receives the pixels, or None.

    Every `transformers` vision family so far (ViT, DINOv2, DINOv3 ViT and ConvNeXt, ResNet, CLIP,
    SigLIP) starts with a convolution on the image channels (patch embedding or stem), and
    registers it first: the first `Conv2d` with `in_channels == num_channels` in module order.
    """
    if num_channels is None:
        num_channels = getattr(getattr(backbone, "config", None), "num_channels", 3) or 3
    for name, module in backbone.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == num_channels:
            return name, module
    return None


def keep_pixel_layer_fp32(backbone: nn.Module) -> str | None:
    """Make the backbone's pixel layer compute in fp32 (under autocast, and in a bf16 / fp16 model,
    whose pixel layer's parameters are upcast to fp32); returns its name.

    The layer's class is swapped for a subclass (same parameters and state-dict keys, so
    `save_pretrained` and `from_pretrained` are unaffected). Idempotent; call it again after
    changing the model's dtype (`PixelEncoder` does, in `.to()` / `.float()` / `.bfloat16()`).
    """
    found = find_pixel_layer(backbone)
    if found is None:
        logger.warning(f"No pixel layer (a Conv2d on the image channels) found in {type(backbone).__name__}: "
                       "under mixed precision its first layer would round small perturbations away.")
        return None
    name, module = found
    module.__class__ = _float32_class(type(module))
    module.model_dtype = _model_dtype(backbone, module)
    if any(p.is_floating_point() and p.dtype != torch.float32 for p in module.parameters(recurse=False)):
        module.float()  # a bf16 / fp16 model: the pixel layer's own weights stay fp32
    _cast_pixel_dtype_tables(backbone, module)
    return name


def _cast_pixel_dtype_tables(backbone: nn.Module, pixel_layer: nn.Module) -> None:
    """DINOv3 ViT builds its RoPE tables in the dtype of the pixels it is given, which transformers
    takes from the pixel layer's weights (now fp32): cast them to the model's dtype, or a bf16 model's
    attention would get fp32 queries and keys with bf16 values. Idempotent."""
    rope = getattr(backbone, "rope_embeddings", None)
    if rope is None:
        return
    rope.model_dtype = pixel_layer.model_dtype
    if not getattr(rope, "_hf_ssl_robust_cast", False):
        rope.register_forward_hook(_tables_to_model_dtype)  # a module-level function: picklable, deep-copyable
        rope._hf_ssl_robust_cast = True


def _tables_to_model_dtype(module: nn.Module, inputs, output):
    dtype = getattr(module, "model_dtype", torch.float32)
    return output if dtype == torch.float32 else tuple(t.to(dtype) for t in output)


def _model_dtype(backbone: nn.Module, pixel_layer: nn.Module) -> torch.dtype:
    """The dtype of most of the backbone's floating parameters outside the pixel layer (fp32 if none)."""
    own = {id(p) for p in pixel_layer.parameters()}
    counts: dict[torch.dtype, int] = {}
    for p in backbone.parameters():
        if id(p) not in own and p.is_floating_point():
            counts[p.dtype] = counts.get(p.dtype, 0) + p.numel()
    return max(counts, key=counts.get) if counts else torch.float32
