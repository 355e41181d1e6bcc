"""Lean head folders: the head's own weights plus a pinned reference to its encoder, and remote code.

`save_pretrained` of every head (DESIGN.md §3) writes by default

* `model.safetensors` with the head's weights only (kilobytes, not the encoder's megabytes or gigabytes);
* `config.encoder_reference`: `{"source": Hub id or absolute folder, "kind": "hub" | "local", "revision": the
  Hub commit, "weights_sha256": SHA-256 of the encoder's weights, "fingerprint": ...}` from
  `hf_ssl_robust.identity.encoder_identity`; loading fetches the encoder with `AutoModel.from_pretrained` at
  that revision and refuses other weights (`EncoderReferenceError`);
* `modeling_ssl_heads.py` (`heads/remote/`, copied as is) and `config.auto_map`, so that
  `AutoModelFor*.from_pretrained(folder, trust_remote_code=True)` and `pipeline(..., trust_remote_code=True)`
  work without hf_ssl_robust.

`save_pretrained(..., embed_encoder=True)` keeps the encoder's weights in the folder instead (offline use,
the bundled Space). A head whose encoder has no reference to point at (built from a module in memory, a
Hub id whose commit is unknown offline, or in-memory weights that differ from the named encoder's files)
is saved self-contained, with a warning saying why.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch
from safetensors import safe_open

from .remote import modeling_ssl_heads as remote

__all__ = ["REMOTE_FILE", "auto_map_for", "encoder_reference_for", "write_remote_code"]

logger = logging.getLogger(__name__)
REMOTE_FILE = remote.REMOTE_FILE
_REMOTE_MODULE = REMOTE_FILE.removesuffix(".py")


def auto_map_for(model_type: str) -> dict[str, str]:
    """The `auto_map` of a head's config.json: the remote config and model classes."""
    auto_class, config_class, model_class = remote.AUTO_MAP[model_type]
    return {"AutoConfig": f"{_REMOTE_MODULE}.{config_class}", auto_class: f"{_REMOTE_MODULE}.{model_class}"}


def write_remote_code(folder: str | Path) -> Path:
    """Copy the remote-code module next to a saved head."""
    return Path(shutil.copyfile(Path(remote.__file__), Path(folder) / REMOTE_FILE))


def _weights_files(reference: dict) -> list[str]:
    if reference["kind"] == "local":
        return [str(p) for p in sorted(Path(reference["source"]).glob("*.safetensors"))]
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(reference["source"], "model.safetensors", revision=reference["revision"])
    return [cached] if isinstance(cached, str) else []


def _same_weights(backbone: torch.nn.Module, files: list[str]) -> bool:
    """Whether every tensor of `backbone`'s state dict equals (values and dtype) the one in the files."""
    state = backbone.state_dict()
    found = set()
    prefix = f"{getattr(backbone, 'base_model_prefix', '')}."
    for path in files:
        with safe_open(path, "pt") as weights:
            for key in weights.keys():  # noqa: SIM118 - safe_open has no __iter__
                name = key if key in state else key.removeprefix(prefix)
                if name not in state or name in found:
                    continue
                tensor = weights.get_tensor(key)
                if tensor.dtype != state[name].dtype or not torch.equal(tensor, state[name].detach().cpu()):
                    return False
                found.add(name)
    return found == set(state)


def encoder_reference_for(model) -> dict | None:
    """The pinned reference a lean save of `model` records, or None (with a warning) when it must embed."""
    config = model.config
    if config.encoder_reference:  # loaded lean: the encoder came from (and was checked against) this reference
        return dict(config.encoder_reference)
    from ..identity import encoder_identity

    name = config.encoder_name_or_path
    why = None
    if not name:
        why = "the encoder was given as a module in memory, with no name or folder to point at"
    else:
        ident = encoder_identity(name)
        if ident.kind == "hub" and not ident.revision:
            why = f"the commit of {ident.source!r} is unknown (not in the cache and the Hub is unreachable)"
        elif ident.kind == "local" and not ident.weights_sha256:
            why = f"{ident.source!r} holds no *.safetensors weights"
        else:
            reference = {"source": ident.source, "kind": ident.kind, "revision": ident.revision,
                         "weights_sha256": ident.weights_sha256, "fingerprint": ident.fingerprint}
            files = _weights_files(reference)
            if files and _same_weights(model.encoder.backbone, files):
                return reference
            why = f"the encoder's weights in memory are not those of {ident.source!r}" + ("" if files else " (not found)")
    logger.warning("Saving the encoder's weights inside the head folder (as embed_encoder=True): %s.", why)
    return None
