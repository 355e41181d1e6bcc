"""Linear heads of hf_ssl_robust, loadable with torch and transformers alone.

This file is copied next to every head that `save_pretrained` writes, and `config.json` points at it
(`auto_map`), so that

    >>> from transformers import AutoModelForImageClassification, pipeline
    >>> model = AutoModelForImageClassification.from_pretrained(repo_or_folder, trust_remote_code=True)
    >>> pipeline("image-classification", model=repo_or_folder, trust_remote_code=True)

work without installing hf_ssl_robust, with the same outputs. It imports only torch, transformers and the
standard library (transformers' remote-code loader checks that), so it repeats, in small, what the
package spreads over `families.py` (which tokens each backbone family gives), `encoders.PixelEncoder`
(normalisation inside, padding of conv nets) and `heads/` (the three heads, sliding windows, depth bins).
A test (`tests/test_remote_heads.py`) compares it with the package for every family and head.

A **lean** head (the default) stores only its own weights plus `config.encoder_reference`: the encoder's
source (Hub id or absolute folder), its revision (Hub commit) and the SHA-256 of its weights file(s).
`from_pretrained` loads the encoder from there with `AutoModel.from_pretrained` and refuses weights whose
hash differs. A head saved with `embed_encoder=True` carries the encoder's weights itself.

Inference only: training needs hf_ssl_robust (`pip install` line in the model card).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel, ViTModel
from transformers import initialization as init
from transformers.modeling_outputs import DepthEstimatorOutput, ImageClassifierOutput, SemanticSegmenterOutput
from transformers.utils import cached_file
from transformers.utils import logging as hf_logging

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PAPER_WINDOW_STRIDE = {224: 100, 518: 341}
BIN_WEIGHT_FLOOR = 0.1
REMOTE_FILE = "modeling_ssl_heads.py"


class EncoderReferenceError(ValueError):
    """The encoder a lean head references cannot be found, or its weights are not the ones it was trained on."""


# --- configs (same model_type and fields as hf_ssl_robust.heads.configuration) -------------------
class SSLHeadConfig(PretrainedConfig):
    model_type = "ssl_head"

    def __init__(self, encoder_name_or_path="", encoder_config=None, encoder_reference=None, image_mean=IMAGENET_MEAN,
                 image_std=IMAGENET_STD, image_size=224, initializer_range=0.01, **kwargs):
        self.encoder_name_or_path = encoder_name_or_path
        self.encoder_config = encoder_config
        self.encoder_reference = encoder_reference
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)
        self.image_size = image_size
        self.initializer_range = initializer_range
        super().__init__(**kwargs)

    def encoder_backbone_config(self) -> PretrainedConfig:
        fields = dict(self.encoder_config)
        return AutoConfig.for_model(fields.pop("model_type"), **fields)


class ClassificationHeadConfig(SSLHeadConfig):
    model_type = "ssl_linear_classifier"


class SegmentationHeadConfig(SSLHeadConfig):
    model_type = "ssl_linear_segmenter"

    def __init__(self, ignore_index=255, window_size=None, window_stride=None, **kwargs):
        super().__init__(**kwargs)
        self.ignore_index = ignore_index
        self.window_size = self.image_size if window_size is None else window_size
        self.window_stride = window_stride or PAPER_WINDOW_STRIDE.get(self.window_size, max(1, self.window_size // 2))


class DepthHeadConfig(SSLHeadConfig):
    model_type = "ssl_linear_depth"

    def __init__(self, min_depth=0.001, max_depth=10.0, n_bins=256, upsample_factor=4, use_batchnorm=False, **kwargs):
        super().__init__(**kwargs)
        self.min_depth, self.max_depth, self.n_bins = min_depth, max_depth, n_bins
        self.upsample_factor, self.use_batchnorm = upsample_factor, use_batchnorm


# --- backbone families: (global token, patch tokens, grid) as hf_ssl_robust.families ---------------
def _first(value) -> int:
    return value[0] if isinstance(value, (tuple, list)) else value


def _vit_tokens(backbone, pixels: Tensor, pre_norm: bool):
    kwargs = {"output_hidden_states": True} if pre_norm else {}
    if backbone.config.model_type == "vit":
        kwargs["interpolate_pos_encoding"] = True
    out = backbone(pixel_values=pixels, **kwargs)
    tokens = out.hidden_states[-1] if pre_norm else out.last_hidden_state
    registers = int(getattr(backbone.config, "num_register_tokens", 0) or 0)
    p = _first(backbone.config.patch_size)
    return tokens[:, 0], tokens[:, 1 + registers :], (pixels.shape[-2] // p, pixels.shape[-1] // p)


def _resnet_tokens(backbone, pixels: Tensor, pre_norm: bool):
    out = backbone(pixel_values=pixels)
    fmap = out.last_hidden_state
    return out.pooler_output.flatten(1), fmap.flatten(2).transpose(1, 2), tuple(fmap.shape[-2:])


def _convnext_tokens(backbone, pixels: Tensor, pre_norm: bool):
    out = backbone(pixel_values=pixels, output_hidden_states=pre_norm)
    if pre_norm:
        fmap = out.hidden_states[-1]
        patches = fmap.flatten(2).transpose(1, 2)
        return patches.mean(1), patches, tuple(fmap.shape[-2:])
    s = _STRIDE["dinov3_convnext"](backbone.config)
    return out.pooler_output, out.last_hidden_state[:, 1:], (pixels.shape[-2] // s, pixels.shape[-1] // s)


def _clip_tokens(backbone, pixels: Tensor, pre_norm: bool):
    out = backbone(pixel_values=pixels, interpolate_pos_encoding=True)
    tokens = out.last_hidden_state if pre_norm else backbone.post_layernorm(out.last_hidden_state)
    p = _first(backbone.config.patch_size)
    return tokens[:, 0], tokens[:, 1:], (pixels.shape[-2] // p, pixels.shape[-1] // p)


def _siglip_tokens(backbone, pixels: Tensor, pre_norm: bool):
    out = backbone(pixel_values=pixels, interpolate_pos_encoding=True, output_hidden_states=pre_norm)
    patches = out.hidden_states[-1] if pre_norm else out.last_hidden_state
    p = _first(backbone.config.patch_size)
    return out.pooler_output, patches, (pixels.shape[-2] // p, pixels.shape[-1] // p)


_VIT_TYPES = ("vit", "dinov2", "dinov2_with_registers", "dinov3_vit")
_TOKENS = {**dict.fromkeys(_VIT_TYPES, _vit_tokens), "resnet": _resnet_tokens, "dinov3_convnext": _convnext_tokens,
           "clip_vision_model": _clip_tokens, "siglip_vision_model": _siglip_tokens}
_PADDED = ("resnet", "dinov3_convnext")  # conv nets: centre-pad to a multiple of the stride
_STRIDE = {
    **dict.fromkeys((*_VIT_TYPES, "clip_vision_model", "siglip_vision_model"), lambda c: _first(c.patch_size)),
    "resnet": lambda c: 4 * 2 ** (len(c.depths) - 1) * (2 if c.downsample_in_first_stage else 1),
    "dinov3_convnext": lambda c: 4 * 2 ** (len(c.hidden_sizes) - 1),
}


def _hidden_size(config) -> int:
    return config.hidden_sizes[-1] if config.model_type in _PADDED else config.hidden_size


def _load_kwargs(config) -> dict:
    return {"add_pooling_layer": False} if config.model_type == "vit" else {}  # DINO v1's pooler is random


def centre_pad(pixels: Tensor, multiple: int, fill: Tensor) -> Tensor:
    """Pad `[B, 3, H, W]` symmetrically with `fill` to multiples of `multiple` (as hf_ssl_robust.encoders)."""
    h, w = pixels.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return pixels
    fill = fill.to(pixels.dtype)
    return F.pad(pixels - fill, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)) + fill


class PixelEncoder(nn.Module):
    """A frozen backbone that takes [0, 1] pixels, normalises them itself and returns (cls, patches, grid)."""

    def __init__(self, backbone: PreTrainedModel, mean, std):
        super().__init__()
        if backbone.config.model_type not in _TOKENS:
            raise ValueError(f"Unsupported encoder family {backbone.config.model_type!r}; known: {sorted(_TOKENS)}.")
        self.backbone = backbone
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)  # cpu-ok: buffers follow the module's .to()
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)  # cpu-ok: buffers follow the module's .to()

    @property
    def patch_size(self) -> int:
        return _STRIDE[self.backbone.config.model_type](self.backbone.config)

    def forward(self, pixels: Tensor, pre_norm: bool = False):
        model_type = self.backbone.config.model_type
        if model_type in _PADDED:
            pixels = centre_pad(pixels, self.patch_size, self.mean)
        normed = (pixels - self.mean.to(pixels.dtype)) / self.std.to(pixels.dtype)
        return _TOKENS[model_type](self.backbone, normed, pre_norm)


def patch_grid(patches: Tensor, grid) -> Tensor:
    b, _, d = patches.shape
    return patches.transpose(1, 2).reshape(b, d, *grid)


# --- the encoder a lean head references ---------------------------------------------------------
def file_sha256(path, chunk: int = 1 << 22) -> str:
    real = os.path.realpath(path)
    name = os.path.basename(real)
    if os.path.islink(path) and re.fullmatch(r"[0-9a-f]{64}", name):
        return name  # a Hub cache blob is named by its LFS SHA-256
    h = hashlib.sha256()
    with open(real, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def referenced_weights(reference: dict, **hub_kwargs) -> tuple[str, str | None, str | None]:
    """`(where to load from, revision, SHA-256 of the weights or None)` of a lean head's encoder.

    A local folder hashes every `*.safetensors` file (sorted by name, joined by `,`); a Hub id hashes
    `model.safetensors` at the pinned commit (downloaded when missing and online).
    """
    source, revision = reference.get("source"), reference.get("revision")
    if reference.get("kind") == "local":
        folder = Path(source)
        files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
        if not files:
            raise EncoderReferenceError(
                f"This head references its encoder at {source!r}, which is not there (or holds no *.safetensors). "
                "Put the encoder back at that path, or save the head with `save_pretrained(..., embed_encoder=True)` "
                "so that it carries the encoder's weights."
            )
        return str(folder), None, ",".join(file_sha256(f) for f in files)
    try:
        weights = cached_file(source, "model.safetensors", revision=revision, **hub_kwargs)
    except OSError as err:
        raise EncoderReferenceError(
            f"Cannot fetch the encoder this head references ({source} at revision {revision}): {err}. Connect to the "
            "Hub (or download it first with `hf download`), or use a head saved with embed_encoder=True."
        ) from err
    return source, revision, (file_sha256(weights) if weights else None)


def load_referenced_backbone(reference: dict, encoder_config: dict, **hub_kwargs) -> PreTrainedModel:
    """The frozen backbone of a lean head, after checking its weights' SHA-256 against the reference."""
    where, revision, sha = referenced_weights(reference, **hub_kwargs)
    expected = reference.get("weights_sha256")
    if expected and sha != expected:
        raise EncoderReferenceError(
            f"The encoder at {reference.get('source')!r} is not the one this head was trained on: its weights hash is "
            f"{sha} but the head expects {expected}. Restore that encoder (revision {reference.get('revision')}), "
            "or retrain the head on this one."
        )
    fields = dict(encoder_config)
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    model_class = ViTModel if config.model_type == "vit" else AutoModel
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # a full image-text checkpoint's text tower is expected to be left over
    hf_logging.disable_progress_bar()
    try:
        backbone, info = model_class.from_pretrained(
            where, revision=revision, config=config, use_safetensors=True, output_loading_info=True,
            **_load_kwargs(config), **hub_kwargs,
        )
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    if info["missing_keys"]:
        raise EncoderReferenceError(f"The encoder at {where!r} lacks weights the head needs: {sorted(info['missing_keys'])[:5]}.")
    return backbone.eval().requires_grad_(False)


def _freeze(encoder: nn.Module) -> nn.Module:
    encoder.eval().requires_grad_(False)
    for tensor in encoder.state_dict(keep_vars=True).values():
        tensor._is_hf_initialized = True
    return encoder


_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")


# --- the heads ---------------------------------------------------------------------------------
class SSLHeadPreTrainedModel(PreTrainedModel):
    """Frozen `PixelEncoder` (`self.encoder`, always in eval mode) + a small head defined by subclasses."""

    config_class = SSLHeadConfig
    base_model_prefix = "encoder"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules: list[str] = []

    def __init__(self, config: SSLHeadConfig, encoder: PreTrainedModel | None = None):
        super().__init__(config)
        if encoder is None:  # rebuilt from the config; the weights come from the checkpoint
            backbone_config = config.encoder_backbone_config()
            model_class = ViTModel if backbone_config.model_type == "vit" else AutoModel.from_config
            encoder = model_class(backbone_config, **_load_kwargs(backbone_config))
        else:  # a lean head: the referenced encoder, already loaded; the checkpoint has no encoder weights
            self._keys_to_ignore_on_load_missing = [r"^encoder\."]
        self.encoder = _freeze(PixelEncoder(encoder, config.image_mean, config.image_std))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`; a lean head first loads (and checks) the encoder it references."""
        if "encoder" not in kwargs:
            config = kwargs.get("config")
            if not isinstance(config, PretrainedConfig):
                hub = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
                config = cls.config_class.from_pretrained(pretrained_model_name_or_path, **hub)
            if getattr(config, "encoder_reference", None):
                hub = {k: kwargs[k] for k in ("cache_dir", "local_files_only", "token") if k in kwargs}
                kwargs["encoder"] = load_referenced_backbone(config.encoder_reference, config.encoder_config, **hub)
        loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        _freeze((loaded[0] if isinstance(loaded, tuple) else loaded).encoder)
        return loaded

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()
        return self

    @property
    def patch_size(self) -> int:
        return self.encoder.patch_size

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, PixelEncoder):
            init.copy_(module.mean, torch.tensor(self.config.image_mean, dtype=torch.float32).view(1, 3, 1, 1))  # cpu-ok: copied into the buffer
            init.copy_(module.std, torch.tensor(self.config.image_std, dtype=torch.float32).view(1, 3, 1, 1))  # cpu-ok: copied into the buffer
        elif isinstance(module, (nn.Linear, nn.Conv2d)):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            if module.running_mean is not None:
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)

    def _crop_box(self, image_size):
        h, w = image_size
        ph, pw = h + (-h % self.patch_size), w + (-w % self.patch_size)
        return ph, pw, (ph - h) // 2, (pw - w) // 2


class SSLForImageClassification(SSLHeadPreTrainedModel):
    """Frozen encoder + `Linear(hidden_size, num_labels)` on the global (CLS) token."""

    config_class = ClassificationHeadConfig

    def __init__(self, config, encoder=None):
        super().__init__(config, encoder=encoder)
        self.classifier = nn.Linear(_hidden_size(self.encoder.backbone.config), config.num_labels)
        self.post_init()

    def forward(self, pixel_values: Tensor, labels: Tensor | None = None, **kwargs) -> ImageClassifierOutput:
        logits = self.classifier(self.encoder(pixel_values)[0])
        loss = F.cross_entropy(logits, labels.long()) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)


def _windows(height: int, width: int, window: int, stride: int):
    def starts(size):
        w = min(window, size)
        s = list(range(0, size - w + 1, stride))
        return s if s[-1] == size - w else [*s, size - w]

    wh, ww = min(window, height), min(window, width)
    return [(y, x, wh, ww) for y in starts(height) for x in starts(width)]


class SSLForSemanticSegmentation(SSLHeadPreTrainedModel):
    """Frozen encoder + BatchNorm2d + 1x1 conv on the patch grid, logits averaged over sliding windows."""

    config_class = SegmentationHeadConfig

    def __init__(self, config, encoder=None):
        super().__init__(config, encoder=encoder)
        dim = _hidden_size(self.encoder.backbone.config)
        self.batchnorm = nn.BatchNorm2d(dim)
        self.classifier = nn.Conv2d(dim, config.num_labels, kernel_size=1)
        self.post_init()

    def window_logits(self, pixels: Tensor) -> Tensor:
        _, patches, grid = self.encoder(centre_pad(pixels, self.patch_size, self.encoder.mean))
        ph, pw, top, left = self._crop_box(pixels.shape[-2:])
        logits = self.classifier(self.batchnorm(patch_grid(patches, grid)))
        logits = F.interpolate(logits, size=(ph, pw), mode="bilinear", align_corners=False)
        return logits[:, :, top : top + pixels.shape[-2], left : left + pixels.shape[-1]]

    def forward(self, pixel_values: Tensor, labels: Tensor | None = None, **kwargs) -> SemanticSegmenterOutput:
        b, _, height, width = pixel_values.shape
        windows = _windows(height, width, self.config.window_size, self.config.window_stride)
        if len(windows) == 1:
            logits = self.window_logits(pixel_values)
        else:  # every window of every image in one batched call; overlapping logits averaged
            crops = torch.cat([pixel_values[:, :, y : y + wh, x : x + ww] for y, x, wh, ww in windows])
            out = self.window_logits(crops)
            out = out.view(len(windows), b, *out.shape[1:])
            logits = out.new_zeros(b, out.shape[2], height, width)
            counts = out.new_zeros(1, 1, height, width)
            for i, (y, x, wh, ww) in enumerate(windows):
                logits[:, :, y : y + wh, x : x + ww] += out[i]
                counts[:, :, y : y + wh, x : x + ww] += 1
            logits = logits / counts
        loss = None
        if labels is not None:
            masks = labels.long()
            total = F.cross_entropy(logits, masks, ignore_index=self.config.ignore_index, reduction="sum")
            loss = total / (masks != self.config.ignore_index).sum().clamp_min(1).to(total.dtype)
        return SemanticSegmenterOutput(loss=loss, logits=logits)


def _interp_matrix(n: int, size: int, device, dtype) -> Tensor:
    eye = torch.eye(n, device=device, dtype=dtype)[:, None, :]
    return F.interpolate(eye, size=size, mode="linear", align_corners=False)[:, 0, :].T


def _upsample(x: Tensor, factor: int) -> Tensor:
    h, w = x.shape[-2:]
    rows, cols = _interp_matrix(h, h * factor, x.device, x.dtype), _interp_matrix(w, w * factor, x.device, x.dtype)
    return torch.matmul(torch.matmul(rows, x), cols.T)


class SSLForDepthEstimation(SSLHeadPreTrainedModel):
    """Frozen encoder (pre-norm tokens, CLS appended) + bilinear upsampling + 1x1 conv to depth bins."""

    config_class = DepthHeadConfig

    def __init__(self, config, encoder=None):
        super().__init__(config, encoder=encoder)
        channels = 2 * _hidden_size(self.encoder.backbone.config)
        self.batchnorm = nn.BatchNorm2d(channels) if config.use_batchnorm else None
        self.conv_depth = nn.Conv2d(channels, config.n_bins, kernel_size=1)
        self.post_init()

    def forward(self, pixel_values: Tensor, labels: Tensor | None = None, **kwargs) -> DepthEstimatorOutput:
        if labels is not None:
            raise NotImplementedError("The depth loss needs the hf_ssl_robust package (see the model card's install line).")
        c = self.config
        cls, patches, grid = self.encoder(centre_pad(pixel_values, self.patch_size, self.encoder.mean), pre_norm=True)
        fmap = patch_grid(patches, grid)
        features = torch.cat([fmap, cls[:, :, None, None].expand_as(fmap)], dim=1)
        factor = int(c.upsample_factor)
        if self.batchnorm is not None:
            logits = self.conv_depth(self.batchnorm(_upsample(features, factor)))
        else:
            logits = _upsample(self.conv_depth(features), factor)
        centres = torch.linspace(c.min_depth, c.max_depth, c.n_bins, device=logits.device, dtype=logits.dtype)
        proj = torch.stack([centres, torch.ones_like(centres)]).view(2, -1, 1, 1)
        sums = F.conv2d(torch.relu(logits), proj) + BIN_WEIGHT_FLOOR * proj.sum(dim=(1, 2, 3)).view(1, 2, 1, 1)
        depth = sums[:, 0] / sums[:, 1]
        ph, pw, top, left = self._crop_box(pixel_values.shape[-2:])
        depth = F.interpolate(depth[:, None], size=(ph, pw), mode="bilinear", align_corners=False)[:, 0]
        depth = depth[:, top : top + pixel_values.shape[-2], left : left + pixel_values.shape[-1]]
        return DepthEstimatorOutput(predicted_depth=depth.clamp(c.min_depth, c.max_depth))


AUTO_MAP = {
    "ssl_linear_classifier": ("AutoModelForImageClassification", "ClassificationHeadConfig", "SSLForImageClassification"),
    "ssl_linear_segmenter": ("AutoModelForSemanticSegmentation", "SegmentationHeadConfig", "SSLForSemanticSegmentation"),
    "ssl_linear_depth": ("AutoModelForDepthEstimation", "DepthHeadConfig", "SSLForDepthEstimation"),
}
