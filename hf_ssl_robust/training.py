"""Train a task head on a frozen encoder with Accelerate (the paper's linear evaluation).

The encoder is frozen and in eval mode, so when the augmentation is only flips (classification
always; segmentation and depth when images already have the window size, as ShapesWorld does)
its features are computed once, for the image and its mirror, and the head trains on the cache.
Model selection uses a validation split carved from the training split, never the reported one.

    hf-ssl-robust train-head --task segmentation --encoder ./my-encoder --dataset shapes
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import send_to_device, set_seed
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from .data import get_dataset_spec, make_dataset
from .data.loaders import resolve_num_workers
from .data.loading import collate
from .data.transforms import RandomHorizontalFlip, eval_transform, train_transform
from .distributed import GlobalBatchSampler, global_mean_weight, synced_batchnorm
from .encoders import load_encoder
from .identity import encoder_identity
from .evaluation import evaluate
from .precision import autocast, make_accelerator, resolve_precision
from .results import write_json
from .sizes import encoder_family, resolve_input_size
from .tasks import get_task
from .configs import PAPER_PRESETS, TrainHeadConfig  # noqa: F401  (re-export: their home was here)

logger = get_logger(__name__)

class _CachedFeatures(Dataset):
    """Cached `(features, target)` of each image and, with flips, of its mirror image."""

    in_memory = True  # no DataLoader workers needed

    def __init__(self, features: torch.Tensor, targets: torch.Tensor, seed: int):
        self.features, self.targets, self.seed, self.epoch = features, targets, seed, 0  # [V, N, ...]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.features.shape[1]

    def __getitem__(self, i: int):
        view = 0
        if self.features.shape[0] > 1:  # a fair coin per (epoch, sample): the cached flip
            view = int(torch.randint(self.features.shape[0], (), generator=torch.Generator().manual_seed(self.seed * 7919 + self.epoch * 100_003 + i)))  # cpu-ok: a host coin
        return {"features": self.features[view, i], "target": self.targets[view, i]}


def _flip_sample(sample: dict) -> dict:
    return RandomHorizontalFlip(p=1.0)(sample)


def _cache_size_gb(model, task, n: int, image_size: int, views: int) -> float:
    enc = model.encoder
    h, w = enc.grid_size(image_size + (-image_size % enc.patch_size), image_size + (-image_size % enc.patch_size))
    per = enc.hidden_size * {"classification": 1, "segmentation": h * w, "depth": 2 * h * w}[task.name]
    return views * n * per * 4 / 1e9


@torch.no_grad()
def _extract(model, dataset, task, views: int, batch_size: int, show: bool, num_workers="auto", accelerator=None):
    """Features of every image (and its mirror) of `dataset`, in dataset order, on the accelerator's device.

    Each process encodes its share of the batches (a prepared loader) and the shares are gathered, so
    N processes encode N times faster and every process ends with the same, complete cache."""
    feats, targets = [[] for _ in range(views)], [[] for _ in range(views)]
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate, num_workers=resolve_num_workers(num_workers, dataset))
    if accelerator is not None:
        model = model.to(accelerator.device)
        loader = accelerator.prepare(loader)  # batches on the device; process r gets batches r, r + N, ...
    gather = accelerator.gather_for_metrics if accelerator is not None else (lambda x: x)
    for batch in tqdm(loader, desc="caching features", disable=not show, leave=False):
        for v in range(views):
            sample = {"pixel_values": batch["pixel_values"], task.target_key: batch[task.target_key]}
            if v == 1:
                sample = _flip_sample(sample)
            with autocast(accelerator):  # features in the run's precision, stored in fp32
                f = model.encode_features(sample["pixel_values"]).float()
            f, t = gather((f, sample[task.target_key]))  # in batch order; the padding of the last batch dropped
            feats[v].append(f)
            targets[v].append(t)
    return torch.stack([torch.cat(f) for f in feats]), torch.stack([torch.cat(t) for t in targets])


def train_head(cfg: TrainHeadConfig, accelerator: Accelerator | None = None, encoder=None):
    """Train the head of `cfg.task` on a frozen encoder; save it with its clean metrics.

    Args:
        cfg: the settings.
        accelerator: reuse one (e.g. from a script); a default one is made otherwise.
        encoder: an already loaded encoder (default: `load_encoder(cfg.encoder)`).

    Returns:
        `(model, info)`: the trained head (best validation epoch) and a dict with its clean
        metrics on the evaluation split, the validation metrics and what was used.
    """
    accelerator = accelerator or make_accelerator(cfg.mixed_precision)
    precision = resolve_precision(cfg.mixed_precision, accelerator)
    task = get_task(cfg.task)
    spec = get_dataset_spec(cfg.dataset, task=cfg.task)
    hp = cfg.hyperparameters(spec)
    set_seed(cfg.seed)
    encoder = load_encoder(encoder if encoder is not None else cfg.encoder, revision=cfg.revision)
    inp = resolve_input_size(encoder_family(encoder.config), spec, cfg.image_size)  # the paper's sizes
    size = inp.size
    image_size = inp.window or (size if isinstance(size, int) else min(size))  # the head's window / crop side
    head_kwargs = task.head_kwargs(spec, image_size, window_stride=inp.stride)
    show = accelerator.is_local_main_process

    timings = {}
    start = time.perf_counter()
    data_kw = dict(data_dir=cfg.data_dir, image_size=size, seed=cfg.seed)
    base = make_dataset(spec, "train", num_samples=cfg.num_train_samples, **data_kw,
                        transform=None if spec.source == "synthetic" else eval_transform(task.name, size, ignore_index=spec.ignore_index))
    perm = torch.randperm(len(base), generator=torch.Generator().manual_seed(cfg.seed)).tolist()  # cpu-ok: host indices
    n_val = max(1, round(cfg.val_fraction * len(base)))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    eval_ds = make_dataset(spec, "eval", num_samples=cfg.num_eval_samples, **data_kw) if cfg.evaluate_test else None

    probe = task.head_class.from_encoder(encoder, **head_kwargs).to(accelerator.device)
    flips_only = task.name == "classification" or spec.source == "synthetic"
    views = 2 if cfg.augment else 1
    use_cache = cfg.cache_features == "yes" or (
        cfg.cache_features == "auto" and flips_only and _cache_size_gb(probe, task, len(train_idx), image_size, views) < cfg.max_cache_gb
    )
    timings["data_s"] = time.perf_counter() - start
    start = time.perf_counter()
    if use_cache:
        feats, targets = _extract(probe, Subset(base, train_idx), task, views, cfg.eval_batch_size, show, cfg.num_workers, accelerator)
        train_data = _CachedFeatures(feats, targets, cfg.seed)
        collate_fn = None
    else:
        crop = inp.crop or size
        aug = train_transform(task.name, crop, ignore_index=spec.ignore_index, seed=cfg.seed) if cfg.augment else None
        full = make_dataset(spec, "train", num_samples=cfg.num_train_samples, transform=aug, **data_kw)
        train_data = Subset(full, train_idx)
        collate_fn = collate
    val_cache = None
    if use_cache and flips_only:  # validation images are window-sized too: score epochs on their cached features
        val_feats, val_targets = _extract(probe, Subset(base, val_idx), task, 1, cfg.eval_batch_size, show, cfg.num_workers, accelerator)
        val_cache = (val_feats[0], val_targets[0])
    timings["feature_cache_s"] = time.perf_counter() - start if use_cache else 0.0

    candidates = list(cfg.lr_candidates) or ([hp["lr"] * 10**-k for k in range(4)] if cfg.task == "classification" and cfg.lr is None else [hp["lr"]])
    attempts, best, train_seconds = [], None, 0.0
    for lr in candidates:  # the paper's classification lr (0.5 with Adam) is far too large for some encoders
        set_seed(cfg.seed)
        model = task.head_class.from_encoder(encoder, **head_kwargs)
        result = _fit(model, train_data, collate_fn, Subset(base, val_idx), task, spec, hp, lr, cfg, accelerator, image_size, use_cache,
                      val_cache=val_cache)
        train_seconds += result["seconds"]  # unrounded: a cached epoch can take a few milliseconds
        attempts.append({"lr": lr, "diverged": result["diverged"], "best_val": result["best_val"], "seconds": round(result["seconds"], 2)})
        if result["diverged"]:
            logger.warning(f"training diverged at lr={lr:g}", main_process_only=True)
            continue
        if best is None or _score(result["best_val"], task) > _score(best[1]["best_val"], task):
            best = (lr, result)
    if best is None:
        raise ValueError(f"Head training diverged at every learning rate {candidates}; pass smaller ones with --lr_candidates.")
    lr, result = best
    timings["train_s"] = train_seconds
    model = result["model"]

    clean = None
    start = time.perf_counter()
    if eval_ds is not None:
        eval_loader = accelerator.prepare(DataLoader(eval_ds, batch_size=cfg.eval_batch_size, collate_fn=collate,
                                                     num_workers=resolve_num_workers(cfg.num_workers, eval_ds)))
        clean = _numbers(evaluate(model, eval_loader, task, spec, accelerator=accelerator, desc="test")["none"])
        timings["test_s"] = time.perf_counter() - start
    info = {
        "task": task.name, "encoder": str(cfg.encoder or encoder.name_or_path), "dataset": spec.name,
        "eval_split": spec.eval_split, "metrics": clean, "validation": result["best_val"],
        "best_epoch": result["best_epoch"], "hyperparameters": {**hp, "lr": lr}, "lr_search": attempts,
        "image_size": image_size, "input_size": size, "window_stride": inp.stride, "feature_cache": use_cache, "num_train": len(train_idx), "num_val": n_val,
        "timings": timings, "mixed_precision": precision, "num_processes": accelerator.num_processes, "config": asdict(cfg),
        "key": head_key(cfg, encoder_identity(cfg.encoder or encoder.backbone, revision=cfg.revision).fingerprint, precision),
    }
    if cfg.output_dir is not None:
        out = Path(cfg.output_dir)
        if accelerator.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
            accelerator.unwrap_model(model).save_pretrained(out, embed_encoder=cfg.embed_encoder)
            write_json(out / "train_metrics.json", info)
        accelerator.wait_for_everyone()
    return accelerator.unwrap_model(model), info


# Settings that do not change the trained head (where it is saved, how fast it is made, what is scored after).
_NOT_IN_KEY = ("encoder", "revision", "output_dir", "num_workers", "eval_batch_size", "evaluate_test", "num_eval_samples", "max_cache_gb", "embed_encoder")


def head_key(cfg: TrainHeadConfig, encoder_fingerprint: str, precision: str) -> dict:
    """The identity of the head `cfg` trains: the encoder's weights fingerprint (`identity.py`), the data
    and every setting that changes the head. Saved in `train_metrics.json` as `key`; the benchmark reuses
    a head only when its key is equal."""
    key = {k: v for k, v in asdict(cfg).items() if k not in _NOT_IN_KEY}
    key.update(data_dir=str(Path(cfg.data_dir).resolve()) if cfg.data_dir else None, mixed_precision=precision,
               encoder_fingerprint=encoder_fingerprint)  # the fingerprint holds the revision's commit
    from .data.custom import dataset_identity

    if dataset_identity(cfg.dataset):  # a --dataset_name dataset: its source, columns and revision, not only its name
        key["dataset_identity"] = dataset_identity(cfg.dataset)
    return key


def _score(metrics: dict, task) -> float:
    value = metrics[task.primary_metric]
    return value if task.higher_is_better else -value


def _fit(model, train_data, collate_fn, val_data, task, spec, hp, lr, cfg, accelerator, image_size, use_cache, val_cache=None) -> dict:
    """Train on global batches of `hp["batch_size"]` split across processes (`distributed.py`): the same
    order, the same gradient and the same BatchNorm statistics on 1 or N processes."""
    params = list(model.head_parameters())
    if hp["optimizer"] == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=hp["weight_decay"])
    elif hp["optimizer"] == "adamw":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=hp["weight_decay"])
    else:
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=hp["weight_decay"])
    world, device = accelerator.num_processes, accelerator.device
    global_batch = hp["batch_size"]
    sampler = GlobalBatchSampler(len(train_data), global_batch, seed=cfg.seed, world=world, rank=accelerator.process_index,
                                 drop_last=len(train_data) > global_batch)
    # Not prepared: the sampler already gives this process its share of every global batch.
    loader = DataLoader(train_data, batch_sampler=sampler, collate_fn=collate_fn,
                        num_workers=resolve_num_workers(cfg.num_workers, train_data))
    val_loader = DataLoader(val_data, batch_size=cfg.eval_batch_size, collate_fn=collate, num_workers=resolve_num_workers(cfg.num_workers, val_data))
    model, opt, val_loader = accelerator.prepare(model, opt, val_loader)
    best, best_val, best_epoch, diverged = None, None, -1, False
    start = time.perf_counter()
    bar = tqdm(range(hp["epochs"]), desc=f"train {task.name} head", disable=not accelerator.is_local_main_process)
    for epoch in bar:
        _set_epoch(train_data, epoch)
        model.train()
        total, count = torch.zeros((), device=device), 0
        with synced_batchnorm(model, world):
            for batch in loader:
                batch = send_to_device(batch, device)
                if use_cache:
                    out = model(features=batch["features"], labels=batch["target"], image_size=(image_size, image_size))
                    local = batch["features"].shape[0]
                else:
                    out = model(pixel_values=batch["pixel_values"], labels=batch[task.target_key])
                    local = batch["pixel_values"].shape[0]
                size = min(global_batch, len(train_data))  # a single, partial global batch when the set is small
                opt.zero_grad(set_to_none=True)
                accelerator.backward(out.loss * global_mean_weight(local, size, world))
                opt.step()
                total += out.loss.detach()
                count += 1
        mean_loss = float(accelerator.reduce(total, reduction="mean")) / max(count, 1)
        if not math.isfinite(mean_loss):
            diverged = True
            break
        if val_cache is not None:
            val = _evaluate_cached(accelerator.unwrap_model(model), *val_cache, task, spec, image_size, cfg.eval_batch_size, accelerator)
        else:
            val = _numbers(evaluate(model, val_loader, task, spec, accelerator=accelerator, desc="val")["none"])
        if best_val is None or _score(val, task) > _score(best_val, task):
            best_val, best_epoch = val, epoch
            best = {k: v.detach().clone() for k, v in accelerator.unwrap_model(model).state_dict().items() if not k.startswith("encoder.")}
        bar.set_postfix(loss=f"{mean_loss:.3f}", **{f"val_{task.primary_metric}": f"{val[task.primary_metric]:.3f}"})
    unwrapped = accelerator.unwrap_model(model)
    if best is not None:
        unwrapped.load_state_dict(best, strict=False)
    return {"model": model, "best_val": best_val, "best_epoch": best_epoch, "diverged": diverged or best is None,
            "seconds": time.perf_counter() - start}


@torch.no_grad()
def _evaluate_cached(model, feats, targets, task, spec, image_size: int, batch_size: int, accelerator) -> dict:
    """`evaluate(...)["none"]` on cached features (every process holds them all: no gather): the same
    numbers as scoring the images, without running the frozen encoder again every epoch."""
    was_training = model.training
    model.eval()
    meter = task.make_meter(spec)
    try:
        for i in range(0, feats.shape[0], batch_size):
            with autocast(accelerator):
                pred = task.predict(model(features=feats[i : i + batch_size], image_size=(image_size, image_size)))
            meter.update(pred.float() if pred.is_floating_point() else pred, targets[i : i + batch_size])
    finally:
        model.train(was_training)
    return {**{k: float(v) for k, v in meter.compute().items()}, "num_samples": meter.num_samples}


def _numbers(metrics: dict) -> dict:
    """The metrics of a clean pass without the attack diagnostics (`flags`, `checkpoints`) `evaluate` adds."""
    return {k: v for k, v in metrics.items() if k not in ("flags", "checkpoints")}


def _set_epoch(data, epoch: int) -> None:
    """Tell a dataset (or the dataset under a `Subset`) the epoch: it seeds the per-sample augmentation."""
    while data is not None:
        if hasattr(data, "set_epoch"):
            data.set_epoch(epoch)
            return
        data = getattr(data, "dataset", None)
