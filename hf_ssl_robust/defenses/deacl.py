"""DeACL: adversarial fine-tuning of a self-supervised encoder by distillation from its clean self.

Zhang et al., "Decoupled Adversarial Contrastive Learning for Self-supervised Adversarial
Robustness" (ECCV 2022), https://arxiv.org/abs/2207.10899 (stage 2), as applied to DINO ViT-B/16
by Kowalczuk et al. (2024), https://arxiv.org/abs/2407.12588.

Teacher f = frozen copy of the pretrained encoder; student f_R starts from the same weights and
all of them are trained. Per batch x (pixels `[B, 3, H, W]` in [0, 1]):

    x_adv = argmax_{‖δ‖∞ ≤ ε} 1 − cos(f_R(x + δ), f(x))            (PGD on the student)
    L     = mean_b [1 − cos(f_R(x), f(x))] + γ · mean_b [1 − cos(f_R(x_adv), f_R(x))]

on the CLS token. `objective="dense"` (beyond the paper) adds the same two terms averaged over
patch tokens, weighted by `dense_weight`, and its inner attack maximises
`1 − cos` on the CLS token + `dense_weight` × the patch-token mean of `1 − cos` (the exact
student-vs-teacher part of the loss at x_adv), so the attack and the loss agree.

Differences from the paper's released code (reference-notes §9), all deliberate: SGD momentum
0.9 (the port has 0); the cosine schedule is stepped per optimisation step, not per epoch;
random resized crops of the full image with horizontal *and* vertical flips (the paper's words); `batch_size` is
the global batch, split across processes (the port's 128 per device gives 512 on 4 GPUs).

Resume is exact: the batch indices, the augmentation, the attack's random start and the global
RNG (dropout) of step t are pure functions of (seed, t, process index), and optimizer,
scheduler and RNG states live in the checkpoint (`Accelerator.save_state`).

Example:
    >>> path = train_deacl(DeACLConfig(encoder="dino-vitb16", dataset="shapes", max_steps=2000))
    >>> robust = load_encoder(path)            # or AutoModel.from_pretrained(path)
"""

from __future__ import annotations

import copy
import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..attacks import EmbedAttack, make_attack
from ..encoders import PixelEncoder, load_encoder
from ..processing import save_image_processor
from ..precision import make_accelerator, resolve_precision
from ..configs import ATTACK_ON, OBJECTIVES, DeACLConfig  # noqa: F401  (re-export: their home was here)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
CONFIG_NAME = "deacl_config.json"
STATE_NAME = "trainer_state.json"


def deacl_loss(student_clean: Tensor, student_adv: Tensor, teacher_clean: Tensor, gamma: float = 2.0) -> tuple[Tensor, dict[str, Tensor]]:
    """DeACL objective (Zhang et al. 2022, Eq. 2, https://arxiv.org/abs/2207.10899), minimised.

    `L = mean(1 − cos(f_R(x), f(x))) + γ · mean(1 − cos(f_R(x_adv), f_R(x)))`, the cosine over the
    last axis and the mean over all others. The teacher embedding gets no gradient.

    Args:
        student_clean: `[..., D]` student tokens of the clean images, e.g. CLS `[B, D]` or patch
            tokens `[B, N, D]`.
        student_adv: `[..., D]` student tokens of the adversarial images.
        teacher_clean: `[..., D]` teacher tokens of the clean images.
        gamma: weight of the robustness term.

    Returns:
        `(loss, parts)`: scalar loss and detached `{"distill", "robust"}` terms.
    """
    if not student_clean.shape == student_adv.shape == teacher_clean.shape:
        raise ValueError(f"Shapes differ: {tuple(student_clean.shape)}, {tuple(student_adv.shape)}, {tuple(teacher_clean.shape)}.")
    clean, adv = student_clean.float(), student_adv.float()
    distill = (1 - F.cosine_similarity(clean, teacher_clean.detach().float(), dim=-1)).mean()
    robust = (1 - F.cosine_similarity(adv, clean, dim=-1)).mean()
    return distill + gamma * robust, {"distill": distill.detach(), "robust": robust.detach()}


@dataclass
class DenseCosineAttack(EmbedAttack):
    """Inner maximisation of dense DeACL: per sample `1 − cos` of the CLS token plus
    `dense_weight` × the mean over patch tokens of `1 − cos`. `target = (cls [B, D], patches [B, N, D])`.
    """

    dense_weight: float = 1.0
    distance: str = "cosine"

    def forward(self, model: Any, pixels: Tensor) -> tuple[Tensor, Tensor]:
        out = model(pixels)
        return out.cls, out.patches

    def prepare_target(self, model: Any, pixels: Tensor, target: Any) -> tuple[Tensor, Tensor]:
        return tuple(t.detach() for t in target)

    def loss(self, outputs: tuple[Tensor, Tensor], target: tuple[Tensor, Tensor], step: int) -> Tensor:
        (cls, patches), (t_cls, t_patches) = outputs, target
        dense = (1 - F.cosine_similarity(patches, t_patches.to(patches.dtype), dim=-1)).mean(1)  # [B]
        return 1 - F.cosine_similarity(cls, t_cls.to(cls.dtype), dim=1) + self.dense_weight * dense


# --- data ----------------------------------------------------------------------------------------
class ImageFolderDataset(torch.utils.data.Dataset):
    """All images under `root` (recursively, sorted), short side resized to `size`, centre-cropped
    (`size=None`: the full images, for `FullImageCrops`)."""

    def __init__(self, root: str | Path, size: int | None):
        from ..data import CenterCrop, Compose, Resize

        root = Path(root).expanduser()
        if not root.is_dir():
            raise ValueError(f"image_folder {str(root)!r} is not a folder.")
        self.files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise ValueError(f"No images ({', '.join(IMAGE_SUFFIXES)}) found under {str(root)!r}.")
        self.transform = Compose([Resize(size), CenterCrop(size)] if size is not None else [])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        from ..data.loading import image_to_tensor

        return self.transform({"pixel_values": image_to_tensor(str(self.files[index]), index, "file")})


def resolve_image_size(cfg: DeACLConfig) -> int:
    """`cfg.image_size`, else ShapesWorld's native size, else 224 (the paper's DeACL resolution)."""
    if cfg.image_size is not None:
        return cfg.image_size
    if cfg.image_folder is None:
        from ..data import get_dataset_spec

        spec = get_dataset_spec(cfg.dataset)
        if spec.source == "synthetic":
            return spec.image_size if isinstance(spec.image_size, int) else min(spec.image_size)
    return 224


def build_dataset(cfg: DeACLConfig, image_size: int, full: bool = False) -> torch.utils.data.Dataset:
    """Training images as a dataset of `{"pixel_values": [3, S, S]}` (other keys are ignored);
    `full=True`: the whole images at their own sizes (ShapesWorld: rendered at `image_size`)."""
    if cfg.image_folder is not None:
        return ImageFolderDataset(cfg.image_folder, None if full else image_size)
    from ..data import CenterCrop, Compose, Resize, get_dataset_spec, make_dataset

    spec = get_dataset_spec(cfg.dataset)
    if spec.source == "synthetic" and cfg.data_dir is None:
        return make_dataset(spec, "train", num_samples=cfg.num_train_samples, image_size=image_size, seed=cfg.seed)
    transform = Compose([] if full else [Resize(image_size), CenterCrop(image_size)])
    return make_dataset(spec, "train", transform=transform, data_dir=cfg.data_dir, seed=cfg.seed)


class FullImageCrops(torch.utils.data.Dataset):
    """The paper's DeACL augmentation, taken from the FULL image: a random resized crop (area in
    [min_scale, 1], aspect in [3/4, 4/3]) resized to `size`², then horizontal and vertical flips.
    Items are `(index, seed)` pairs (`StepBatchSampler(seeded=True)`), so each crop is a pure
    function of (seed, step, image): exact resume and any number of workers give the same batches."""

    def __init__(self, dataset, size: int, min_scale: float):
        from ..data import Compose, RandomHorizontalFlip, RandomResizedCrop, RandomVerticalFlip

        self.dataset = dataset
        self.transform = Compose([RandomResizedCrop(size, scale=(min_scale, 1.0)), RandomHorizontalFlip(), RandomVerticalFlip()])

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> dict[str, Tensor]:
        index, seed = item
        sample = {"pixel_values": self.dataset[index]["pixel_values"]}
        return self.transform(sample, generator=torch.Generator().manual_seed(seed))


def _mix(*values: int) -> int:
    """Hash integers into a 63-bit seed (splitmix64 steps), so nearby steps get unrelated streams."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h = (h ^ (h >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
    return h >> 1


class StepBatchSampler(torch.utils.data.Sampler):
    """This process's indices for steps `start..total-1`: epoch e is a permutation seeded by
    (seed, e), step t takes its `t mod steps_per_epoch`-th global batch, process r its r-th slice."""

    def __init__(self, n: int, global_batch: int, seed: int, start: int, total: int, rank: int, world: int, seeded: bool = False):
        self.n, self.batch, self.seed, self.start, self.total, self.seeded = n, global_batch, seed, start, total, seeded
        self.rank, self.local = rank, global_batch // world
        self.steps_per_epoch = n // global_batch

    def __len__(self) -> int:
        return self.total - self.start

    def __iter__(self):
        perm, perm_epoch = None, -1
        for step in range(self.start, self.total):
            epoch, pos = divmod(step, self.steps_per_epoch)
            if epoch != perm_epoch:
                perm, perm_epoch = torch.randperm(self.n, generator=torch.Generator().manual_seed(_mix(self.seed, epoch))), epoch  # cpu-ok: sampler indices
            lo = pos * self.batch + self.rank * self.local
            indices = perm[lo : lo + self.local].tolist()
            yield [(i, _mix(self.seed, step, i, 2)) for i in indices] if self.seeded else indices


def lr_lambda(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Linear warm-up to the peak, then cosine decay to 0, per step."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


# --- training --------------------------------------------------------------------------------------
def _checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints (their state JSON is written last), oldest first."""
    found = [p for p in (output_dir / "checkpoints").glob("step_*") if (p / STATE_NAME).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def _append_jsonl(path: Path, record: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def train_deacl(
    cfg: DeACLConfig,
    accelerator=None,
    eval_fn: Callable[[int, PixelEncoder], dict] | None = None,
) -> Path:
    """Fine-tune `cfg.encoder` with DeACL and save it to `cfg.output_dir`.

    Args:
        cfg: the run.
        accelerator: an `accelerate.Accelerator` used for this run only (default: a new one with
            `cfg.mixed_precision`). For several processes, build it with
            `DistributedDataParallelKwargs(find_unused_parameters=True)`: DINOv2's mask token
            never gets a gradient.
        eval_fn: `(step, encoder) -> dict`, called on every process every `cfg.eval_every` steps
            (and at steps 0 and the last) with the student in eval mode; the main process appends
            `{"step": step, **result}` to `output_dir/evolution.jsonl`.

    Returns:
        `output_dir`, holding the student as a plain backbone (`AutoModel.from_pretrained` loads
        it), `deacl_config.json`, `log.jsonl` and `checkpoints/step_N`. A run cut short by
        `stop_after_steps` only checkpoints; `resume=True` finishes it and saves the encoder.

    Raises:
        ValueError: a dataset smaller than one batch, a batch not divisible by the processes.
    """
    from accelerate import DistributedDataParallelKwargs
    from accelerate.logging import get_logger
    from tqdm.auto import tqdm

    if accelerator is None:
        # Some backbone parameters (DINOv2's mask token) never get a gradient.
        ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
        accelerator = make_accelerator(cfg.mixed_precision, kwargs_handlers=[ddp])
    precision = resolve_precision(cfg.mixed_precision, accelerator)
    logger = get_logger(__name__)
    out_dir = Path(cfg.output_dir)
    rank, world = accelerator.process_index, accelerator.num_processes
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} (global) must be divisible by the {world} processes.")

    size = resolve_image_size(cfg)
    dataset = FullImageCrops(build_dataset(cfg, size, full=True), size, cfg.min_crop_scale) if cfg.augment else build_dataset(cfg, size)
    steps_per_epoch = len(dataset) // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"The dataset has {len(dataset)} images, fewer than batch_size={cfg.batch_size}: lower batch_size.")
    total = cfg.max_steps if cfg.max_steps is not None else cfg.epochs * steps_per_epoch
    ratio = cfg.warmup_ratio if cfg.warmup_ratio is not None else cfg.warmup_epochs / cfg.epochs
    warmup = round(ratio * total)
    stop = min(total, cfg.stop_after_steps or total)

    teacher = load_encoder(cfg.encoder).to(accelerator.device)
    student = copy.deepcopy(teacher).train()
    teacher.eval().requires_grad_(False)
    student.requires_grad_(True)
    optimizer = torch.optim.SGD(student.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    # Not prepared: accelerate's scheduler wrapper steps once per process; we step once per update.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total, warmup))
    student, optimizer = accelerator.prepare(student, optimizer)
    accelerator.register_for_checkpointing(scheduler)

    start = 0
    if cfg.resume and _checkpoints(out_dir):
        last = _checkpoints(out_dir)[-1]
        accelerator.load_state(str(last))
        start = json.loads((last / STATE_NAME).read_text())["step"]
        logger.info(f"Resumed from {last} at step {start}.", main_process_only=True)
    resolved = dict(cfg.to_dict(), mixed_precision=precision, image_size=size, total_steps=total, warmup_steps=warmup, steps_per_epoch=steps_per_epoch,
                    num_processes=world, num_train_images=len(dataset))  # fmt: skip
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / CONFIG_NAME).write_text(json.dumps(resolved, indent=2))
        log_path = out_dir / "log.jsonl"
        if log_path.exists():  # drop entries after the checkpoint we resume from (or all on a fresh run)
            keep = [line for line in log_path.read_text().splitlines() if line and json.loads(line)["step"] <= start]
            log_path.write_text("".join(line + "\n" for line in keep))
    logger.info(f"DeACL config: {json.dumps(resolved)}", main_process_only=True)

    sampler = StepBatchSampler(len(dataset), cfg.batch_size, cfg.seed, start, stop, rank, world, seeded=cfg.augment)
    from ..data.loaders import resolve_num_workers

    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=resolve_num_workers(cfg.num_workers, dataset))
    raw_student = accelerator.unwrap_model(student)
    attack_model = raw_student if cfg.attack_on == "student" else teacher
    dense = cfg.objective == "dense"

    def evaluate(step: int) -> None:
        if eval_fn is None:
            return
        raw_student.eval()
        result = eval_fn(step, raw_student)
        raw_student.train()
        if accelerator.is_main_process:
            _append_jsonl(out_dir / "evolution.jsonl", {"step": step, **(result or {})})

    if cfg.eval_every and start == 0:
        evaluate(0)
    bar = tqdm(total=stop, initial=start, desc="DeACL", disable=not accelerator.is_local_main_process)
    for step, batch in enumerate(loader, start=start):
        torch.manual_seed(_mix(cfg.seed, step, rank, 1))  # dropout / drop-path: a function of the step
        x = batch["pixel_values"].to(accelerator.device, non_blocking=True)  # augmented from the full image (FullImageCrops)
        with torch.no_grad(), accelerator.autocast():
            t_out = teacher(x)
        target = (t_out.cls, t_out.patches) if dense else t_out.cls
        kw = dict(eps=cfg.eps, step_size=cfg.attack_step_size, steps=cfg.attack_steps, seed=_mix(cfg.seed, step, rank, 3))
        if dense:
            attack = DenseCosineAttack(dense_weight=cfg.dense_weight, **kw)
        else:
            attack = make_attack("embed", distance="cosine", tokens="cls", **kw)
        with accelerator.autocast():
            x_adv = attack.perturb(attack_model, x, target).pixels
            s_out = student(torch.cat([x, x_adv]))  # student in train mode, one forward for both
        s_cls, s_cls_adv = s_out.cls.chunk(2)
        loss, parts = deacl_loss(s_cls, s_cls_adv, t_out.cls, cfg.gamma)
        if dense:
            s_patch, s_patch_adv = s_out.patches.chunk(2)
            dense_loss, dense_parts = deacl_loss(s_patch, s_patch_adv, t_out.patches, cfg.gamma)
            loss = loss + cfg.dense_weight * dense_loss
            parts.update({f"dense_{k}": v for k, v in dense_parts.items()})
        accelerator.backward(loss)
        lr = optimizer.param_groups[0]["lr"]  # the rate this step used
        optimizer.step()
        if not accelerator.optimizer_step_was_skipped:  # fp16 overflow: keep the schedule in step
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        bar.update(1)

        if done % cfg.log_every == 0 or done == stop:
            values = accelerator.reduce(torch.stack([loss.detach().float(), *parts.values()]), reduction="mean").tolist()
            record = {"step": done, "epoch": step // steps_per_epoch, "lr": lr, "loss": values[0]}
            record.update(zip(parts, values[1:]))
            bar.set_postfix({k: f"{v:.4f}" for k, v in record.items() if k not in ("step", "epoch")})
            if accelerator.is_main_process:
                _append_jsonl(out_dir / "log.jsonl", record)
        if (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or (done == stop < total):
            _save_checkpoint(accelerator, out_dir, done, steps_per_epoch, cfg.keep_last)
        if cfg.eval_every and (done % cfg.eval_every == 0 or done == total):
            evaluate(done)
    bar.close()

    accelerator.wait_for_everyone()
    if stop == total and accelerator.is_main_process:
        raw_student.save_pretrained(out_dir)
        save_image_processor(out_dir)  # for transformers.pipeline("image-feature-extraction", model=out_dir)
    accelerator.wait_for_everyone()
    return out_dir


def _save_checkpoint(accelerator, out_dir: Path, step: int, steps_per_epoch: int, keep_last: int) -> None:
    path = out_dir / "checkpoints" / f"step_{step}"
    accelerator.save_state(str(path))  # model, optimizer, scheduler, RNG states, grad scaler
    if accelerator.is_main_process:
        state = {"step": step, "epoch": step // steps_per_epoch, "position_in_epoch": step % steps_per_epoch}
        (path / STATE_NAME).write_text(json.dumps(state))  # written last: marks the checkpoint complete
        for old in _checkpoints(out_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
