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

from .remote import modeling_ssl_heads as remote

__all__ = ["REMOTE_FILE", "auto_map_for", "encoder_reference_for", "ensure_remote_code", "write_remote_code"]

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


def ensure_remote_code(folder: str | Path) -> None:
    """Give a head folder saved before heads carried remote code its `modeling_ssl_heads.py` and `auto_map`
    (`hub.push_head` calls it, as it adds a missing image processor); up-to-date folders are left alone."""
    import json

    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    if config.get("model_type") not in remote.AUTO_MAP:
        raise ValueError(f"{str(folder)!r} is not a head folder (model_type {config.get('model_type')!r}).")
    if "auto_map" not in config:
        config["auto_map"] = auto_map_for(config["model_type"])
        (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    write_remote_code(folder)  # always the current code


def _same_weights(backbone: torch.nn.Module, reference: dict, encoder_config: dict) -> bool:
    """Whether loading `reference` (as a lean head's `from_pretrained` will) gives exactly `backbone`'s tensors."""
    try:
        loaded = remote.load_referenced_backbone(reference, encoder_config).state_dict()
    except (OSError, ValueError):  # unreadable or incomplete weights: nothing to point at
        return False
    state = backbone.state_dict()
    return loaded.keys() == state.keys() and all(
        loaded[k].dtype == v.dtype and torch.equal(loaded[k], v.detach().cpu()) for k, v in state.items()
    )


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
        ident = encoder_identity(name, revision=getattr(model.encoder, "revision", None))
        if ident.kind == "hub" and not ident.revision:
            why = f"the commit of {ident.source!r} is unknown (not in the cache and the Hub is unreachable)"
        elif ident.kind == "local" and not ident.weights_sha256:
            why = f"{ident.source!r} holds no *.safetensors weights"
        else:
            reference = {"source": ident.source, "kind": ident.kind, "revision": ident.revision,
                         "weights_sha256": ident.weights_sha256, "fingerprint": ident.fingerprint}
            if _same_weights(model.encoder.backbone, reference, config.encoder_config):
                return reference
            why = f"the encoder's weights in memory are not those of {ident.source!r} (or those cannot be loaded)"
    logger.warning("Saving the encoder's weights inside the head folder (as embed_encoder=True): %s.", why)
    return None
