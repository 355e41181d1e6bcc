"""Self-supervised vision encoders that take [0, 1] pixels.

`load_encoder` wraps any `transformers` ViT-style backbone with a CLS token (DINO v1 `ViTModel`,
DINOv2 `Dinov2Model`, DINOv2 with registers) into a `PixelEncoder`: images go in as float tensors
`[B, 3, H, W]` in [0, 1], normalisation happens inside, and the output carries the CLS token and
the patch tokens after the final layer norm (register tokens dropped). Attacks never see mean/std.

Example:
    >>> encoder = load_encoder("dinov2-small")          # preset name, Hub id or local folder
    >>> out = encoder(torch.rand(2, 3, 224, 224))
    >>> out.cls.shape, out.patches.shape, out.grid        # [2, 384], [2, 256, 384], (16, 16)
"""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, PreTrainedModel, ViTModel
from transformers.utils import ModelOutput

from .precision import keep_pixel_layer_fp32

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Short names for the encoders of the paper (and a registers variant). Bundled tiny encoders add
# themselves to BUNDLED (name -> folder inside the package) once they exist.
PRESETS: dict[str, str] = {
    "dinov2-small": "facebook/dinov2-small",
    "dinov2-base": "facebook/dinov2-base",
    "dinov2-large": "facebook/dinov2-large",
    "dinov2-small-reg": "facebook/dinov2-with-registers-small",
    "dino-vits16": "facebook/dino-vits16",
    "dino-vitb16": "facebook/dino-vitb16",
}
ASSETS_DIR = Path(__file__).parent / "assets"
# Input resolution the paper uses for each family (224 for DINO v1, 518 for DINOv2).
PAPER_IMAGE_SIZE = {"vit": 224, "dinov2": 518, "dinov2_with_registers": 518}


def bundled_encoders() -> dict[str, Path]:
    """Tiny pretrained encoders shipped inside the package: name -> folder."""
    if not ASSETS_DIR.is_dir():
        return {}
    return {p.name: p for p in sorted(ASSETS_DIR.iterdir()) if (p / "config.json").is_file()}


class EncoderNotFoundError(OSError):
    """An encoder name that is neither a local folder, a cached Hub model nor downloadable."""


@dataclass
class EncoderOutput(ModelOutput):
    """Tokens of a `PixelEncoder`.

    Attributes:
        cls: `[B, D]` CLS token.
        patches: `[B, h*w, D]` patch tokens in row-major grid order (register tokens dropped).
        grid: `(h, w)` patch grid.
    """

    cls: Tensor | None = None
    patches: Tensor | None = None
    grid: tuple[int, int] | None = None

    def patch_grid(self) -> Tensor:
        """Patch tokens as a feature map `[B, D, h, w]`."""
        b, _, d = self.patches.shape
        return self.patches.transpose(1, 2).reshape(b, d, *self.grid)


class PixelEncoder(nn.Module):
    """A ViT backbone that takes [0, 1] pixels and normalises them itself.

    Args:
        backbone: a `transformers` vision model whose `last_hidden_state` is
            `[CLS, registers..., patches...]` (ViTModel, Dinov2Model, Dinov2WithRegistersModel).
        mean, std: per-channel normalisation applied inside `forward` (ImageNet by default; the
            processor configs of some Hub checkpoints have been wrong, so they are not trusted).
        pre_norm: return the last block's tokens *before* the final layer norm by default (the
            depth head of the paper reads those). Can be overridden per call.

    Under autocast the backbone's first layer that sees pixels (`pixel_layer`, found per backbone
    by `precision.find_pixel_layer`) still computes in fp32, so perturbations of 1/255 survive.
    """

    def __init__(
        self,
        backbone: PreTrainedModel,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        pre_norm: bool = False,
    ):
        super().__init__()
        config = backbone.config
        for attr in ("hidden_size", "patch_size"):
            if not hasattr(config, attr):
                raise ValueError(
                    f"{type(backbone).__name__} has no `config.{attr}`: load_encoder supports ViT-style "
                    "backbones with a CLS token (ViTModel, Dinov2Model, Dinov2WithRegistersModel)."
                )
        self.backbone = backbone
        self.pre_norm = pre_norm
        self.pixel_layer = keep_pixel_layer_fp32(backbone)  # its name in the backbone
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @property
    def config(self):
        return self.backbone.config

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def patch_size(self) -> int:
        p = self.config.patch_size
        return p[0] if isinstance(p, (tuple, list)) else p

    @property
    def num_register_tokens(self) -> int:
        return int(getattr(self.config, "num_register_tokens", 0) or 0)

    @property
    def name_or_path(self) -> str:
        return getattr(self.config, "_name_or_path", "") or ""

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """Patch grid for an input of this size (the patch convolution floors partial patches)."""
        return height // self.patch_size, width // self.patch_size

    def normalize(self, pixels: Tensor) -> Tensor:
        return (pixels - self.mean.to(pixels.dtype)) / self.std.to(pixels.dtype)

    def forward(self, pixels: Tensor, pre_norm: bool | None = None) -> EncoderOutput:
        """Encode `[B, 3, H, W]` pixels in [0, 1] (any H, W of at least one patch)."""
        check_pixels(pixels, min_size=self.patch_size)
        pre_norm = self.pre_norm if pre_norm is None else pre_norm
        kwargs = {"output_hidden_states": True} if pre_norm else {}
        if self.config.model_type == "vit":  # DINOv2 always interpolates; ViT needs the flag
            kwargs["interpolate_pos_encoding"] = True
        out = self.backbone(pixel_values=self.normalize(pixels), **kwargs)
        tokens = out.hidden_states[-1] if pre_norm else out.last_hidden_state  # [B, 1+R+h*w, D]
        grid = self.grid_size(pixels.shape[-2], pixels.shape[-1])
        return EncoderOutput(cls=tokens[:, 0], patches=tokens[:, 1 + self.num_register_tokens :], grid=grid)

    def save_pretrained(self, path: str | os.PathLike, **kwargs) -> None:
        """Save the backbone alone, so that `AutoModel.from_pretrained(path)` loads it as-is."""
        self.backbone.save_pretrained(path, safe_serialization=True, **kwargs)


def check_pixels(pixels: Tensor, min_size: int = 1) -> None:
    """Raise a clear error unless `pixels` is a float `[B, 3, H, W]` tensor (no host sync)."""
    if not isinstance(pixels, Tensor):
        raise TypeError(f"Expected a torch.Tensor of pixels, got {type(pixels).__name__}.")
    if pixels.ndim != 4 or pixels.shape[1] != 3:
        raise ValueError(
            f"Expected pixels of shape [B, 3, H, W], got {tuple(pixels.shape)}. Add a batch axis with "
            "`x[None]` and convert grayscale/RGBA images to RGB."
        )
    if not pixels.is_floating_point():
        raise ValueError(
            f"Expected float pixels in [0, 1], got dtype {pixels.dtype}. Convert uint8 images with "
            "`x.float() / 255`."
        )
    if min(pixels.shape[-2:]) < min_size:
        raise ValueError(f"Image of size {tuple(pixels.shape[-2:])} is smaller than one {min_size}px patch.")


def resolve_encoder_name(name_or_path: str) -> str:
    """Preset name -> Hub id, bundled name -> folder; anything else is returned unchanged."""
    bundled = bundled_encoders()
    if name_or_path in bundled:
        return str(bundled[name_or_path])
    return PRESETS.get(name_or_path, name_or_path)


def load_encoder(
    name_or_path: str | os.PathLike | nn.Module,
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
    pre_norm: bool = False,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    dtype: torch.dtype | None = None,
) -> PixelEncoder:
    """Load an encoder that takes [0, 1] pixels.

    Args:
        name_or_path: a preset (`dinov2-small`, `dino-vitb16`, ...; see `PRESETS`), a bundled
            tiny encoder, a Hub id, a local folder written by `save_pretrained`, or an already
            built module (`PixelEncoder` is returned as-is, a `transformers` backbone is wrapped).
        revision: Hub revision.
        trust_remote_code: allow custom modelling code from the Hub (off unless asked for).
        pre_norm: default to the last block's tokens before the final layer norm.
        mean, std: normalisation applied inside the encoder.
        dtype: parameter dtype (default: float32).

    Returns:
        A `PixelEncoder` in eval mode.
    """
    if isinstance(name_or_path, PixelEncoder):
        return name_or_path
    if isinstance(name_or_path, nn.Module):
        return PixelEncoder(name_or_path, mean=mean, std=std, pre_norm=pre_norm).eval()

    name = str(name_or_path)
    resolved = resolve_encoder_name(name)
    kwargs = dict(revision=revision, trust_remote_code=trust_remote_code)
    if not Path(resolved).exists() and not hub_offline():
        # Without this, an unreachable Hub costs ~30 s of retries per call before failing.
        if not hub_reachable():
            kwargs["local_files_only"] = True
    try:
        config = AutoConfig.from_pretrained(resolved, **kwargs)
        model_kwargs = dict(kwargs, config=config, use_safetensors=True)
        if dtype is not None:
            model_kwargs["dtype"] = dtype
        if config.model_type == "vit":
            # DINO v1 checkpoints were converted without a pooler; the default one is random.
            backbone = ViTModel.from_pretrained(resolved, add_pooling_layer=False, **model_kwargs)
        else:
            backbone = AutoModel.from_pretrained(resolved, **model_kwargs)
    except (OSError, ValueError) as err:
        raise _not_found_error(name, resolved, err) from err
    return PixelEncoder(backbone, mean=mean, std=std, pre_norm=pre_norm).eval()


def hub_offline() -> bool:
    """True when the user asked `huggingface_hub` not to use the network."""
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connection to the Hub endpoint (cached for the process)."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _not_found_error(name: str, resolved: str, err: Exception) -> EncoderNotFoundError:
    offline = hub_offline() or not hub_reachable()
    tried = [f"a local folder {resolved!r} (no such folder)" if not Path(resolved).exists() else f"the folder {resolved!r}"]
    if not Path(resolved).exists():
        tried.append(f"the Hub model {resolved!r} in the local cache")
        if hub_offline():
            tried.append("downloading it (skipped: HF_HUB_OFFLINE=1)")
        else:
            tried.append("downloading it (the Hub is unreachable from here)" if offline else "downloading it from the Hub")
    return EncoderNotFoundError(
        f"Could not load encoder {name!r}. Tried: {'; '.join(tried)}.\n"
        f"Cause: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}\n"
        "Fix: pass a folder written by `save_pretrained` (config.json + model.safetensors), one of the "
        f"presets {sorted(PRESETS)} or bundled encoders {sorted(bundled_encoders())}, or download the "
        f"model once with network access (`huggingface-cli download {resolved}`) so that it is in the "
        "cache; with no network, set HF_HUB_OFFLINE=1 to fail fast."
    )
