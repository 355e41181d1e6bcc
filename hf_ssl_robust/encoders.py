"""Self-supervised vision encoders that take [0, 1] pixels.

`load_encoder` wraps a `transformers` backbone of a registered **family** (`FAMILIES`, defined in
`families.py`: DINO v1 `ViTModel`, DINOv2 (+ registers), DINOv3 ViT and ConvNeXt, ResNet, CLIP and
SigLIP vision towers) into a `PixelEncoder`: images go in as float tensors `[B, 3, H, W]` in [0, 1],
normalisation happens inside, and the output carries the global token (CLS after the final norm, or
the family's pooled token) and the patch tokens (register tokens dropped; a conv net's last feature
map in row-major order). Attacks never see mean/std. `PRESETS` name the paper's encoders and
today's common ones (DINOv3, CLIP, a robust CLIP, SigLIP) with their constants.

Example:
    >>> encoder = load_encoder("dinov2-small")          # preset name, Hub id or local folder
    >>> out = encoder(torch.rand(2, 3, 224, 224))
    >>> out.cls.shape, out.patches.shape, out.grid        # [2, 384], [2, 256, 384], (16, 16)
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import socket
import ssl
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers.utils import ModelOutput

from .families import (  # noqa: F401  (re-exported: the registry's public home is `encoders`)
    CLIP_MEAN,
    CLIP_STD,
    FAMILIES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SIGLIP_MEAN,
    SIGLIP_STD,
    Family,
    get_family,
    register_family,
)
from .precision import keep_pixel_layer_fp32

# Short names for the encoders of the paper and of the families added since, with the constants
# `load_encoder` applies for them (`ENCODER_PRESETS`); `PRESETS` is the plain name -> Hub id view.
# Bundled tiny encoders add themselves to BUNDLED (name -> folder) once they exist.


@dataclass(frozen=True)
class Preset:
    """A named checkpoint and the normalisation to use for it when it differs from its family's.

    Example:
        >>> Preset("facebook/dinov3-vitl16-pretrain-sat493m", mean=SAT_MEAN, std=SAT_STD)
    """

    hub_id: str
    mean: tuple[float, float, float] | None = None  # None: the family's
    std: tuple[float, float, float] | None = None


# DINOv3's satellite (SAT-493M) checkpoints were trained with their own constants (the DINOv3 README's
# transform for them); its web (LVD-1689M) checkpoints use ImageNet's.
SAT_MEAN = (0.430, 0.411, 0.296)
SAT_STD = (0.213, 0.156, 0.143)

ENCODER_PRESETS: dict[str, Preset] = {
    "dinov2-small": Preset("facebook/dinov2-small"),
    "dinov2-base": Preset("facebook/dinov2-base"),
    "dinov2-large": Preset("facebook/dinov2-large"),
    "dinov2-small-reg": Preset("facebook/dinov2-with-registers-small"),
    "dino-vits16": Preset("facebook/dino-vits16"),
    "dino-vitb16": Preset("facebook/dino-vitb16"),
    # DINOv3 (gated on the Hub: accept the licence on the model page, then log in)
    "dinov3-vits16": Preset("facebook/dinov3-vits16-pretrain-lvd1689m"),
    "dinov3-vitb16": Preset("facebook/dinov3-vitb16-pretrain-lvd1689m"),
    "dinov3-vitl16": Preset("facebook/dinov3-vitl16-pretrain-lvd1689m"),
    "dinov3-convnext-tiny": Preset("facebook/dinov3-convnext-tiny-pretrain-lvd1689m"),
    "dinov3-convnext-small": Preset("facebook/dinov3-convnext-small-pretrain-lvd1689m"),
    "dinov3-vitl16-sat": Preset("facebook/dinov3-vitl16-pretrain-sat493m", mean=SAT_MEAN, std=SAT_STD),
    # CLIP, and a robust CLIP fine-tuned from it (FARE, Schlarmann et al. 2024): OpenAI CLIP's constants
    "clip-vitb16": Preset("openai/clip-vit-base-patch16", mean=CLIP_MEAN, std=CLIP_STD),
    "clip-vitl14": Preset("openai/clip-vit-large-patch14", mean=CLIP_MEAN, std=CLIP_STD),
    "clip-vitl14-fare2": Preset("LEAF-CLIP/CLIP-ViT-L-FARE2", mean=CLIP_MEAN, std=CLIP_STD),
    "siglip-base16-224": Preset("google/siglip-base-patch16-224", mean=SIGLIP_MEAN, std=SIGLIP_STD),
}
PRESETS: dict[str, str] = {name: preset.hub_id for name, preset in ENCODER_PRESETS.items()}
ASSETS_DIR = Path(__file__).parent / "assets"
ENCODER_CONFIG_FILE = "encoder_config.json"  # beside config.json: the normalisation `PixelEncoder` used


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


class GatedEncoderError(EncoderNotFoundError):
    """A gated Hub repo (e.g. DINOv3) whose licence this account has not accepted, or no token is set."""


@dataclass
class EncoderOutput(ModelOutput):
    """Tokens of a `PixelEncoder`.

    Attributes:
        cls: `[B, D]` global token: CLS after the final norm, or the family's pooled token (see `families.py`).
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
            Dinov2WithRegistersModel, DINOv3ViTModel, DINOv3ConvNextModel, ResNetModel,
            CLIPVisionModel, SiglipVisionModel).
        mean, std: per-channel normalisation applied inside `forward` (default: the family's,
            ImageNet, CLIP's or SigLIP's; the processor configs of some Hub checkpoints have been
            wrong, so they are not trusted).
        pre_norm: return the tokens *before* the final layer norm by default (the depth head of
            the paper reads those; a family without a final norm returns its tokens). Can be
            overridden per call.

    Under autocast, and with bf16 / fp16 weights, the backbone's first layer that sees pixels
    (`pixel_layer`, found per backbone by `precision.find_pixel_layer`) keeps fp32 parameters and
    computes in fp32, so perturbations of 1/255 survive.
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
        if self.family.backbone_config(backbone.config) is not backbone.config:
            raise ValueError(
                f"{type(backbone).__name__} is a full image-text model: pass its vision tower (`model.vision_model`), "
                "or the checkpoint's folder / Hub id to `load_encoder`, which loads the vision tower alone."
            )
        self.backbone = backbone
        self.pre_norm = pre_norm
        self.pixel_layer = keep_pixel_layer_fp32(backbone)  # its name in the backbone
        mean, std = mean or self.family.mean, std or self.family.std
        self.image_mean, self.image_std = tuple(float(v) for v in mean), tuple(float(v) for v in std)  # as saved
        device = next(backbone.parameters(), torch.empty(0)).device  # cpu-ok: a fallback for a parameter-free backbone
        # on the backbone's device: wrapping a backbone already on the GPU must give a GPU encoder
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1), persistent=False)

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

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        if self.pixel_layer is not None:  # `.to(torch.bfloat16)` and the like: the pixel layer stays fp32
            keep_pixel_layer_fp32(self.backbone)
        return self

    def save_pretrained(self, path: str | os.PathLike, **kwargs) -> None:
        """Save the backbone alone, so that `AutoModel.from_pretrained(path)` loads it as-is, and the
        normalisation it uses in `encoder_config.json` (`image_mean`, `image_std`), which
        `load_encoder(path)` applies: a preset's own constants (e.g. DINOv3 SAT's) survive the save."""
        self.backbone.save_pretrained(path, safe_serialization=True, **kwargs)
        settings = {"image_mean": list(self.image_mean), "image_std": list(self.image_std)}
        (Path(path) / ENCODER_CONFIG_FILE).write_text(json.dumps(settings, indent=2) + "\n")


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
        name_or_path: a preset (`dinov2-small`, `dinov3-vitb16`, `clip-vitb16`, ...; see `PRESETS`), a bundled
            tiny encoder, a Hub id, a local folder written by `save_pretrained`, or an already
            built module (`PixelEncoder` is returned as-is, a `transformers` backbone is wrapped).
        revision: Hub revision.
        trust_remote_code: allow custom modelling code from the Hub (off unless asked for).
        pre_norm: default to the last block's tokens before the final layer norm.
        mean, std: normalisation applied inside the encoder (default: the preset's, else the one
            saved in the folder / repo's `encoder_config.json` by `PixelEncoder.save_pretrained`,
            else the family's).
        dtype: parameter dtype (default: float32). The pixel layer (patch embedding or conv stem)
            keeps fp32 parameters and computes in fp32 whatever `dtype`, so small perturbations survive.

    Returns:
        A `PixelEncoder` in eval mode.
    """
    if isinstance(name_or_path, PixelEncoder):
        return name_or_path
    if isinstance(name_or_path, nn.Module):
        return PixelEncoder(name_or_path, mean=mean, std=std, pre_norm=pre_norm).eval()

    name = str(name_or_path)
    resolved = resolve_encoder_name(name)
    preset = ENCODER_PRESETS.get(name) or next((p for p in ENCODER_PRESETS.values() if p.hub_id in (name, resolved)), None)
    mean, std = mean or getattr(preset, "mean", None), std or getattr(preset, "std", None)
    kwargs = dict(revision=revision, trust_remote_code=trust_remote_code)
    if not Path(resolved).exists() and not hub_offline():
        # Without this, an unreachable Hub costs ~30 s of retries per call before failing.
        if not hub_reachable():
            kwargs["local_files_only"] = True
    try:
        config = AutoConfig.from_pretrained(resolved, **kwargs)
    except (OSError, ValueError) as err:
        raise _load_error(name, resolved, err) from err
    family = get_family(config)  # an unsupported family is refused before any weights load
    if mean is None or std is None:
        saved = _saved_normalisation(resolved, kwargs)
        mean, std = mean or saved.get("image_mean"), std or saved.get("image_std")
    tower = family.backbone_config(config)  # e.g. a full CLIPModel checkpoint: its vision tower only
    try:
        model_kwargs = dict(kwargs, config=tower, use_safetensors=True, **family.load_kwargs(tower))
        if dtype is not None:
            model_kwargs["dtype"] = dtype
        with _text_tower_keys_expected(tower if tower is not config else None):
            backbone = AutoModel.from_pretrained(resolved, **model_kwargs)
    except (OSError, ValueError) as err:
        raise _load_error(name, resolved, err) from err
    encoder = PixelEncoder(backbone, mean=mean, std=std, pre_norm=pre_norm).eval()
    encoder.revision = revision  # what a lean head pins (heads/lean.py), with the commit it resolves to
    return encoder


def _saved_normalisation(resolved: str, kwargs: dict) -> dict:
    """`encoder_config.json` of a folder or Hub repo (`{}` if it has none): checked, as tuples."""
    from transformers.utils import cached_file

    hub = {k: kwargs[k] for k in ("revision", "local_files_only") if k in kwargs}
    path = cached_file(resolved, ENCODER_CONFIG_FILE, _raise_exceptions_for_missing_entries=False,
                       _raise_exceptions_for_connection_errors=False, **hub)
    if path is None:
        return {}
    try:
        saved = json.loads(Path(path).read_text())
        out = {k: tuple(float(v) for v in saved[k]) for k in ("image_mean", "image_std") if k in saved}
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path!r} is not a valid {ENCODER_CONFIG_FILE}: {err}. Fix or delete it (or pass mean= / std=).") from err
    bad = {k: v for k, v in out.items() if len(v) != 3 or (k == "image_std" and min(v) <= 0)}
    if bad:
        raise ValueError(f"{path!r}: {bad} must be 3 values (std > 0). Fix or delete it (or pass mean= / std=).")
    return out


@contextlib.contextmanager
def _text_tower_keys_expected(tower_config):
    """While loading a vision tower from a full image-text checkpoint, its other weights (text tower,
    projections, logit scale) are expected leftovers, not a load problem: keep them out of transformers'
    load report (which would list every text-tower key as UNEXPECTED). Missing vision keys still show."""
    if tower_config is None:
        yield
        return
    model_class = AutoModel._model_mapping[type(tower_config)]
    before = model_class.__dict__.get("_keys_to_ignore_on_load_unexpected", _UNSET)
    model_class._keys_to_ignore_on_load_unexpected = [*(getattr(model_class, "_keys_to_ignore_on_load_unexpected", None) or []),
                                                      r"^(?!vision_model\.)"]
    try:
        yield
    finally:
        if before is _UNSET:
            del model_class._keys_to_ignore_on_load_unexpected
        else:
            model_class._keys_to_ignore_on_load_unexpected = before


_UNSET = object()


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


def _load_error(name: str, resolved: str, err: Exception) -> EncoderNotFoundError:
    """The error to raise for a failed config or weights load: gated-repo access, or not found."""
    if _is_access_denied(err):
        return GatedEncoderError(
            f"Could not load encoder {name!r}: the Hub refused access to {resolved!r} (a gated repo, such as DINOv3's, "
            "needs its licence accepted and a login).\n"
            f"Fix: accept its licence on https://huggingface.co/{resolved} (logged in to the Hub), then log in here "
            "with `hf auth login` or set HF_TOKEN to a token of that account, and run again."
        )
    return _not_found_error(name, resolved, err)


def _is_access_denied(err: BaseException | None) -> bool:
    """True if a gated-repo error (or another HTTP 401/403) is anywhere in the exception chain.

    A missing or private repo also answers 401 without a token, but as `RepositoryNotFoundError`:
    that stays a not-found error.
    """
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, GatedRepoError):
            return True
        if isinstance(err, RepositoryNotFoundError):
            return False
        if isinstance(err, HfHubHTTPError) and getattr(err.response, "status_code", None) in (401, 403):
            return True
        err = err.__cause__ or err.__context__
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
    from .suggestions import did_you_mean

    hint = "" if "/" in name or Path(name).exists() else did_you_mean(name, [*PRESETS, *bundled_encoders()])
    return EncoderNotFoundError(
        f"Could not load encoder {name!r}{hint}. Tried: {'; '.join(tried)}.\n"
        f"Cause: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}\n"
        "Fix: pass a folder written by `save_pretrained` (config.json + model.safetensors), one of the "
        f"presets {sorted(PRESETS)} or bundled encoders {sorted(bundled_encoders())}, or download the "
        f"model once with network access (`hf download {resolved}`) so that it is in the cache"
        + ("." if hub_offline() else "; with no network, set HF_HUB_OFFLINE=1 to fail fast.")
    )
