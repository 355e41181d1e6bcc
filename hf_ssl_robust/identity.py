"""Who an encoder is: a fingerprint of its weights, never its display name.

Heads and benchmark cells are reused only for the exact encoder they were made with (DESIGN.md §3):
`facebook/dino-vitb16` and `me/dino-vitb16`, or `runs/a/final` and `runs/b/final`, share a basename
but not a fingerprint.

    >>> ident = encoder_identity("shapes-resnet-tiny")
    >>> ident.fingerprint          # 16 hex digits, the same wherever the folder lives
    >>> ident.source, ident.weights_sha256

* A local folder (a bundled encoder, a `save_pretrained` output, a DeACL checkpoint): the SHA-256 of
  its `config.json` and of every `*.safetensors` file, so moving or copying the folder keeps the
  fingerprint and retraining in place (same path, new weights) changes it. Hashes are cached per
  (path, size, mtime) for the life of the process.
* A Hub id (or a preset): the commit the revision resolves to (from the local cache when offline,
  else one metadata call), so a new push to the repo changes it; the weights' SHA-256 is read from
  the cache's blob name (the LFS object id) when the weights are already downloaded and recorded as
  provenance, but kept out of the fingerprint (it would change between the first and second run).
* An `nn.Module` (an encoder already in memory): the SHA-256 of its state dict.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

__all__ = ["EncoderIdentity", "encoder_identity", "file_sha256", "portable_encoder_id", "unique_display_names"]

_FILE_HASHES: dict[tuple[str, int, int], str] = {}


@dataclass(frozen=True)
class EncoderIdentity:
    """What an encoder is, beyond the name it was given.

    Attributes:
        name: as given (preset, bundled name, Hub id or folder).
        source: the Hub id, or the absolute path of the folder (`None` for an in-memory module).
        kind: `local`, `hub` or `module`.
        revision: the Hub commit SHA (`hub`), else None.
        weights_sha256: SHA-256 of the weights file(s) where known (sorted by file name, joined by `,`).
        fingerprint: 16 hex digits over what defines the weights (see the module docstring).
    """

    name: str
    source: str | None
    kind: str
    revision: str | None
    weights_sha256: str | None
    fingerprint: str

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def public_id(self) -> str:
        """The id results carry (`encoder_id`): the Hub id; for an encoder bundled with the package its
        place in the package (`hf_ssl_robust/assets/NAME`), the same on every machine; else the folder."""
        return portable_encoder_id(self.source or self.name)


def portable_encoder_id(encoder_id: str) -> str:
    """`hf_ssl_robust/assets/NAME` for a bundled encoder's folder in any checkout (an absolute path of one
    machine); any other id unchanged."""
    parts = Path(encoder_id).parts
    if len(parts) > 3 and parts[-3:-1] == ("hf_ssl_robust", "assets"):
        return "/".join(parts[-3:])
    return encoder_id


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file, cached per (absolute path, size, mtime) in this process."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASHES:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
        _FILE_HASHES[key] = h.hexdigest()
    return _FILE_HASHES[key]


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _local_identity(name: str, folder: Path) -> EncoderIdentity:
    folder = folder.resolve()
    weights = sorted(folder.glob("*.safetensors"))
    weights_sha = ",".join(file_sha256(w) for w in weights) or None
    config_sha = file_sha256(folder / "config.json") if (folder / "config.json").is_file() else None
    # Preset constants saved beside the weights (mean/std) change the encoder too.
    extra = sorted(p.name for p in folder.glob("*.json") if p.name in ("preprocessor_config.json", "encoder_config.json"))
    extra_sha = [file_sha256(folder / n) for n in extra]
    return EncoderIdentity(name=name, source=str(folder), kind="local", revision=None, weights_sha256=weights_sha,
                           fingerprint=_digest("local", config_sha, weights_sha, extra_sha))


def _hub_identity(name: str, repo_id: str, revision: str | None) -> EncoderIdentity:
    from huggingface_hub import try_to_load_from_cache

    commit = _resolve_commit(repo_id, revision)
    weights_sha = None
    cached = try_to_load_from_cache(repo_id, "model.safetensors", revision=commit) if commit is not None else None
    if isinstance(cached, str) and os.path.islink(cached):
        weights_sha = Path(os.readlink(cached)).name  # the blob is named by its LFS sha256
    elif isinstance(cached, str):
        weights_sha = file_sha256(cached)
    return EncoderIdentity(name=name, source=repo_id, kind="hub", revision=commit, weights_sha256=weights_sha,
                           fingerprint=_digest("hub", repo_id, commit or revision or "main"))


def _resolve_commit(repo_id: str, revision: str | None) -> str | None:
    """The commit SHA `revision` (default `main`) points to: from the local cache, else from the Hub
    when it is reachable; None when neither knows (the caller's load will then fail with its own error)."""
    from huggingface_hub import constants, try_to_load_from_cache

    rev = revision or "main"
    if len(rev) == 40 and all(c in "0123456789abcdef" for c in rev):
        return rev
    cached = try_to_load_from_cache(repo_id, "config.json", revision=rev)
    if isinstance(cached, str):
        return Path(cached).parent.name  # .../snapshots/<commit>/config.json
    from .encoders import hub_offline, hub_reachable

    if hub_offline() or not hub_reachable():
        return None
    try:
        from huggingface_hub import HfApi

        return HfApi(endpoint=constants.ENDPOINT).model_info(repo_id, revision=rev).sha
    except Exception:  # noqa: BLE001 - identity is best effort here; loading reports the real error
        return None


def _module_identity(module: torch.nn.Module) -> EncoderIdentity:
    h = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        h.update(key.encode())
        t = value.detach().to("cpu").contiguous()
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-dim buffers too
    sha = h.hexdigest()
    name = getattr(getattr(module, "config", None), "_name_or_path", "") or type(module).__name__
    return EncoderIdentity(name=name, source=None, kind="module", revision=None, weights_sha256=sha,
                           fingerprint=_digest("module", sha))


def encoder_identity(name_or_module: str | os.PathLike | torch.nn.Module, revision: str | None = None) -> EncoderIdentity:
    """The identity of an encoder, without loading its weights when it is named (see the module docstring)."""
    if isinstance(name_or_module, torch.nn.Module):
        return _module_identity(name_or_module)
    from .encoders import resolve_encoder_name

    name = str(name_or_module)
    resolved = resolve_encoder_name(name)
    if Path(resolved).is_dir():
        return _local_identity(name, Path(resolved))
    return _hub_identity(name, resolved, revision)


def unique_display_names(names: list[str]) -> dict[str, str]:
    """Readable, unique table names: the basename, extended by parent folders only where two collide.

    `["a/enc", "b/enc", "facebook/dinov2-small"]` -> `{"a/enc": "a/enc", "b/enc": "b/enc", "facebook/dinov2-small": "dinov2-small"}`.
    """
    from .results import display_name

    parts = {n: [p for p in str(n).replace("\\", "/").rstrip("/").split("/") if p] or [str(n)] for n in names}
    depth = {n: 1 for n in names}
    while True:
        shown = {n: "/".join(parts[n][-depth[n]:]) for n in names}
        clashes = [n for n in names if sum(shown[m] == shown[n] for m in names if m != n)]
        grow = [n for n in clashes if depth[n] < len(parts[n])]
        if not grow:
            break
        for n in grow:
            depth[n] += 1
    return {n: (display_name(n) if depth[n] == 1 else shown[n]) for n in names}
