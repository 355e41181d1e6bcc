"""Check every benchmark setting before any work starts, and say what to fix.

`benchmark_problems(cfg)` returns one message per problem (unknown dataset, task, attack or norm,
an ε the norm does not allow, a `--data_dir` that names no requested dataset or does not exist, a
local-only dataset without one, an encoder whose config cannot be found, ...); `run_benchmark` and `--dry_run` raise them all at once as one `ValueError`, which
the CLI turns into exit code 2. Nothing here loads weights or data: encoders are described from
their `config.json` (a folder, the Hub cache, or the known presets).

`cells(cfg)` splits the requested datasets × tasks into the pairs that exist and the ones that do
not (ADE20k has no classification labels): those are skipped, not errors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .configs import parse_eps
from .data.registry import DATASETS, TASKS, datasets_offline
from .names import ATTACK_KINDS as ATTACKS  # torch-free: the config runs these checks before torch is imported
from .names import NORMS
from .suggestions import did_you_mean

__all__ = ["EncoderInfo", "benchmark_problems", "cells", "describe_encoder", "parse_data_dirs", "raise_problems"]

# Facts about the preset encoders (their Hub config.json), so that plans need no download.
KNOWN_ENCODERS: dict[str, dict] = {
    "facebook/dinov2-small": dict(model_type="dinov2", patch_size=14, hidden_size=384),
    "facebook/dinov2-base": dict(model_type="dinov2", patch_size=14, hidden_size=768),
    "facebook/dinov2-large": dict(model_type="dinov2", patch_size=14, hidden_size=1024),
    "facebook/dinov2-with-registers-small": dict(model_type="dinov2_with_registers", patch_size=14, hidden_size=384),
    "facebook/dino-vits16": dict(model_type="vit", patch_size=16, hidden_size=384),
    "facebook/dino-vitb16": dict(model_type="vit", patch_size=16, hidden_size=768),
    # DINOv3 (gated: without these a plan would need the licence accepted first), CLIP, SigLIP
    "facebook/dinov3-vits16-pretrain-lvd1689m": dict(model_type="dinov3_vit", patch_size=16, hidden_size=384),
    "facebook/dinov3-vitb16-pretrain-lvd1689m": dict(model_type="dinov3_vit", patch_size=16, hidden_size=768),
    "facebook/dinov3-vitl16-pretrain-lvd1689m": dict(model_type="dinov3_vit", patch_size=16, hidden_size=1024),
    "facebook/dinov3-vitl16-pretrain-sat493m": dict(model_type="dinov3_vit", patch_size=16, hidden_size=1024),
    "facebook/dinov3-convnext-tiny-pretrain-lvd1689m": dict(model_type="dinov3_convnext", hidden_sizes=[96, 192, 384, 768]),
    "facebook/dinov3-convnext-small-pretrain-lvd1689m": dict(model_type="dinov3_convnext", hidden_sizes=[96, 192, 384, 768]),
    "openai/clip-vit-base-patch16": dict(model_type="clip", vision_config=dict(patch_size=16, hidden_size=768, image_size=224)),
    "openai/clip-vit-large-patch14": dict(model_type="clip", vision_config=dict(patch_size=14, hidden_size=1024, image_size=224)),
    # FARE2 fine-tunes openai/clip-vit-large-patch14 at 224 px: same tower
    "LEAF-CLIP/CLIP-ViT-L-FARE2": dict(model_type="clip", vision_config=dict(patch_size=14, hidden_size=1024, image_size=224)),
    "google/siglip-base-patch16-224": dict(model_type="siglip", vision_config=dict(patch_size=16, hidden_size=768, image_size=224)),
}


@dataclass(frozen=True)
class EncoderInfo:
    """What a plan needs to know about an encoder, read from its config only."""

    name: str
    resolved: str
    model_type: str
    family: str | None
    patch_size: int | None
    hidden_size: int | None
    source: str  # "folder", "cache" or "known preset"


def describe_encoder(name: str, revision: str | None = None) -> EncoderInfo:
    """Read an encoder's config without loading weights (folder, then the Hub cache, then the presets).

    Whether the backbone family is supported is decided by `load_encoder` (its registry), not here.
    `revision`: the Hub commit, branch or tag whose config is read (a Hub id only).

    Raises:
        ValueError: nothing describes it (no folder config, not cached, not a known preset).
    """
    from .encoders import hub_offline, hub_reachable, resolve_encoder_name
    from .families import token_stride
    from .sizes import encoder_family

    resolved = resolve_encoder_name(name)
    path = Path(resolved)
    config, source = None, ""
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"encoder {name!r}: folder {resolved!r} has no config.json (write it with save_pretrained).")
        config, source = json.loads((path / "config.json").read_text()), "folder"
    elif resolved in KNOWN_ENCODERS and not revision:
        config, source = KNOWN_ENCODERS[resolved], "known preset"
    else:
        from transformers import AutoConfig

        try:
            local = hub_offline() or not hub_reachable()
            config, source = AutoConfig.from_pretrained(resolved, local_files_only=local, revision=revision).to_dict(), "cache"
        except (OSError, ValueError) as err:
            raise ValueError(
                f"encoder {name!r}: no folder {resolved!r}, and its config is not in the Hub cache"
                f"{' (offline)' if hub_offline() else ''}: {str(err).splitlines()[0]}. Pass a folder written by "
                f"save_pretrained, a preset ({', '.join(sorted(_presets()))}) or download it once."
                + _encoder_hint(name)
            ) from None
    model_type = config.get("model_type", "")
    family = encoder_family(config)  # None: a family with no row in the sizes table (its own sizes)
    patch = token_stride(config)  # a ViT's patch size, a conv net's total stride
    config = config.get("vision_config") or config  # a full image-text checkpoint (CLIP, SigLIP): its vision tower
    hidden = config.get("hidden_size") or (config.get("hidden_sizes") or [None])[-1]
    return EncoderInfo(name, resolved, model_type, family, patch, hidden, source)


def _encoder_hint(name: str) -> str:
    """' Did you mean ...?' for a mistyped preset or bundled name (not for Hub ids or paths)."""
    from .encoders import bundled_encoders

    if "/" in name or Path(name).exists():
        return ""
    hint = did_you_mean(name, [*_presets(), *bundled_encoders()])
    return f" Did you mean {hint[len(' (did you mean '):-1]}" if hint else ""


def _presets():
    from .encoders import PRESETS

    return PRESETS


def parse_data_dirs(values, datasets: list[str]) -> tuple[dict[str, str], list[str]]:
    """`["cityscapes=/data/cs", "voc2012=/data/voc"]` -> `{name: path}`, plus problems.

    A bare PATH is accepted when exactly one requested dataset reads files (ShapesWorld is always
    generated, so it never takes a bare path; `shapes=PATH` still reads a saved copy).
    """
    if values is None:
        return {}, []
    values = [values] if isinstance(values, str) else list(values)
    dirs: dict[str, str] = {}
    problems: list[str] = []
    file_datasets = [d for d in datasets if d in DATASETS and DATASETS[d].source != "synthetic"]
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or "/" in name:  # a bare path (which may itself contain '=' after a '/')
            name, path = None, value
        if name is None:
            if len(file_datasets) != 1:
                problems.append(
                    f"--data_dir {value!r}: a bare path needs exactly one dataset that reads files (got "
                    f"{file_datasets or 'none'}); write NAME=PATH, e.g. --data_dir cityscapes={value}"
                )
                continue
            name = file_datasets[0]
        if name not in datasets:
            problems.append(f"--data_dir {value!r}: {name!r} is not one of the requested --datasets {datasets}")
        elif name in dirs:
            problems.append(f"--data_dir: {name!r} is given twice ({dirs[name]!r} and {path!r})")
        elif not Path(path).expanduser().exists():
            problems.append(f"--data_dir {value!r}: {path!r} does not exist")
        else:
            dirs[name] = path
    return dirs, problems


def missing_local_dirs(cfg, dirs: dict, dir_problems: list[str]) -> list[str]:
    """Local-only datasets with no `--data_dir` (a dry run only notes them)."""
    if getattr(cfg, "dry_run", False):
        return []
    return [d for d in cfg.datasets if d in DATASETS and DATASETS[d].local_only and d not in dirs
            and not any(p.startswith(f"--data_dir {d}=") for p in dir_problems)]


def uncached_offline_datasets(cfg, dirs: dict) -> list[str]:
    """Offline, the Hub datasets of the run (no `--data_dir`) that are not in the local `datasets` cache.

    Without this check such a run would train heads and evaluate every other dataset first, and only
    then fail on the missing one. Looking a dataset up in the cache reads no data (`load_dataset_builder`).
    """
    if getattr(cfg, "dry_run", False) or not datasets_offline():
        return []
    from .data import get_dataset_spec

    problems, seen = [], set()
    for dataset, task in cells(cfg)[0]:
        if dataset in dirs:
            continue
        spec = get_dataset_spec(dataset, task=task)
        key = (spec.hub_id, spec.hub_config, spec.revision)
        if spec.source != "hub" or not spec.hub_id or key in seen:
            continue
        seen.add(key)
        import datasets

        try:
            datasets.load_dataset_builder(spec.hub_id, spec.hub_config, revision=spec.revision)
        except (OSError, ValueError) as err:  # ConnectionError (offline, not cached), DatasetNotFoundError
            problems.append(
                f"dataset {dataset!r} (Hub id {spec.hub_id!r}) is not in the local datasets cache and HF_HUB_OFFLINE / "
                f"HF_DATASETS_OFFLINE forbids downloading it ({type(err).__name__}). Download it once with network access "
                f"(unset the offline variables), or pass a local copy: --data_dir {dataset}=PATH"
            )
    return problems


def cells(cfg) -> tuple[list[tuple[str, str]], list[dict]]:
    """`(runnable (dataset, task) pairs, skipped pairs with the reason)` for known datasets and tasks."""
    run, skipped = [], []
    for dataset in cfg.datasets:
        if dataset not in DATASETS:
            continue
        supported = DATASETS[dataset].tasks
        for task in cfg.tasks:
            if task not in TASKS:
                continue
            if task in supported:
                run.append((dataset, task))
            else:
                skipped.append({"dataset": dataset, "task": task, "reason": f"{dataset} has no {task} labels (it supports {', '.join(supported)})"})
    return run, skipped


def benchmark_problems(cfg, *, encoders: bool = True) -> list[str]:
    """Every problem with a `BenchmarkConfig`, one message each (empty: good to go)."""
    problems = []
    for t in cfg.tasks:
        if t not in TASKS:
            problems.append(f"Unknown task {t!r}{did_you_mean(t, TASKS)}; tasks are {sorted(TASKS)}")
    for d in cfg.datasets:
        if d not in DATASETS:
            problems.append(f"Unknown dataset {d!r}{did_you_mean(d, DATASETS)}; available: {sorted(DATASETS)}")
    from .attack_suites import SUITES, check_plan

    unknown = [a for a in cfg.attacks if a.partition(":")[0] not in ATTACKS and a not in SUITES]
    if unknown:
        hints = "".join(did_you_mean(a, [*ATTACKS, *SUITES]) for a in unknown)
        problems.append(f"Unknown attack(s) {unknown}{hints}; available: {sorted(ATTACKS)}, apgd:LOSS and the suites {sorted(SUITES)}")
    else:
        try:  # losses (apgd:LOSS) unknown or of no task run, --worst_case with fewer than two attacks
            check_plan(cfg.attacks, [t for t in cfg.tasks if t in TASKS], getattr(cfg, "worst_case", False) or any(a in SUITES for a in cfg.attacks),
                       getattr(cfg, "progressive", False))
        except ValueError as err:
            problems.append(str(err))
    if cfg.norm not in NORMS:
        problems.append(f"Unknown norm {cfg.norm!r}{did_you_mean(cfg.norm, NORMS)}; norms are {list(NORMS)} (--norm linf | l2)")
    norm = cfg.norm if cfg.norm in NORMS else "linf"
    for name, values in (("eps", cfg.eps), ("step_size", [] if cfg.step_size == "auto" else [cfg.step_size])):
        for value in values:
            try:
                parse_eps(value, norm=norm)
            except ValueError as err:
                problems.append(f"--{name}: {err}")
    if cfg.steps < 0:
        problems.append(f"steps must be >= 0, got {cfg.steps}.")
    if str(cfg.batch_size) != "auto" and not (str(cfg.batch_size).isdigit() and int(cfg.batch_size) >= 1):
        problems.append(f"batch_size must be a positive integer or 'auto', got {cfg.batch_size!r}.")
    if cfg.image_size is not None and cfg.image_size < 1:
        problems.append(f"--image_size must be a positive number of pixels, got {cfg.image_size}")
    if cfg.heads_dir is not None and not Path(cfg.heads_dir).is_dir():
        problems.append(f"--heads_dir {cfg.heads_dir!r} does not exist")
    workers = str(getattr(cfg, "num_workers", "auto"))
    if workers != "auto" and not workers.isdigit():
        problems.append(f"--num_workers must be 'auto' or an integer >= 0, got {workers!r}")
    dirs, dir_problems = parse_data_dirs(cfg.data_dir, [d for d in cfg.datasets if d in DATASETS])
    problems += dir_problems
    for d in missing_local_dirs(cfg, dirs, dir_problems):
        problems.append(f"dataset {d!r} is only available from a local folder (licence); pass --data_dir {d}=PATH (see `hf-ssl-robust info`)")
    problems += uncached_offline_datasets(cfg, dirs)
    run, _ = cells(cfg)
    if not run and all(t in TASKS for t in cfg.tasks) and all(d in DATASETS for d in cfg.datasets):
        problems.append(f"no dataset supports any requested task: {cfg.datasets} x {cfg.tasks}")
    if encoders:
        for name in cfg.resolved_encoders():
            try:
                describe_encoder(name, getattr(cfg, "revision", None))
            except ValueError as err:
                problems.append(str(err))
    return problems


def raise_problems(problems: list[str], what: str = "benchmark") -> None:
    """One `ValueError` listing every problem (the CLI prints it and exits with code 2)."""
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ValueError(f"{len(problems)} problem(s) with the {what} settings, nothing was run:\n{lines}")
