"""`run_benchmark`: encoders × tasks × datasets × attacks × ε → the paper's tables.

For each (encoder, task, dataset) a linear head is trained on the frozen encoder (or loaded when
it is already in `output_dir/heads/`), then evaluated clean and under every applicable attack at
every ε, on the same images. Work is split into cells, one per (encoder, task, dataset, ε); each
finished cell is written to `output_dir/cells/` at once, so a re-run with the same output
directory skips what is done and an interruption loses at most the cell in progress.

    hf-ssl-robust benchmark --encoders ./enc --tasks classification depth --eps 2/255 8/255
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from torch.utils.data import DataLoader

from .attack_suites import build_attack
from .batching import find_max_batch_size
from .distributed import min_across_processes
from .data import get_dataset_spec, make_dataset
from .configs import BenchmarkConfig  # noqa: F401  (re-export: its home was here)
from .data.custom import dataset_identity, run_provenance
from .data.loaders import IndexedDataset, resolve_num_workers
from .data.loading import collate
from .encoders import load_encoder
from .evaluation import evaluate
from .head_store import differences, is_head, match_given, stored_key
from .identity import EncoderIdentity, encoder_identity
from .precision import autocast, make_accelerator, resolve_precision
from .results import display_name, format_eps, markdown_tables, plot_examples, plot_robustness_curves, write_csv, write_json
from .sizes import encoder_family, resolve_input_size
from .tasks import get_task
from .training import TrainHeadConfig, head_key, train_head
from .uncertainty import interval_fields
from .validation import benchmark_problems, cells, describe_encoder, raise_problems

logger = get_logger(__name__)


def _slug(*parts: str) -> str:
    return "-".join(display_name(p).replace("/", "_") for p in parts)


def _train_config(cfg: BenchmarkConfig, encoder_name: str, task: str, dataset: str, output_dir: str | None = None) -> TrainHeadConfig:
    return TrainHeadConfig(
        encoder=encoder_name, task=task, dataset=dataset, output_dir=output_dir, data_dir=cfg.data_dirs.get(dataset),
        image_size=cfg.image_size, epochs=cfg.head_epochs, lr=cfg.head_lr, num_train_samples=cfg.num_train_samples,
        num_workers=cfg.num_workers, seed=cfg.seed, mixed_precision=cfg.mixed_precision, embed_encoder=cfg.embed_encoder,
        evaluate_test=False, revision=cfg.revision,  # the cells score the evaluation split themselves
    )


def _head_key(cfg: BenchmarkConfig, ident: EncoderIdentity, task: str, dataset: str) -> dict:
    """Everything that changes a trained head (`training.head_key`): a head is reused only when this
    matches exactly. The encoder is its weights' fingerprint (`identity.py`), never its name: `a/enc`
    and `b/enc`, or a folder retrained in place, get heads of their own; a copied folder keeps its heads."""
    return head_key(_train_config(cfg, ident.name, task, dataset), ident.fingerprint, cfg.mixed_precision or "no")


def _digest(key: dict) -> str:
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _cell_key(cfg: BenchmarkConfig, encoder: str, task: str, dataset: str, eps: float, ident: EncoderIdentity | None = None) -> dict:
    """Everything that changes a cell's numbers; a stored cell is reused only if this matches
    (the package version included: a resume after an upgrade recomputes instead of mixing versions)."""
    from . import __version__

    ident = ident or encoder_identity(encoder)
    return dict(encoder=encoder, encoder_fingerprint=ident.fingerprint, version=__version__, cell_format=3,  # 2: flags, 3: ci95
                task=task, dataset=dataset, eps=eps, steps=cfg.steps, step_size=cfg.attack_step_size(eps),
                norm=cfg.norm, track_best=cfg.track_best, attacks=sorted(get_task(task).attacks(cfg.attacks, get_dataset_spec(dataset, task=task))),
                square_queries=cfg.square_queries,
                max_eval_samples=cfg.max_eval_samples, image_size=cfg.image_size, seed=cfg.seed,
                num_train_samples=cfg.num_train_samples, head_epochs=cfg.head_epochs, head_lr=cfg.head_lr,
                data_dir=cfg.data_dirs.get(dataset), mixed_precision=cfg.mixed_precision or "no",
                **({"dataset_identity": dataset_identity(dataset)} if dataset_identity(dataset) else {}),
                **({"worst_case": True} if cfg.worst_case else {}),
                **({"progressive": True} if cfg.progressive and task == "segmentation" else {}))
    # no batch_size: random starts are seeded per image and mixed sizes never share a canvas


def _cell_path(out: Path, key: dict) -> Path:
    return out / "cells" / f"{_slug(key['encoder'], key['dataset'], key['task'])}-{format_eps(key['eps']).replace('/', 'o')}-{_digest(key)}.json"


def run_benchmark(cfg: BenchmarkConfig, accelerator: Accelerator | None = None) -> list[dict]:
    """Run every cell that is not done yet and write all outputs; returns the records.

    Everything is validated first (`hf_ssl_robust.validation`), then every head a cell needs is
    resolved (reused, or to be trained) before any work, so a `--heads_dir` head that does not
    match is refused at once; dataset x task pairs that do not exist are skipped with one log line
    each and listed in `run_info.json`.
    """
    raise_problems(benchmark_problems(cfg))
    accelerator = accelerator or make_accelerator(cfg.mixed_precision)
    cfg = dataclasses.replace(cfg, mixed_precision=resolve_precision(cfg.mixed_precision, accelerator))  # what really runs
    out = Path(cfg.output_dir)
    started = time.perf_counter()
    pairs, skipped = cells(cfg)
    for s in skipped:
        logger.warning(f"skipping {s['dataset']} x {s['task']}: {s['reason']}", main_process_only=True)
    identities = {name: encoder_identity(name, revision=cfg.revision) for name in cfg.resolved_encoders()}
    plan, forced = _plan_heads(cfg, identities, pairs, out)  # raises before any work on a mismatching --heads_dir
    info = {**run_info(cfg, accelerator), "skipped": skipped,
            "encoder_identities": {n: i.to_dict() for n, i in identities.items()},
            **({"forced_heads": forced} if forced else {}), **run_provenance(cfg, identities)}
    if accelerator.is_main_process:
        (out / "cells").mkdir(parents=True, exist_ok=True)
        write_json(out / "run_info.json", info)
    accelerator.wait_for_everyone()
    logger.info(f"benchmark config: {asdict(cfg)}", main_process_only=True)
    logger.info(f"attacks per task: {cfg.attack_plan}" + (" + worst case" if cfg.worst_case else ""), main_process_only=True)

    records: list[dict] = []
    reused = computed = 0
    timings: dict = {"load_encoder_s": 0.0, "heads": [], "cells": []}  # per phase, this invocation only
    for encoder_name, ident in identities.items():
        encoder = None
        for dataset, task_name in pairs:
            task = get_task(task_name)
            keys = [_cell_key(cfg, encoder_name, task_name, dataset, eps, ident) for eps in cfg.eps_values]
            todo = [k for k in keys if not _cell_path(out, k).is_file()]
            reused += len(keys) - len(todo)
            if todo:
                t0 = time.perf_counter()
                encoder = encoder if encoder is not None else load_encoder(encoder_name, revision=cfg.revision)
                timings["load_encoder_s"] += time.perf_counter() - t0
                model, spec, head_times = _head(cfg, encoder, encoder_name, ident, task_name, dataset, accelerator, plan[(encoder_name, dataset, task_name)])
                timings["heads"].append({"encoder": encoder_name, "dataset": dataset, "task": task_name, **head_times})
                for key in todo:
                    cell_times = _run_cell(cfg, key, model, task, spec, accelerator, out, ident)
                    timings["cells"].append({"encoder": encoder_name, "dataset": dataset, "task": task_name, "eps": key["eps"], **cell_times})
                    computed += 1
            for key in keys:
                records.extend(json.loads(_cell_path(out, key).read_text())["records"])
    logger.info(f"{reused} cell(s) reused from {out / 'cells'}, {computed} computed", main_process_only=True)
    t0 = time.perf_counter()
    priors = [r for dataset, task_name in pairs for r in _prior_records(cfg, dataset, task_name, identities, accelerator, out)]
    timings["priors_s"] = time.perf_counter() - t0
    records = _dedupe_clean(records + priors)
    if accelerator.is_main_process:
        t0 = time.perf_counter()
        write_outputs(records, out)
        timings["outputs_s"] = time.perf_counter() - t0
        # wall time of this invocation (cells reused from an earlier run cost nothing here)
        write_json(out / "run_info.json", {**info, "cells_reused": reused, "cells_computed": computed,
                                           "timings": _round_times(timings), "wall_seconds": round(time.perf_counter() - started, 1)})
    accelerator.wait_for_everyone()
    return records


def _round_times(value):
    if isinstance(value, float):
        return round(value, 2)
    if isinstance(value, dict):
        return {k: _round_times(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_round_times(v) for v in value]
    return value


def _head_folder(cfg: BenchmarkConfig, encoder_name: str, key: dict) -> Path:
    return Path(cfg.output_dir) / "heads" / f"{_slug(encoder_name, key['dataset'], key['task'])}-{_digest(key)}"


def _plan_heads(cfg, identities, pairs, out) -> tuple[dict, list[dict]]:
    """(encoder, dataset, task) -> (head key, folder to load or None to train); all `--heads_dir`
    problems at once, before any work. Returns the plan and the heads reused by `--force_heads`."""
    plan, problems, forced = {}, [], []
    given = sorted(p for p in Path(cfg.heads_dir).iterdir() if is_head(p)) if cfg.heads_dir and Path(cfg.heads_dir).is_dir() else []
    if cfg.heads_dir and Path(cfg.heads_dir).is_dir() and is_head(Path(cfg.heads_dir)):
        given.append(Path(cfg.heads_dir))  # a single head folder
    if cfg.heads_dir and not Path(cfg.heads_dir).is_dir():
        problems.append(f"--heads_dir {cfg.heads_dir}: no such folder.")
    for encoder_name, ident in identities.items():
        for dataset, task_name in pairs:
            key = _head_key(cfg, ident, task_name, dataset)
            own = _head_folder(cfg, encoder_name, key)
            found = own if is_head(own) and stored_key(own) == key else None
            if found is None and given:
                found, problem = match_given(given, key, encoder_name, cfg.force_heads, _slug(encoder_name, dataset, task_name))
                if problem:
                    problems.append(problem)
                elif found is not None and stored_key(found) != key:
                    forced.append({"encoder": encoder_name, "dataset": dataset, "task": task_name, "head": str(found),
                                   "differences": differences(stored_key(found), key)})
                    logger.warning(f"--force_heads: reusing {found} for {encoder_name} although {forced[-1]['differences']}",
                                   main_process_only=True)
            plan[(encoder_name, dataset, task_name)] = (key, found)
    raise_problems(problems)
    return plan, forced


def trained_head(cfg: BenchmarkConfig, encoder_name: str, task: str, dataset: str, accelerator, encoder=None):
    """`(head, spec)` of one encoder x task x dataset as `run_benchmark` gets it: the run's (or `--heads_dir`'s)
    head for the exact key when there is one, else a newly trained one (e.g. for scripts that time attacks)."""
    ident = encoder_identity(encoder_name, revision=cfg.revision)
    plan, _ = _plan_heads(cfg, {encoder_name: ident}, [(dataset, task)], Path(cfg.output_dir))
    model, spec, _ = _head(cfg, encoder if encoder is not None else load_encoder(encoder_name, revision=cfg.revision), encoder_name, ident, task, dataset,
                           accelerator, plan[(encoder_name, dataset, task)])
    return model, spec


def _head(cfg, encoder, encoder_name, ident, task_name, dataset, accelerator, planned):
    spec = get_dataset_spec(dataset, task=task_name)
    task = get_task(task_name)
    key, found = planned
    if found is not None:
        logger.info(f"loading head {found}", main_process_only=True)
        t0 = time.perf_counter()
        model = task.head_class.from_pretrained(found).to(accelerator.device).eval()
        return model, spec, {"loaded_s": time.perf_counter() - t0}
    train_cfg = _train_config(cfg, encoder_name, task_name, dataset, output_dir=str(_head_folder(cfg, encoder_name, key)))
    model, info = train_head(train_cfg, accelerator=accelerator, encoder=encoder)
    if info["key"] != key:  # the planner and the trainer must agree, or the head would never be found again
        raise RuntimeError(f"head key mismatch: planned {key}, trained {info['key']}")
    return model.to(accelerator.device).eval(), spec, dict(info["timings"])


def auto_batch_size(model, attacks: dict, dataset, device, target_key: str, start: int = 512, accelerator=None,
                    max_scan: int = 256) -> int:
    """The largest evaluation batch for which one step of every attack (the memory peak) fits,
    under the accelerator's autocast (bf16 activations take half the memory).

    Measured on the largest image among `max_scan` evenly spaced ones (all, for smaller datasets):
    real datasets mix sizes, and a batch that fits the first image may not fit a larger one."""
    first = collate([largest_item(dataset, max_scan)])
    pixels = first["pixel_values"].to(device)
    target = first[target_key].to(device)

    def run(b: int) -> None:
        x = pixels.expand(b, *pixels.shape[1:]).contiguous()
        t = target.expand(b, *target.shape[1:]).contiguous()
        for attack in attacks.values():
            one_step = dataclasses.replace(attack, steps=1)
            with autocast(accelerator):
                one_step.perturb(model, x, None if attack.surface == "encoder" else t)

    return find_max_batch_size(run, start=min(start, len(dataset)), device=device)


def largest_item(dataset, max_scan: int = 256) -> dict:
    """The item with the most pixels among `max_scan` evenly spaced items of `dataset` (the first on ties)."""
    n = len(dataset)
    indices = sorted({round(i * (n - 1) / max(min(n, max_scan) - 1, 1)) for i in range(min(n, max_scan))})
    items = (dataset[i] for i in indices)
    return max(items, key=lambda item: item["pixel_values"].shape[-2] * item["pixel_values"].shape[-1])


def _run_cell(cfg, key, model, task, spec, accelerator, out, ident: EncoderIdentity):
    eps = key["eps"]
    attacks = {
        name: build_attack(name, task, spec, eps=eps, step_size=cfg.attack_step_size(eps), steps=cfg.steps, norm=cfg.norm,
                           track_best=cfg.track_best, seed=cfg.seed, progressive=cfg.progressive, square_queries=cfg.square_queries)
        for name in get_task(key["task"]).attacks(cfg.attacks, spec)  # the order asked for (the key's list is sorted)
    }
    image_size = resolve_input_size(encoder_family(model.encoder.config), spec, cfg.image_size).size
    times = {}
    t0 = time.perf_counter()
    # --max_eval_samples: a seeded subset of the whole split (make_dataset), the same on every process
    dataset = make_dataset(spec, "eval", num_samples=cfg.max_eval_samples, seed=cfg.seed, data_dir=cfg.data_dirs.get(spec.name), image_size=image_size)
    dataset = IndexedDataset(dataset)  # per-image attack seeds: numbers independent of the batch size
    times["data_s"] = time.perf_counter() - t0
    batch_size = cfg.batch_size
    t0 = time.perf_counter()
    if batch_size == "auto":
        measured = auto_batch_size(model, attacks, dataset, accelerator.device, task.target_key, accelerator=accelerator)
        batch_size = min_across_processes(measured, accelerator)  # one size on every process, before any loader exists
        logger.info(f"--batch_size auto: {batch_size}", main_process_only=True)
        times["batch_size_auto_s"] = time.perf_counter() - t0
    workers = resolve_num_workers(cfg.num_workers, dataset)
    loader = accelerator.prepare(DataLoader(dataset, batch_size=batch_size, collate_fn=collate, num_workers=workers))
    examples: dict = {}

    def keep_examples(batch, preds):
        if not examples and accelerator.is_main_process:
            k = cfg.num_examples
            examples.update(pixels=batch["pixel_values"][:k].cpu(), target=batch[task.target_key][:k].cpu(),
                            **{n: p[:k].detach().cpu() for n, p in preds.items()})

    desc = f"{display_name(key['encoder'])} {task.name} ε={format_eps(eps)}"
    start = time.perf_counter()
    black_box = None
    if "square" in attacks:  # Square runs: check every white-box attack against it (`black_box_stronger`)
        from .diagnostics_blackbox import square_hook

        black_box = square_hook(task.name, eps=eps, norm=cfg.norm, queries=cfg.square_queries, seed=cfg.seed,
                                ignore_index=spec.ignore_index if spec.ignore_index is not None else 255,
                                max_depth=float(spec.max_depth or 10.0))
    results = evaluate(model, loader, task, spec, attacks=attacks, accelerator=accelerator, desc=desc, on_batch=keep_examples,
                       worst_case=cfg.worst_case, black_box=black_box, bootstrap_seed=cfg.seed)
    seconds = time.perf_counter() - start
    times["evaluate_s"] = seconds
    records = []
    for attack_name, metrics in results.items():
        for metric, value in metrics.items():
            if metric in ("num_samples", "num_scored", "flags", "checkpoints", "zero_gradient_share", "ci95", "separated_from_clean"):
                continue
            records.append(dict(
                encoder=key["encoder"], encoder_id=ident.public_id, encoder_fingerprint=ident.fingerprint, task=task.name, dataset=spec.name, attack=attack_name,
                eps=0.0 if attack_name == "none" else eps, steps=0 if attack_name == "none" else cfg.steps,
                step_size=0.0 if attack_name == "none" else cfg.attack_step_size(eps), norm=cfg.norm,
                metric=metric, value=value, num_samples=metrics["num_samples"], seconds=round(seconds, 2),
                flags=list(metrics.get("flags", [])), checkpoints=metrics.get("checkpoints", {}),
                **({"zero_gradient_share": metrics["zero_gradient_share"]} if "zero_gradient_share" in metrics else {}),
                # Square's budget is queries, not the run's --steps (which stay `steps`: the run's protocol)
                **({"queries": attacks[attack_name].steps} if attack_name.split(":")[0] == "square" else {}),
                **interval_fields(metrics, metric),
            ))
    if accelerator.is_main_process:
        t0 = time.perf_counter()
        if examples and cfg.num_examples:
            plot_examples(examples, task, spec, eps, out / f"examples_{_slug(key['encoder'], spec.name, task.name)}_{format_eps(eps).replace('/', 'o')}.png")
        times["examples_plot_s"] = time.perf_counter() - t0
        write_json(_cell_path(out, key), {"key": key, "records": records})
    accelerator.wait_for_everyone()
    return times


def _prior_records(cfg, dataset, task_name, identities, accelerator, out) -> list[dict]:
    """The image-free prior's records for one dataset x task (`priors.py`), cached like a cell."""
    from . import __version__
    from .priors import PRIOR_ENCODER, fit_prior, score_prior

    spec = get_dataset_spec(dataset, task=task_name)
    if cfg.priors == "no" or (cfg.priors == "auto" and spec.source != "synthetic"):
        return []
    first = next(iter(identities))
    size = resolve_input_size(describe_encoder(first, cfg.revision).family, spec, cfg.image_size).size  # validated before the run
    key = dict(encoder=PRIOR_ENCODER, task=task_name, dataset=dataset, image_size=size, seed=cfg.seed, version=__version__, cell_format=3,
               num_train_samples=cfg.num_train_samples, max_eval_samples=cfg.max_eval_samples, data_dir=cfg.data_dirs.get(dataset),
               **({"dataset_identity": dataset_identity(dataset)} if dataset_identity(dataset) else {}))
    path = out / "cells" / f"prior-{dataset}-{task_name}-{_digest(key)}.json"
    if not path.is_file():
        task = get_task(task_name)
        data_kw = dict(seed=cfg.seed, data_dir=cfg.data_dirs.get(dataset), image_size=size)
        prior = fit_prior(task, spec, make_dataset(spec, "train", num_samples=cfg.num_train_samples, **data_kw))
        metrics = score_prior(prior, task, spec, make_dataset(spec, "eval", num_samples=cfg.max_eval_samples, **data_kw), bootstrap_seed=cfg.seed)
        records = [dict(encoder=PRIOR_ENCODER, encoder_id=PRIOR_ENCODER, encoder_fingerprint=None, task=task_name, dataset=dataset,
                        attack="none", eps=0.0, steps=0, step_size=0.0, norm=cfg.norm, metric=metric, value=value,
                        num_samples=metrics["num_samples"], seconds=0.0, flags=[], **interval_fields(metrics, metric))
                   for metric, value in metrics.items() if metric not in ("num_samples", "num_scored", "ci95")]
        if accelerator.is_main_process:
            write_json(path, {"key": key, "records": records})
        accelerator.wait_for_everyone()
    return json.loads(path.read_text())["records"]


def _dedupe_clean(records: list[dict]) -> list[dict]:
    """Every ε cell re-measures clean metrics on the same images; keep one copy."""
    seen, kept = set(), []
    for r in records:
        ident = (r["encoder"], r["task"], r["dataset"], r["attack"], r["eps"], r["metric"])
        if ident not in seen:
            seen.add(ident)
            kept.append(r)
    return kept


def write_outputs(records: list[dict], out: Path) -> None:
    """results.json, results.csv, results.md (paper tables) and robustness_curves.png."""
    write_json(out / "results.json", records)
    write_csv(out / "results.csv", records)
    (out / "results.md").write_text(markdown_tables(records))
    plot_robustness_curves(records, out / "robustness_curves.png")


def git_state(package: str | os.PathLike | None = None) -> tuple[str | None, bool | None]:
    """(commit, whether tracked files under `package` differ from it) of the checkout `package` (default:
    this package's folder) lives in; (None, None) outside git (an installed wheel). Uncommitted edits to
    `hf_ssl_robust/` mean the commit alone does not reproduce the numbers, so results say so."""
    package = Path(package) if package is not None else Path(__file__).parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=package, timeout=5).stdout.strip()
        if not rev:
            return None, None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."], capture_output=True,
                                text=True, cwd=package, timeout=10)  # fmt: skip
        return rev, (bool(status.stdout.strip()) if status.returncode == 0 else None)
    except (OSError, subprocess.SubprocessError):
        return None, None


def run_info(cfg: BenchmarkConfig, accelerator) -> dict:
    import accelerate
    import datasets
    import evaluate
    import huggingface_hub
    import transformers

    from . import __version__

    rev, dirty = git_state()
    return {
        "config": asdict(cfg), "seed": cfg.seed, "encoders": cfg.resolved_encoders(), "git_revision": rev, "git_dirty": dirty,
        "attacks_per_task": cfg.attack_plan, "worst_case": cfg.worst_case,
        "versions": {"hf_ssl_robust": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
                     "accelerate": accelerate.__version__, "datasets": datasets.__version__, "huggingface_hub": huggingface_hub.__version__,
                     "evaluate": evaluate.__version__, "python": platform.python_version()},
        "processes": accelerator.num_processes, "device": str(accelerator.device), "mixed_precision": cfg.mixed_precision,
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform()},
    }
