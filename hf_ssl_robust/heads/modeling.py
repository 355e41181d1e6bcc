"""Shared base of the heads: a frozen `PixelEncoder` plus a small trainable head.

* The encoder is frozen (`requires_grad_(False)`) and stays in eval mode, even after
  `model.train()`: only the head trains, as in the paper's linear evaluation.
* A saved head is lean by default (its weights + a pinned, hash-checked reference to its encoder,
  `heads/lean.py`); with `embed_encoder=True` the encoder weights are saved WITH the head (one
  self-contained `model.safetensors`), and the architecture is rebuilt from `config.encoder_config`
  with `AutoModel.from_config` (or `ViTModel(config, add_pooling_layer=False)` for DINO v1), so
  `from_pretrained` needs no network.
* `_init_weights` initialises the head only; the encoder comes pretrained (or from the checkpoint).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from transformers import AutoModel, PreTrainedConfig, PreTrainedModel, ViTModel
from transformers import initialization as init

from ..encoders import PixelEncoder, centre_pad, get_family, load_encoder
from .configuration import SSLHeadConfig
from .lean import auto_map_for, encoder_reference_for, write_remote_code
from .remote.modeling_ssl_heads import load_referenced_backbone

__all__ = ["SSLHeadPreTrainedModel", "build_encoder", "centre_pad", "freeze_encoder"]


def build_encoder(config: SSLHeadConfig) -> PixelEncoder:
    """Rebuild the (randomly initialised) encoder architecture recorded in a head config."""
    backbone_config = config.encoder_backbone_config()
    load_kwargs = get_family(backbone_config).load_kwargs(backbone_config)  # e.g. DINO v1 has no pooler
    if backbone_config.model_type == "vit":
        backbone = ViTModel(backbone_config, **load_kwargs)
    else:
        backbone = AutoModel.from_config(backbone_config, **load_kwargs)
    return PixelEncoder(backbone, mean=tuple(config.image_mean), std=tuple(config.image_std))


def _referenced_backbone(config: SSLHeadConfig, **hub_kwargs) -> nn.Module:
    """The backbone a lean head references (hash checked). A bundled or preset encoder whose recorded folder
    moved (the package reinstalled elsewhere, a Space's copy) is looked up again by its name or the folder's
    name; the weights' hash still has to match."""
    reference = dict(config.encoder_reference)
    if reference.get("kind") == "local" and not Path(reference["source"]).is_dir():
        from ..encoders import bundled_encoders, resolve_encoder_name

        for moved in (resolve_encoder_name(config.encoder_name_or_path), bundled_encoders().get(Path(reference["source"]).name)):
            if moved is not None and Path(moved).is_dir():
                reference["source"] = str(Path(moved).resolve())
                break
    return load_referenced_backbone(reference, config.encoder_config, **hub_kwargs)


def freeze_encoder(encoder: nn.Module) -> nn.Module:
    """Eval mode, no gradients, and its saved tensors marked as initialised so that no init touches them.

    Tensors are marked (parameters and persistent buffers), not modules: `from_pretrained` then still
    runs each backbone's own `_init_weights`, which recomputes the non-persistent buffers that no
    checkpoint carries and that loading leaves uninitialised (DINOv3's RoPE `inv_freq`, the
    `position_ids` of CLIP and SigLIP), while `transformers.initialization` skips marked tensors. The
    `PixelEncoder`'s own non-persistent mean/std are restored from the config by `_init_weights`.
    """
    encoder.eval().requires_grad_(False)
    for tensor in encoder.state_dict(keep_vars=True).values():
        tensor._is_hf_initialized = True
    return encoder


def _float32_values(buffer: Tensor) -> tuple[float, ...]:
    """Shortest decimals that round-trip each float32 value (0.485, not 0.48500001430511475)."""
    return tuple(float(str(np.float32(v))) for v in buffer.detach().cpu().flatten().tolist())


class SSLHeadPreTrainedModel(PreTrainedModel):
    """Base class: `self.encoder` (frozen `PixelEncoder`) + head modules defined by subclasses.

    Args:
        config: the head config (with `encoder_config` filled in).
        encoder: an already loaded encoder (`PixelEncoder`, HF backbone, or a name/path for
            `load_encoder`). When omitted, the architecture is rebuilt from `config.encoder_config`
            with random weights (what `from_pretrained` does before loading the checkpoint).
    """

    config_class = SSLHeadConfig
    base_model_prefix = "encoder"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules: list[str] = []

    def __init__(self, config: SSLHeadConfig, encoder: PixelEncoder | nn.Module | str | None = None):
        super().__init__(config)
        if encoder is None:
            encoder = build_encoder(config)
        else:
            encoder = load_encoder(encoder, mean=tuple(config.image_mean), std=tuple(config.image_std))
            self._keys_to_ignore_on_load_missing = [r"^encoder\."]  # a lean checkpoint: the encoder is given
            for name, values in (("mean", config.image_mean), ("std", config.image_std)):
                if getattr(encoder, name).is_meta:  # built inside `from_pretrained`; `_init_weights` sets it
                    continue
                if not torch.allclose(getattr(encoder, name).flatten().cpu().float(), torch.tensor(values, device="cpu").float()):  # on the host (not meta, inside from_pretrained)
                    raise ValueError(
                        f"The encoder normalises with {name}={_float32_values(getattr(encoder, name))} but the "
                        f"config says image_{name}={tuple(values)}; build the head with `from_encoder` or make "
                        "them agree."
                    )
            if config.encoder_config is None:
                config.encoder_config = encoder.backbone.config.to_dict()
        self.encoder = freeze_encoder(encoder)

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_encoder(cls, encoder_or_name: PixelEncoder | nn.Module | str | os.PathLike, **config_kwargs: Any):
        """Build a fresh head on an encoder; the config is filled in from the encoder.

        Example:
            >>> model = SSLForImageClassification.from_encoder("dinov2-small", num_labels=10, image_size=518)
        """
        mean = config_kwargs.get("image_mean")
        std = config_kwargs.get("image_std")
        load_kwargs = {k: tuple(v) for k, v in (("mean", mean), ("std", std)) if v is not None}
        encoder = load_encoder(encoder_or_name, **load_kwargs)
        config_kwargs.setdefault("image_mean", _float32_values(encoder.mean))
        config_kwargs.setdefault("image_std", _float32_values(encoder.std))
        name = encoder_or_name if isinstance(encoder_or_name, (str, os.PathLike)) else encoder.name_or_path
        config_kwargs.setdefault("encoder_name_or_path", str(name))
        config = cls.config_class(encoder_config=encoder.backbone.config.to_dict(), **config_kwargs)
        model = cls(config, encoder=encoder)
        device = next(encoder.parameters()).device  # the head's new layers join an encoder already on the GPU
        return model.to(device) if device.type != "cpu" else model

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, then re-freeze the encoder (loading makes new Parameters).

        A lean folder (`config.encoder_reference`) first loads its encoder from the reference with
        `AutoModel.from_pretrained` at the pinned revision and refuses weights whose hash differs
        (`EncoderReferenceError`); a self-contained folder loads everything from its own checkpoint.
        """
        if "encoder" not in kwargs:
            config = kwargs.get("config")
            if not isinstance(config, PreTrainedConfig):
                hub = {k: kwargs[k] for k in ("cache_dir", "local_files_only", "token", "revision", "subfolder") if k in kwargs}
                config = cls.config_class.from_pretrained(pretrained_model_name_or_path, **hub)
            if config.encoder_reference:
                hub = {k: kwargs[k] for k in ("cache_dir", "local_files_only", "token") if k in kwargs}
                kwargs["encoder"] = _referenced_backbone(config, **hub)
        given = kwargs.get("encoder")
        # A given (lean) backbone is loaded already; `from_pretrained`'s initialisation of what the head's
        # checkpoint lacks would leave its non-persistent buffers (CLIP's position ids, DINOv3's RoPE) as
        # uninitialised memory: keep their loaded values and put them back.
        buffers = {n: b.detach().clone() for n, b in given.named_buffers()} if isinstance(given, nn.Module) else {}
        loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # output_loading_info=True
        if buffers:
            backbone = getattr(model.encoder, "backbone", model.encoder)
            prefix = "backbone." if isinstance(given, PixelEncoder) else ""
            with torch.no_grad():
                for name, value in buffers.items():
                    if name.startswith(prefix):
                        backbone.get_buffer(name[len(prefix):]).copy_(value)
        freeze_encoder(model.encoder)
        return loaded

    def save_pretrained(self, save_directory, is_main_process: bool = True, push_to_hub: bool = False,
                        embed_encoder: bool | None = None, **kwargs):
        """`PreTrainedModel.save_pretrained`: a lean folder by default, plus remote code and the image processor.

        Args:
            embed_encoder: write the encoder's weights into the folder too (self-contained: offline use,
                the bundled Space). Default False: the head's weights plus `config.encoder_reference` (see
                `heads/lean.py`), unless the encoder cannot be referenced (then it is embedded, with a warning).

        Every folder also gets `modeling_ssl_heads.py` and `config.auto_map`, so that
        `AutoModelFor*.from_pretrained(folder, trust_remote_code=True)` loads it without this package.
        With `push_to_hub=True` (and `repo_id`, `commit_message`, `private`, `token`, `create_pr`) the
        upload happens after the processor is written, so the Hub copy has it too; a head pinned to a local
        encoder folder is uploaded with its encoder (nobody else has that folder). `hub.push_head`
        also renders the model card from the training and benchmark results.
        """
        if embed_encoder is None:  # push_to_hub saves again through here: keep the caller's choice
            embed_encoder = getattr(self, "_embed_encoder", False)
        hub_kwargs = {k: kwargs.pop(k) for k in ("repo_id", "commit_message", "private", "token", "create_pr") if k in kwargs}
        reference = None if embed_encoder or not is_main_process else encoder_reference_for(self)
        if reference is not None:
            kwargs["state_dict"] = {k: v for k, v in self.state_dict().items() if not k.startswith("encoder.")}
        previous = self.config.encoder_reference
        self.config.encoder_reference = reference
        self.config.auto_map = auto_map_for(self.config.model_type)
        try:
            super().save_pretrained(save_directory, is_main_process=is_main_process, **kwargs)
        finally:
            self.config.encoder_reference = previous
        if is_main_process:
            from ..processing import (
                save_image_processor,  # processing imports the head configs
            )

            save_image_processor(save_directory, self.config)
            write_remote_code(save_directory)
            if push_to_hub:  # transformers' upload: saves again into a temporary folder (processor included)
                # A local folder is on this machine only: the Hub copy carries the encoder instead.
                self._embed_encoder = reference is None or reference["kind"] == "local"
                try:
                    self.push_to_hub(hub_kwargs.pop("repo_id", Path(save_directory).name), **hub_kwargs)
                finally:
                    del self._embed_encoder

    # -- frozen encoder -----------------------------------------------------------------------
    def train(self, mode: bool = True):
        """Switch the head's mode; the encoder always stays in eval mode."""
        super().train(mode)
        self.encoder.eval()
        return self

    @property
    def patch_size(self) -> int:
        return self.encoder.patch_size

    def head_parameters(self):
        """Trainable parameters (everything but the encoder), for the optimiser."""
        return [p for n, p in self.named_parameters() if not n.startswith("encoder.")]

    # -- init ---------------------------------------------------------------------------------
    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, PixelEncoder):
            # Non-persistent buffers: not in the checkpoint, so restore them from the config (they
            # may have been created on the meta device by `from_pretrained`).
            init.copy_(module.mean, torch.tensor(self.config.image_mean, dtype=torch.float32).view(1, 3, 1, 1))  # cpu-ok: copy_ crosses devices
            init.copy_(module.std, torch.tensor(self.config.image_std, dtype=torch.float32).view(1, 3, 1, 1))  # cpu-ok: copy_ crosses devices
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
