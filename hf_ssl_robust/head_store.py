"""Finding a trained head for an exact head key (`training.head_key`), in a run's `heads/` or `--heads_dir`.

A head folder (`save_pretrained` + `train_metrics.json`) records the key it was trained for. A
`--heads_dir` head is reused only when that key is equal; one trained for the same encoder name,
dataset and task but anything else (another encoder's weights, other head settings, or no key: an
older version) is refused with the difference spelled out, unless `--force_heads`.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["differences", "is_head", "match_given", "stored_key"]


def is_head(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "train_metrics.json").is_file()


def stored_key(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "train_metrics.json").read_text()).get("key")
    except (OSError, ValueError):
        return None


def differences(stored: dict | None, key: dict) -> str:
    if stored is None:
        return "it records no identity (trained by an older version)"
    diffs = [f"{k}: {stored.get(k)!r} there, {key.get(k)!r} here" for k in sorted(set(stored) | set(key)) if stored.get(k) != key.get(k)]
    return "; ".join(diffs)


def match_given(given: list[Path], key: dict, encoder_name: str, force: bool, slug: str) -> tuple[Path | None, str | None]:
    """The `--heads_dir` head trained for exactly `key`; else a problem naming how the nearest one differs
    (None, None when it holds nothing for this encoder, dataset and task: the head is trained). A head is
    "for this encoder, dataset and task" when its key has the same fingerprint, or its folder name starts
    with `slug` (the benchmark's `<encoder>-<dataset>-<task>`)."""
    near = []
    for folder in given:
        stored = stored_key(folder)
        if stored == key:
            return folder, None
        same_cell = stored is not None and (stored.get("task"), stored.get("dataset")) == (key["task"], key["dataset"])
        same_name = folder.name.startswith(slug)
        if (same_cell and stored.get("encoder_fingerprint") == key["encoder_fingerprint"]) or same_name:
            near.append(folder)
    if not near:
        return None, None
    if force:
        return near[0], None
    return None, (f"--heads_dir head {near[0]} does not match {encoder_name} / {key['dataset']} / {key['task']}: "
                  f"{differences(stored_key(near[0]), key)}. Train a new head (drop --heads_dir), or pass --force_heads "
                  "to reuse it anyway.")
