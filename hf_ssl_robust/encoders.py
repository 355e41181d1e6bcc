"""Self-supervised vision encoders that take [0, 1] pixels.

`load_encoder` wraps a `transformers` backbone of a registered **family** (`FAMILIES`: ViT-style
models with a CLS token, i.e. DINO v1 `ViTModel`, DINOv2 `Dinov2Model` and DINOv2 with registers;
and `ResNetModel`, DINO's convolutional family) into a `PixelEncoder`: images go in as float
tensors `[B, 3, H, W]` in [0, 1], normalisation happens inside, and the output carries the global
token (CLS after the final layer norm, or the pooled feature) and the patch tokens (register
tokens dropped; a conv net's last feature map in row-major order). Attacks never see mean/std.

Example:
    >>> encoder = load_encoder("dinov2-small")          # preset name, Hub id or local folder
    >>> out = encoder(torch.rand(2, 3, 224, 224))
    >>> out.cls.shape, out.patches.shape, out.grid        # [2, 384], [2, 256, 384], (16, 16)
"""

from __future__ import annotations

import base64
import functools
import os
import socket
import ssl
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import unquote, urlparse

import torch
import torch.nn.functional as F
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


# --- backbone families ------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """How one backbone family becomes a `PixelEncoder`.

    Attributes:
        name: what error messages call it.
        model_types: the `config.model_type` values it covers.
        hidden_size, stride: `config -> int`; the token width and the pixel stride of one patch token.
        tokens: `(backbone, normalised pixels, pre_norm) -> (global [B, D], patches [B, h*w, D], (h, w))`.
        pad: pad inputs (centred, with the mean) to a multiple of the stride before encoding, as
            the heads do (a conv net sees every pixel); otherwise partial patches are floored away.
        paper_image_size: the input resolution the paper uses for this family.
        mean, std: its normalisation (never read from a processor config).
        load_kwargs: extra `from_pretrained` / `from_config` arguments.
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


def _vit_tokens(backbone, pixels: Tensor, pre_norm: bool):
    kwargs = {"output_hidden_states": True} if pre_norm else {}
    if backbone.config.model_type == "vit":  # DINOv2 always interpolates; ViT needs the flag
        kwargs["interpolate_pos_encoding"] = True
    out = backbone(pixel_values=pixels, **kwargs)
    tokens = out.hidden_states[-1] if pre_norm else out.last_hidden_state  # [B, 1+R+h*w, D]
    registers = int(getattr(backbone.config, "num_register_tokens", 0) or 0)
    p = _vit_patch(backbone.config)
    return tokens[:, 0], tokens[:, 1 + registers :], (pixels.shape[-2] // p, pixels.shape[-1] // p)


def _vit_patch(config) -> int:
    p = config.patch_size
    return p[0] if isinstance(p, (tuple, list)) else p


def _resnet_tokens(backbone, pixels: Tensor, pre_norm: bool):
    # No final norm in a ResNet: its pre-norm tokens are its tokens.
    out = backbone(pixel_values=pixels)
    fmap = out.last_hidden_state  # [B, D, h, w]
    return out.pooler_output.flatten(1), fmap.flatten(2).transpose(1, 2), tuple(fmap.shape[-2:])


def _resnet_stride(config) -> int:
    # stem: stride-2 conv + stride-2 max pool; every stage after the first halves the map again
    return 4 * 2 ** (len(config.depths) - 1) * (2 if config.downsample_in_first_stage else 1)


FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Add a family to the registry (one entry per `model_type`)."""
    for model_type in family.model_types:
        FAMILIES[model_type] = family
    return family


register_family(Family(
    "ViT with a CLS token (DINO v1 ViTModel, DINOv2, DINOv2 with registers)", ("vit", "dinov2", "dinov2_with_registers"),
    hidden_size=lambda c: c.hidden_size, stride=_vit_patch, tokens=_vit_tokens, pad=False, paper_image_size=518,
    # DINO v1 checkpoints were converted without a pooler; the default one is random.
    load_kwargs=lambda c: {"add_pooling_layer": False} if c.model_type == "vit" else {},
))
register_family(Family(
    "ResNet (ResNetModel: pooled feature + last feature map)", ("resnet",),
    hidden_size=lambda c: c.hidden_sizes[-1], stride=_resnet_stride, tokens=_resnet_tokens, pad=True, paper_image_size=224,
))
# Input resolution the paper uses for each family (224 for DINO v1, 518 for DINOv2).
PAPER_IMAGE_SIZE = {t: f.paper_image_size for t, f in FAMILIES.items()} | {"vit": 224}


def get_family(config) -> Family:
    """The family of a backbone config; a clear error listing the supported ones otherwise."""
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        names = "; ".join(sorted({f"{f.name} [{', '.join(f.model_types)}]" for f in FAMILIES.values()}))
        raise ValueError(
            f"Unsupported encoder family {model_type!r} ({type(config).__name__}). load_encoder supports: {names}. "
            "Pick a checkpoint of one of these, or register a new family with `register_family`."
        )
    return FAMILIES[model_type]


def centre_pad(pixels: Tensor, multiple: int, fill: Tensor | None = None) -> tuple[Tensor, tuple[int, int, int, int]]:
    """Pad `[B, 3, H, W]` symmetrically so that H and W are multiples of `multiple`.

    Args:
        fill: per-channel fill value `[1, 3, 1, 1]` (default 0); the heads pass the encoder mean,
            i.e. zero after normalisation, as the reference implementation pads normalised images.

    Returns:
        The padded pixels and `(top, bottom, left, right)`.
    """
    h, w = pixels.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    pad = (ph // 2, ph - ph // 2, pw // 2, pw - pw // 2)
    if ph == 0 and pw == 0:
        return pixels, pad
    fill = torch.zeros((), dtype=pixels.dtype, device=pixels.device) if fill is None else fill.to(pixels.dtype)
    # F.pad takes (left, right, top, bottom) for the last two axes.
    return F.pad(pixels - fill, (pad[2], pad[3], pad[0], pad[1])) + fill, pad


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
    """A backbone of a registered family that takes [0, 1] pixels and normalises them itself.

    Args:
        backbone: a `transformers` vision model of one of `FAMILIES` (ViTModel, Dinov2Model,
            Dinov2WithRegistersModel, ResNetModel).
        mean, std: per-channel normalisation applied inside `forward` (default: the family's, i.e.
            ImageNet; the processor configs of some Hub checkpoints have been wrong, so they are
            not trusted).
        pre_norm: return the tokens *before* the final layer norm by default (the depth head of
            the paper reads those; a family without a final norm returns its tokens). Can be
            overridden per call.

    Under autocast the backbone's first layer that sees pixels (`pixel_layer`, found per backbone
    by `precision.find_pixel_layer`) still computes in fp32, so perturbations of 1/255 survive.
    """

    def __init__(
        self,
        backbone: PreTrainedModel,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
        pre_norm: bool = False,
    ):
        super().__init__()
        self.family = get_family(backbone.config)
        self.backbone = backbone
        self.pre_norm = pre_norm
        self.pixel_layer = keep_pixel_layer_fp32(backbone)  # its name in the backbone
        mean, std = mean or self.family.mean, std or self.family.std
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @property
    def config(self):
        return self.backbone.config

    @property
    def hidden_size(self) -> int:
        return self.family.hidden_size(self.config)

    @property
    def patch_size(self) -> int:
        """Pixels per token along each side (a conv net's total stride)."""
        return self.family.stride(self.config)

    @property
    def num_register_tokens(self) -> int:
        return int(getattr(self.config, "num_register_tokens", 0) or 0)

    @property
    def name_or_path(self) -> str:
        return getattr(self.config, "_name_or_path", "") or ""

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """Token grid for an input of this size (ViTs floor partial patches; padded families round up)."""
        p = self.patch_size
        if self.family.pad:
            return -(-height // p), -(-width // p)
        return height // p, width // p

    def normalize(self, pixels: Tensor) -> Tensor:
        return (pixels - self.mean.to(pixels.dtype)) / self.std.to(pixels.dtype)

    def forward(self, pixels: Tensor, pre_norm: bool | None = None) -> EncoderOutput:
        """Encode `[B, 3, H, W]` pixels in [0, 1] (any H, W of at least one patch)."""
        check_pixels(pixels, min_size=1 if self.family.pad else self.patch_size)
        pre_norm = self.pre_norm if pre_norm is None else pre_norm
        if self.family.pad:  # same padding as the heads: a no-op on what they pass in
            pixels, _ = centre_pad(pixels, self.patch_size, fill=self.mean)
        cls, patches, grid = self.family.tokens(self.backbone, self.normalize(pixels), pre_norm)
        return EncoderOutput(cls=cls, patches=patches, grid=tuple(int(g) for g in grid))

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
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
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
        mean, std: normalisation applied inside the encoder (default: the family's).
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
    except (OSError, ValueError) as err:
        raise _not_found_error(name, resolved, err) from err
    family = get_family(config)  # an unsupported family is refused before any weights load
    try:
        model_kwargs = dict(kwargs, config=config, use_safetensors=True, **family.load_kwargs(config))
        if dtype is not None:
            model_kwargs["dtype"] = dtype
        model_class = ViTModel if config.model_type == "vit" else AutoModel
        backbone = model_class.from_pretrained(resolved, **model_kwargs)
    except (OSError, ValueError) as err:
        raise _not_found_error(name, resolved, err) from err
    return PixelEncoder(backbone, mean=mean, std=std, pre_norm=pre_norm).eval()


def hub_offline() -> bool:
    """True when the user asked `huggingface_hub` not to use the network."""
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub endpoint accepts a connection from here, through the proxy if one is set.

    Honours the proxy variables that `huggingface_hub`'s HTTP client reads: ``HTTPS_PROXY`` /
    ``HTTP_PROXY`` (by the endpoint's scheme), ``ALL_PROXY`` and ``NO_PROXY``, upper or lower case.
    Without a proxy (or when ``NO_PROXY`` covers the host) it opens a TCP connection to the host;
    through an HTTP(S) proxy it asks for a tunnel (``CONNECT host:port``) and counts a 2xx answer,
    which a proxy gives only once it has reached the host. A SOCKS proxy is only checked to accept
    a connection. Offline-safe: any failure, or no answer within ``timeout`` seconds in all, is
    False. Cached for the process (``hub_reachable.cache_clear()`` checks again).
    """
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    proxies = urllib.request.getproxies()  # the environment (plus the OS settings on macOS / Windows)
    proxy = proxies.get(url.scheme) or proxies.get("all")
    deadline = time.monotonic() + timeout
    try:
        if not proxy or urllib.request.proxy_bypass(host):
            with socket.create_connection((host, port), timeout=timeout):
                return True
        return _proxy_tunnel_opens(urlparse(proxy if "://" in proxy else f"http://{proxy}"), host, port, deadline)
    except (OSError, ValueError):  # ssl errors and timeouts are OSErrors; ValueError: a malformed proxy URL
        return False


def _proxy_tunnel_opens(via, host: str, port: int, deadline: float) -> bool:
    """Ask the proxy ``via`` (a parsed URL) for a tunnel to ``host:port``; True on a 2xx status line."""
    via_port = via.port or {"http": 80, "https": 443}.get(via.scheme, 1080)
    sock = socket.create_connection((via.hostname, via_port), timeout=max(deadline - time.monotonic(), 0.001))
    try:
        if via.scheme not in ("http", "https"):
            return True  # SOCKS: a tunnel would need the SOCKS protocol; the proxy at least answers
        if via.scheme == "https":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=via.hostname)
        auth = ""
        if via.username:
            token = base64.b64encode(f"{unquote(via.username)}:{unquote(via.password or '')}".encode()).decode()
            auth = f"Proxy-Authorization: Basic {token}\r\n"
        sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}\r\n".encode())
        reply = b""
        while b"\r\n" not in reply and len(reply) < 4096:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    finally:
        sock.close()
    status = reply.split(b"\r\n", 1)[0].split()  # e.g. [b"HTTP/1.1", b"200", b"Connection", b"established"]
    return len(status) >= 2 and status[0].startswith(b"HTTP/") and status[1].startswith(b"2")


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
