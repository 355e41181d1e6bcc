"""Publishing: model cards rendered from configs and results, and pushes to the Hub."""

from __future__ import annotations

from pathlib import Path


def push_encoder(folder: str | Path, repo_id: str, *, private: bool = False, token: str | None = None) -> str:
    """Upload a saved encoder folder (config.json + model.safetensors + README.md) to `repo_id`."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), ignore_patterns=["checkpoints/*", "*.tmp"])
    return getattr(info, "commit_url", None) or f"https://huggingface.co/{repo_id}"
