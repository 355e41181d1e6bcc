"""Self-supervised pretraining of the embedded default's tiny encoder on ShapesWorld.

`--arch resnet` (the default, the bundled `shapes-resnet-tiny`): a tiny `ResNetModel` trained with
InfoNCE (SimCLR, Chen et al. 2020, https://arxiv.org/abs/2002.05709) on its pooled token plus a
dense InfoNCE on feature-map points that show the same scene point in both views. The two views
of a scene are two renders that share its geometry (camera, shapes, places, sizes) and redraw all
of its appearance (`render_scenes(appearance=...)`): colour, texture, sky, light and noise are not
shared, so shape is what the views have in common; independent crops, flips, colour jitter and
grayscale are applied on top, with the crop geometry known so that the dense term compares the same
point. No labels, masks or depth enter training; a frozen-feature probe (linear on the pooled token,
per-position segmentation and depth) is printed every `--probe_every_minutes` on 256 scenes of the
validation split, starting with the random init (the benchmark's test scenes are never rendered here:
`hf_ssl_robust.data.synthetic.scene_streams` lists which stream each step reads). DINO was tried first on these view pairs and collapsed to a
uniform teacher (DESIGN.md §6): with no appearance cue left, self-distillation had nothing to
hold on to, while a contrastive loss has every other scene of the batch as a negative.

`--arch vit`: the earlier recipe, DINO self-distillation (Caron et al. 2021,
https://arxiv.org/abs/2104.14294) + an iBOT masked-patch loss (Zhou et al. 2022,
https://arxiv.org/abs/2111.07832) of a tiny `Dinov2Model` on multi-crop views of whole scenes.

    python -m hf_ssl_robust.pretraining --output_dir outputs/embedded/shapes-resnet-tiny   # see make_embedded_default.sh
    accelerate launch -m hf_ssl_robust.pretraining --num_workers 8 ...                    # a GPU: batches made in workers

(`scripts/pretrain_tiny.py` is the same entry point.) Checkpoints (`--checkpoint_every`) resume exactly with
`--resume`, and resuming a run that has finished only says so; `--max_minutes` and
`--stop_after_steps` stop early. The final encoder is saved as a plain backbone (config.json +
model.safetensors) that `AutoModel.from_pretrained` loads.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from tqdm.auto import tqdm
from transformers import Dinov2Config, Dinov2Model, ResNetConfig, ResNetModel

from hf_ssl_robust.data.synthetic import render_scenes, scene_streams
from hf_ssl_robust.encoders import IMAGENET_MEAN, IMAGENET_STD


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", default="outputs/pretrain_tiny")
    p.add_argument("--arch", choices=["resnet", "vit"], default="resnet",
                   help="resnet: geometry-contrastive recipe (the embedded default); vit: DINO + iBOT on a tiny Dinov2")
    p.add_argument("--image_size", type=int, default=64, help="global crop size (ShapesWorld scenes are rendered at 80)")
    p.add_argument("--local_size", type=int, default=32)
    p.add_argument("--num_local", type=int, default=4)
    p.add_argument("--patch_size", type=int, default=8)
    p.add_argument("--hidden_size", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--out_dim", type=int, default=1024, help="DINO prototypes")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min_lr", type=float, default=1e-5)
    p.add_argument("--warmup_steps", type=int, default=100)
    p.add_argument("--max_steps", type=int, default=1500)
    p.add_argument("--max_minutes", type=float, default=None, help="stop early after this wall time (the schedule still assumes max_steps)")
    p.add_argument("--weight_decay", type=float, default=0.04)
    p.add_argument("--weight_decay_end", type=float, default=0.2)
    p.add_argument("--teacher_temp", type=float, default=0.04)
    p.add_argument("--student_temp", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.99, help="EMA teacher momentum (→ 1 on a cosine)")
    p.add_argument("--ibot_weight", type=float, default=1.0, help="weight of the masked patch loss (0 = plain DINO)")
    p.add_argument("--mask_ratio", type=float, default=0.3)
    p.add_argument("--patch_init", choices=["random", "whiten"], default="random",
                   help="whiten: start the patch embedding as PCA whitening of ShapesWorld patches (no labels used)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint_every", type=int, default=250)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--num_threads", type=int, default=None)
    p.add_argument("--num_workers", type=int, default=0, help="DataLoader workers that render scenes (use a few on a GPU)")
    r = p.add_argument_group("resnet (geometry-contrastive recipe)")
    r.add_argument("--embedding_size", type=int, default=32)
    r.add_argument("--hidden_sizes", type=int, nargs="+", default=[64, 128])
    r.add_argument("--depths", type=int, nargs="+", default=[2, 2])
    r.add_argument("--temperature", type=float, default=0.2, help="InfoNCE temperature of the pooled-token loss")
    r.add_argument("--dense_weight", type=float, default=1.0, help="weight of the dense InfoNCE (0 = pooled token only)")
    r.add_argument("--dense_points", type=int, default=16, help="matched scene points per image for the dense loss")
    r.add_argument("--dense_temperature", type=float, default=0.2)
    r.add_argument("--crop_min", type=float, default=0.4, help="smallest crop area (fraction of the render)")
    r.add_argument("--gray_p", type=float, default=0.2)
    r.add_argument("--render_size", type=int, default=64, help="size the scene pairs are rendered (and probed) at; crops are resized to --image_size")
    r.add_argument("--pool_scenes", type=int, default=65536, help="scene pairs rendered once and reused with fresh crops")
    r.add_argument("--pool_cache", default=None, help="folder caching the rendered pairs (default: OUTPUT_DIR/pool)")
    r.add_argument("--probe_scenes", type=int, default=2048, help="labelled scenes for the frozen probes (never trained on)")
    r.add_argument("--stop_after_steps", type=int, default=None,
                   help="stop (saving the encoder) at this step, keeping the learning-rate schedule of --max_steps")
    r.add_argument("--probe_every_minutes", type=float, default=5.0, help="print a frozen probe line this often (0: never)")
    args = p.parse_args(argv)
    if args.arch == "resnet" and len(args.hidden_sizes) != len(args.depths):
        p.error("--hidden_sizes and --depths need one value per stage")
    return args


class DINOHead(nn.Module):
    """MLP → L2-normalised bottleneck → weight-normalised prototypes (as in DINO)."""

    def __init__(self, dim: int, out_dim: int, hidden: int = 512, bottleneck: int = 128):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, bottleneck))
        self.last = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck, out_dim, bias=False))
        self.last.parametrizations.weight.original0.data.fill_(1.0)
        self.last.parametrizations.weight.original0.requires_grad_(False)

    def forward(self, x):
        return self.last(F.normalize(self.mlp(x), dim=-1))


class Network(nn.Module):
    def __init__(self, backbone: Dinov2Model, head: DINOHead):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, pixels, mask=None):
        tokens = self.backbone(pixel_values=(pixels - self.mean) / self.std, bool_masked_pos=mask).last_hidden_state
        return self.head(tokens)  # [B, 1 + N, out_dim]: CLS logits and patch logits


def random_views(images: torch.Tensor, size: int, scale: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    """Batched random-resized crop + horizontal flip + colour jitter/grayscale, one affine grid per image."""
    b = images.shape[0]
    area = torch.empty(b).uniform_(*scale, generator=gen)
    log_ratio = torch.empty(b).uniform_(math.log(3 / 4), math.log(4 / 3), generator=gen)
    ratio = log_ratio.exp()
    sw = (area * ratio).sqrt().clamp(max=1.0)  # crop width/height as fractions of the image
    sh = (area / ratio).sqrt().clamp(max=1.0)
    cx = (torch.rand(b, generator=gen) * 2 - 1) * (1 - sw)
    cy = (torch.rand(b, generator=gen) * 2 - 1) * (1 - sh)
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = sw * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = sh, cy
    grid = F.affine_grid(theta, (b, 3, size, size), align_corners=False)
    views = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # Colour jitter: brightness, contrast, saturation; random grayscale.
    bright = torch.empty(b, 1, 1, 1).uniform_(0.6, 1.4, generator=gen)
    contrast = torch.empty(b, 1, 1, 1).uniform_(0.6, 1.4, generator=gen)
    sat = torch.empty(b, 1, 1, 1).uniform_(0.6, 1.4, generator=gen)
    views = views * bright
    mean = views.mean(dim=(1, 2, 3), keepdim=True)
    views = (views - mean) * contrast + mean
    gray = (views * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    views = (views - gray) * sat + gray
    to_gray = (torch.rand(b, 1, 1, 1, generator=gen) < 0.2).float()
    views = views * (1 - to_gray) + gray * to_gray
    return views.clamp(0, 1)


@torch.no_grad()
def whiten_patch_embedding(backbone: Dinov2Model, images: torch.Tensor, eps: float = 1e-2) -> None:
    """Initialise the patch projection as PCA whitening of the patches of ``images`` ([N, 3, S, S] in [0, 1]).

    Row ``i`` projects a patch onto its ``i``-th principal direction, scaled to unit variance, and the
    bias centres it, so the first layer starts with decorrelated, equally scaled inputs (a
    label-free, data-dependent init that shortens the plateau a ViT trained from scratch sits on).
    Rows beyond ``3 * patch**2`` keep their random init."""
    proj = backbone.embeddings.patch_embeddings.projection
    p = proj.kernel_size[0]
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = (images - mean) / std
    patches = x.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 1, 4, 5).reshape(-1, 3 * p * p).double()
    centre = patches.mean(0)
    eigvals, eigvecs = torch.linalg.eigh(torch.cov((patches - centre).T))  # ascending
    k = min(proj.out_channels, patches.shape[1])
    weight = (eigvecs.flip(1)[:, :k].T / (eigvals.flip(0)[:k].clamp_min(0) + eps).sqrt()[:, None]).float()
    proj.weight[:k] = weight.view(k, 3, p, p)
    proj.bias[:k] = -(weight @ centre.float())


class StepStream(torch.utils.data.IterableDataset):
    """An endless stream whose item is a pure function of the step (`self.item(step)`): DataLoader
    worker w of W yields steps start + w, start + w + W, ..., so any number of workers gives the
    same batches in the same order."""

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        step = self.start + worker
        while True:
            yield self.item(step)
            step += workers


class ViewStream(StepStream):
    """The multi-crop views of every training step from ``start`` on, rendered on the fly.

    Step ``t`` of process ``rank`` renders its own slice of the ShapesWorld stream and draws its crops
    and iBOT mask from a generator seeded by ``(seed, t, rank)``, so a resumed run, and any number of
    DataLoader workers (they take steps round-robin, which the DataLoader returns in order), see
    exactly the same batches. Yields ``(global views [2B, 3, S, S], [local views], mask [2B, N])``."""

    def __init__(self, args, start: int, num_processes: int = 1, rank: int = 0):
        self.args, self.start, self.num_processes, self.rank = args, start, num_processes, rank

    def item(self, step: int):
        return self.views(step)

    def views(self, step: int):
        a = self.args
        gen = torch.Generator().manual_seed(a.seed * 1_000_003 + step * self.num_processes + self.rank)
        first = (step * self.num_processes + self.rank) * a.batch_size
        images = render_scenes(a.batch_size, a.image_size + a.image_size // 4, seed=scene_streams(a.seed)["pretraining"], start=first)["pixel_values"]
        globals_ = torch.cat([random_views(images, a.image_size, (0.35, 1.0), gen) for _ in range(2)])
        locals_ = [random_views(images, a.local_size, (0.08, 0.35), gen) for _ in range(a.num_local)]
        mask = torch.rand(2 * a.batch_size, (a.image_size // a.patch_size) ** 2, generator=gen) < a.mask_ratio
        return globals_, locals_, mask



def whiten_on_shapes(backbone: Dinov2Model, image_size: int, seed: int) -> None:
    """`whiten_patch_embedding` on 512 ShapesWorld scenes from their own stream (training scenes untouched)."""
    whiten_patch_embedding(backbone, render_scenes(512, image_size, seed=scene_streams(seed)["whitening"])["pixel_values"])


def cosine(step: int, total: int, start: float, end: float, warmup: int = 0) -> float:
    if step < warmup:
        return start * step / max(1, warmup)
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * t))


def save_encoder(backbone: nn.Module, out: Path, args) -> None:
    out.mkdir(parents=True, exist_ok=True)
    backbone.config.image_size = args.render_size if args.arch == "resnet" else args.image_size  # the size it is used at
    backbone.save_pretrained(out, safe_serialization=True)


def main(argv=None):
    args = parse_args(argv)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    accelerator = Accelerator()
    set_seed(args.seed)
    if args.arch == "resnet":
        return main_contrastive(args, accelerator)
    out = Path(args.output_dir)
    ckpt_dir = out / "checkpoints"

    config = Dinov2Config(
        image_size=args.image_size, patch_size=args.patch_size, hidden_size=args.hidden_size, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, mlp_ratio=4, layerscale_value=0.1, drop_path_rate=0.0,
    )
    student = Network(Dinov2Model(config), DINOHead(args.hidden_size, args.out_dim))
    if args.patch_init == "whiten":
        whiten_on_shapes(student.backbone, args.image_size, args.seed)
    teacher = Network(Dinov2Model(config), DINOHead(args.hidden_size, args.out_dim))
    teacher.load_state_dict(student.state_dict())
    teacher.requires_grad_(False)
    center = torch.zeros(1, args.out_dim)
    patch_center = torch.zeros(1, args.out_dim)

    decay = [p for n, p in student.named_parameters() if p.requires_grad and p.ndim > 1 and "embeddings" not in n]
    no_decay = [p for n, p in student.named_parameters() if p.requires_grad and (p.ndim <= 1 or "embeddings" in n)]
    optimizer = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    student, teacher, optimizer = accelerator.prepare(student, teacher, optimizer)
    teacher.eval()

    step = 0
    if args.resume and ckpt_dir.is_dir():
        last = sorted(ckpt_dir.glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
        if last:
            accelerator.load_state(str(last[-1]))
            extra = torch.load(last[-1] / "extra.pt", weights_only=True)
            step, center, patch_center = extra["step"], extra["center"], extra["patch_center"]
            accelerator.print(f"resumed from {last[-1]} at step {step}")

    stream = ViewStream(args, step, accelerator.num_processes, accelerator.process_index)
    batches = iter(torch.utils.data.DataLoader(stream, batch_size=None, num_workers=args.num_workers))
    center, patch_center = center.to(accelerator.device), patch_center.to(accelerator.device)
    start_time = time.time()
    bar = tqdm(total=args.max_steps, initial=step, disable=not accelerator.is_local_main_process, desc="DINO")
    history = []
    while step < args.max_steps:
        if args.max_minutes and (time.time() - start_time) / 60 > args.max_minutes:
            accelerator.print(f"stopping at step {step}: --max_minutes {args.max_minutes} reached")
            break
        globals_, locals_, mask = next(batches)
        globals_, locals_ = globals_.to(accelerator.device), [v.to(accelerator.device) for v in locals_]
        mask = mask.to(accelerator.device) if args.ibot_weight > 0 else None
        lr = cosine(step, args.max_steps, args.lr, args.min_lr, args.warmup_steps)
        wd = cosine(step, args.max_steps, args.weight_decay_end, args.weight_decay)  # grows
        for i, group in enumerate(optimizer.param_groups):
            group["lr"] = lr
            if i == 0:
                group["weight_decay"] = wd
        teacher_temp = args.teacher_temp

        g = globals_
        with torch.no_grad():
            t_out = teacher(g)
            t_cls = F.softmax((t_out[:, 0] - center) / teacher_temp, dim=-1).chunk(2)
            t_patch = F.softmax((t_out[:, 1:] - patch_center) / teacher_temp, dim=-1)
        s_global = student(g, mask)
        s_cls = [s_global[:, 0].chunk(2)[i] for i in range(2)] + [student(v)[:, 0] for v in locals_]
        loss, terms = 0.0, 0
        for ti, t in enumerate(t_cls):
            for si, s in enumerate(s_cls):
                if si == ti:
                    continue
                loss = loss + torch.sum(-t * F.log_softmax(s / args.student_temp, dim=-1), dim=-1).mean()
                terms += 1
        loss = loss / terms
        ibot = torch.zeros((), device=accelerator.device)
        if mask is not None and mask.any():
            s_patch = F.log_softmax(s_global[:, 1:] / args.student_temp, dim=-1)
            per_tok = torch.sum(-t_patch * s_patch, dim=-1)  # [2B, N]
            ibot = (per_tok * mask).sum() / mask.sum().clamp(min=1)
            loss = loss + args.ibot_weight * ibot

        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(student.parameters(), 3.0)
        optimizer.step()
        with torch.no_grad():
            m = 1 - (1 - args.momentum) * (math.cos(math.pi * step / args.max_steps) + 1) / 2
            for ps, pt in zip(accelerator.unwrap_model(student).parameters(), accelerator.unwrap_model(teacher).parameters()):
                pt.mul_(m).add_(ps.detach(), alpha=1 - m)
            batch_center = accelerator.reduce(t_out[:, 0].mean(0, keepdim=True), reduction="mean")
            center = center * 0.9 + batch_center * 0.1
            if mask is not None:
                patch_mean = accelerator.reduce(t_out[:, 1:].mean((0, 1)).unsqueeze(0), reduction="mean")
                patch_center = patch_center * 0.9 + patch_mean * 0.1
        step += 1
        bar.update(1)
        if step % 20 == 0:
            rec = {"step": step, "loss": float(loss), "ibot": float(ibot), "lr": lr, "minutes": (time.time() - start_time) / 60}
            history.append(rec)
            if accelerator.is_main_process:
                out.mkdir(parents=True, exist_ok=True)
                with open(out / "training_log.jsonl", "a") as f:
                    f.write(json.dumps(rec) + "\n")
            bar.set_postfix(loss=f"{rec['loss']:.3f}", ibot=f"{rec['ibot']:.3f}")
        if args.checkpoint_every and step % args.checkpoint_every == 0:
            path = ckpt_dir / f"step_{step}"
            accelerator.save_state(str(path))
            if accelerator.is_main_process:
                torch.save({"step": step, "center": center, "patch_center": patch_center}, path / "extra.pt")
                save_encoder(accelerator.unwrap_model(teacher).backbone, out, args)  # latest teacher, for probing mid-run
                for old in sorted(ckpt_dir.glob("step_*"), key=lambda p: int(p.name.split("_")[1]))[:-2]:
                    shutil.rmtree(old)
    bar.close()

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        # The teacher is the better encoder in DINO; save its backbone alone.
        save_encoder(accelerator.unwrap_model(teacher).backbone, out, args)
        train_info = {k: v for k, v in vars(args).items()}
        train_info.update(steps_done=step, minutes=(time.time() - start_time) / 60, processes=accelerator.num_processes,
                          torch_threads=torch.get_num_threads())
        (out / "training_args.json").write_text(json.dumps(train_info, indent=2))
        accelerator.print(f"saved encoder to {out} after {step} steps in {train_info['minutes']:.1f} min")


# --- ResNet + geometry-contrastive recipe ----------------------------------------------------
# DINO collapsed on these views (DESIGN.md §6): the two renders of a scene share nothing but its
# geometry, so a self-distilled teacher had no appearance cue left and went uniform. A contrastive
# objective cannot collapse that way (every other scene in the batch is a negative), so the
# convolutional default uses InfoNCE on the pooled token (SimCLR, Chen et al. 2020,
# https://arxiv.org/abs/2002.05709) plus a dense InfoNCE on feature-map positions that show the
# same point of the scene in both views (the renders align pixel for pixel, and the crop geometry
# is known), in the spirit of VICRegL / DenseCL.


def resnet_config(args) -> ResNetConfig:
    return ResNetConfig(embedding_size=args.embedding_size, hidden_sizes=list(args.hidden_sizes), depths=list(args.depths),
                        layer_type="basic", downsample_in_first_stage=False, image_size=args.render_size)


class ContrastiveNetwork(nn.Module):
    """ResNet backbone + an MLP projector on the pooled token + a 1x1-conv projector on the feature map."""

    def __init__(self, backbone: ResNetModel, proj_dim: int = 128, dense_dim: int = 64):
        super().__init__()
        dim = backbone.config.hidden_sizes[-1]
        self.backbone = backbone
        self.proj = nn.Sequential(nn.Linear(dim, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, proj_dim))
        self.dense = nn.Sequential(nn.Conv2d(dim, 256, 1), nn.BatchNorm2d(256), nn.ReLU(), nn.Conv2d(256, dense_dim, 1))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, pixels):
        out = self.backbone(pixel_values=(pixels - self.mean) / self.std)
        return self.proj(out.pooler_output.flatten(1)), self.dense(out.last_hidden_state)


def crop_boxes(b: int, scale: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    """Random-resized-crop boxes as affine parameters ``[B, 5]``: (width, height, centre x, centre y, flip)
    in the normalised [-1, 1] coordinates of the source image."""
    area = torch.empty(b).uniform_(*scale, generator=gen)
    ratio = torch.empty(b).uniform_(math.log(3 / 4), math.log(4 / 3), generator=gen).exp()
    sw, sh = (area * ratio).sqrt().clamp(max=1.0), (area / ratio).sqrt().clamp(max=1.0)
    cx = (torch.rand(b, generator=gen) * 2 - 1) * (1 - sw)
    cy = (torch.rand(b, generator=gen) * 2 - 1) * (1 - sh)
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    return torch.stack([sw, sh, cx, cy, flip], 1)


def apply_crops(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    sw, sh, cx, cy, flip = boxes.unbind(1)
    theta = torch.zeros(images.shape[0], 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sw * flip, cx, sh, cy
    grid = F.affine_grid(theta, (images.shape[0], 3, size, size), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def view_coords(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Source-image points ``[B, K, 2]`` -> their normalised coordinates inside each crop."""
    sw, sh, cx, cy, flip = (t[:, None] for t in boxes.unbind(1))
    return torch.stack([(points[..., 0] - cx) / (sw * flip), (points[..., 1] - cy) / sh], -1)


def colour_jitter(views: torch.Tensor, gen: torch.Generator, gray_p: float) -> torch.Tensor:
    b = views.shape[0]
    views = views * torch.empty(b, 1, 1, 1).uniform_(0.7, 1.3, generator=gen)
    mean = views.mean(dim=(1, 2, 3), keepdim=True)
    views = (views - mean) * torch.empty(b, 1, 1, 1).uniform_(0.7, 1.3, generator=gen) + mean
    gray = (views * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    to_gray = (torch.rand(b, 1, 1, 1, generator=gen) < gray_p).float()
    return (views * (1 - to_gray) + gray * to_gray).clamp(0, 1)


class PairPool:
    """Pairs of renders of the same scenes (same geometry, independently drawn appearance), rendered
    once in chunks of up to 1024 and cached on disk as uint8; epochs reuse them with fresh crops."""

    CHUNK = 1024

    def __init__(self, num: int, size: int, seed: int, cache_dir: Path):
        chunk = min(self.CHUNK, num)
        self.num = -(-num // chunk) * chunk
        cache_dir.mkdir(parents=True, exist_ok=True)
        chunks = []
        for start in tqdm(range(0, self.num, chunk), desc="rendering view pairs", leave=False):
            path = cache_dir / f"pairs_seed{seed}_size{size}_chunk{chunk}_{start:07d}.pt"
            if not path.is_file():
                views = torch.stack([render_scenes(chunk, size, seed=seed, start=start, appearance=a)["pixel_values"] for a in (0, 1)])
                torch.save((views * 255).round().to(torch.uint8), str(path) + ".tmp")
                Path(str(path) + ".tmp").rename(path)
            chunks.append(torch.load(path, weights_only=True))
        self.views = torch.cat(chunks, 1)  # [2, N, 3, S, S] uint8

    def batch(self, step: int, batch_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The pairs of step ``step``: a fresh permutation of the pool each epoch (deterministic)."""
        per_epoch = self.num // batch_size
        epoch, i = divmod(step, per_epoch)
        order = torch.randperm(self.num, generator=torch.Generator().manual_seed(seed * 7919 + epoch))
        idx = order[i * batch_size : (i + 1) * batch_size]
        return self.views[0, idx].float() / 255, self.views[1, idx].float() / 255


class PairStream(StepStream):
    """Augmented view pairs of every step from ``start`` on: ``(view_a, view_b, boxes_a, boxes_b)``.
    Crops, flips and jitter come from a generator seeded by ``(seed, step, rank)``: resumable, and
    identical whatever the number of DataLoader workers."""

    def __init__(self, args, pool: PairPool, start: int, num_processes: int = 1, rank: int = 0):
        self.args, self.pool, self.start, self.num_processes, self.rank = args, pool, start, num_processes, rank

    def item(self, step: int):
        return self.pairs(step)

    def pairs(self, step: int):
        a = self.args
        t = step * self.num_processes + self.rank
        gen = torch.Generator().manual_seed(a.seed * 1_000_003 + t)
        first, second = self.pool.batch(t, a.batch_size, a.seed)
        boxes = [crop_boxes(a.batch_size, (a.crop_min, 1.0), gen) for _ in range(2)]
        views = [colour_jitter(apply_crops(x, bx, a.image_size), gen, a.gray_p) for x, bx in zip((first, second), boxes)]
        return views[0], views[1], boxes[0], boxes[1]



def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE between rows of ``a`` and ``b`` ([M, d]): row i of one matches row i of the
    other, every other row is a negative. ``valid`` [M] drops rows (as anchors and as negatives)."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    logits = a @ b.T / temperature
    target = torch.arange(a.shape[0], device=a.device)
    if valid is None:
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    logits = logits.masked_fill(~valid[None, :], -1e4)
    ab = F.cross_entropy(logits, target, reduction="none")
    ba = F.cross_entropy(logits.T.masked_fill(~valid[None, :], -1e4), target, reduction="none")
    return ((ab + ba) / 2 * valid).sum() / valid.sum().clamp(min=1)


def simclr_loss(za: torch.Tensor, zb: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent over the 2B pooled projections: each view's positive is the other view of its scene."""
    z = F.normalize(torch.cat([za, zb]), dim=-1)
    logits = (z @ z.T / temperature).fill_diagonal_(-1e4)
    b = za.shape[0]
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(z.device)
    return F.cross_entropy(logits, target)


def dense_loss(da, db, boxes_a, boxes_b, points: int, temperature: float, gen: torch.Generator) -> torch.Tensor:
    """Dense InfoNCE: ``points`` random scene points per image, inside view a's crop; their features in
    both views (bilinear on the projected feature maps) must match each other and no other point of
    the batch. Points that fall outside view b's crop are dropped."""
    b = da.shape[0]
    u = torch.rand(b, points, 2, generator=gen) * 2 - 1  # inside crop a
    sw, sh, cx, cy, _ = (t[:, None] for t in boxes_a.unbind(1))
    src = torch.stack([cx + sw * u[..., 0], cy + sh * u[..., 1]], -1)  # source-image coordinates
    ga, gb = view_coords(src, boxes_a), view_coords(src, boxes_b)
    valid = (gb.abs() <= 1).all(-1).flatten().to(da.device)
    fa = F.grid_sample(da, ga[:, :, None].to(da.device), align_corners=False)[..., 0].transpose(1, 2)  # [B, K, d]
    fb = F.grid_sample(db, gb[:, :, None].to(db.device), align_corners=False)[..., 0].transpose(1, 2)
    return info_nce(fa.flatten(0, 1), fb.flatten(0, 1), temperature, valid)


PROBE_EVAL_SCENES = 256


def probe_data(size: int, num_train: int, seed: int) -> dict:
    """Labelled scenes for the frozen probes only (never for training): ``num_train`` scenes from their
    own stream, scored on the first 256 scenes of ShapesWorld's validation split. The benchmark's test
    scenes are never rendered here, so no choice made by watching the probes can have seen them."""
    streams = scene_streams(seed)
    return {"train": render_scenes(num_train, size, seed=streams["probe_train"]),
            "validation": render_scenes(PROBE_EVAL_SCENES, size, seed=streams["validation"])}


@torch.no_grad()
def _features(backbone, pixels, batch: int = 256):
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    pooled, maps = [], []
    device = next(backbone.parameters()).device
    for i in range(0, len(pixels), batch):
        out = backbone(pixel_values=((pixels[i : i + batch] - mean) / std).to(device))
        pooled.append(out.pooler_output.flatten(1).cpu())
        maps.append(out.last_hidden_state.cpu())
    return torch.cat(pooled), torch.cat(maps)


def frozen_probe(backbone, data: dict, steps: int = 120) -> dict:
    """Quick frozen-feature probes: linear classifier on the pooled token, linear per-position
    segmentation and depth on the feature map (logits upsampled bilinearly). A proxy for the
    benchmark's heads, to follow the curve during pretraining."""
    was_training = backbone.training
    backbone.eval()
    (tr_p, tr_m), (te_p, te_m) = _features(backbone, data["train"]["pixel_values"]), _features(backbone, data["validation"]["pixel_values"])
    backbone.train(was_training)
    mu, sd = tr_p.mean(0), tr_p.std(0) + 1e-6
    mmu, msd = tr_m.mean((0, 2, 3), keepdim=True), tr_m.std((0, 2, 3), keepdim=True) + 1e-6
    tr_p, te_p, tr_m, te_m = (tr_p - mu) / sd, (te_p - mu) / sd, (tr_m - mmu) / msd, (te_m - mmu) / msd
    size = data["train"]["mask"].shape[-1]
    # train at 16x16 (nearest-subsampled targets) to keep the probe cheap; score at full resolution
    small = lambda x: x[..., size // 32 :: size // 16, size // 32 :: size // 16]  # noqa: E731
    masks, depths = small(data["train"]["mask"]), small(data["train"]["depth"])
    depth_mean = depths.mean()
    gen = torch.Generator().manual_seed(0)
    with torch.enable_grad():
        cls = nn.Linear(tr_p.shape[1], 6)
        seg, dep = nn.Conv2d(tr_m.shape[1], 7, 1), nn.Conv2d(tr_m.shape[1], 1, 1)
        opt = torch.optim.Adam([*cls.parameters(), *seg.parameters(), *dep.parameters()], lr=1e-2)
        up16 = lambda x: F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)  # noqa: E731
        for _ in range(steps):
            idx = torch.randint(len(tr_p), (256,), generator=gen)
            loss = (F.cross_entropy(cls(tr_p[idx]), data["train"]["labels"][idx])
                    + F.cross_entropy(up16(seg(tr_m[idx])), masks[idx])
                    + F.mse_loss(up16(dep(tr_m[idx]))[:, 0] + depth_mean, depths[idx]) / 4)
            opt.zero_grad()
            loss.backward()
            opt.step()
    up = lambda x: F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)  # noqa: E731
    with torch.no_grad():
        test = data["validation"]
        acc = (cls(te_p).argmax(1) == test["labels"]).float().mean().item()
        pred = up(seg(te_m)).argmax(1)
        ious = [((pred == k) & (test["mask"] == k)).sum() / ((pred == k) | (test["mask"] == k)).sum() for k in range(7)
                if (test["mask"] == k).any()]
        rmse = (up(dep(te_m))[:, 0] + depth_mean - test["depth"]).pow(2).mean().sqrt().item()
    return {"probe_accuracy": round(acc, 4), "probe_miou": round(torch.stack(ious).mean().item(), 4), "probe_depth_rmse": round(rmse, 3)}


def _finished(out: Path, last_step: int) -> bool:
    """Whether ``out`` holds the saved encoder of a run that reached ``last_step``."""
    info = out / "training_args.json"
    return info.is_file() and (out / "model.safetensors").is_file() and json.loads(info.read_text()).get("steps_done") == last_step


def main_contrastive(args, accelerator: Accelerator) -> None:
    out = Path(args.output_dir)
    ckpt_dir = out / "checkpoints"
    model = ContrastiveNetwork(ResNetModel(resnet_config(args)))
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    model, optimizer = accelerator.prepare(model, optimizer)
    step, elapsed = 0, 0.0
    if args.resume and ckpt_dir.is_dir():
        last = sorted(ckpt_dir.glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
        if last:
            accelerator.load_state(str(last[-1]))
            extra = torch.load(last[-1] / "extra.pt", weights_only=True)
            step, elapsed = extra["step"], extra["minutes"]
            accelerator.print(f"resumed from {last[-1]} at step {step}")
    if args.resume and _finished(out, min(args.max_steps, args.stop_after_steps or args.max_steps)):
        accelerator.print(f"{out} already holds the encoder of a finished run; nothing to do")
        return
    pool = PairPool(args.pool_scenes, args.render_size, scene_streams(args.seed)["pretraining"], Path(args.pool_cache or out / "pool"))
    stream = PairStream(args, pool, step, accelerator.num_processes, accelerator.process_index)
    batches = iter(torch.utils.data.DataLoader(stream, batch_size=None, num_workers=args.num_workers))
    probes = probe_data(args.render_size, args.probe_scenes, args.seed) if args.probe_every_minutes else None
    raw = accelerator.unwrap_model(model)

    def loss_record(losses: dict) -> dict:
        return {k: round(v.item(), 4) if torch.is_tensor(v) else v for k, v in losses.items()} | {"minutes": round(minutes(), 2)}

    def log(rec):
        if accelerator.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
            with open(out / "training_log.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")

    def run_probe(minutes):
        rec = {"step": step, "minutes": round(minutes, 2), "scenes": step * args.batch_size * accelerator.num_processes,
               **frozen_probe(raw.backbone, probes)}
        accelerator.print("probe " + json.dumps(rec))
        log(rec)

    start_time = time.time() - elapsed * 60
    minutes = lambda: (time.time() - start_time) / 60  # noqa: E731
    if probes is not None and step == 0 and accelerator.is_main_process:
        run_probe(0.0)  # random init: the baseline every later probe is compared with
    next_probe = (math.floor(minutes() / args.probe_every_minutes) + 1) * args.probe_every_minutes if probes else float("inf")
    bar = tqdm(total=args.max_steps, initial=step, disable=not accelerator.is_local_main_process, desc="geometry InfoNCE")
    gen = torch.Generator()
    model.train()
    last_step = min(args.max_steps, args.stop_after_steps or args.max_steps)
    last_losses: dict = {}
    while step < last_step:
        if args.max_minutes and minutes() > args.max_minutes:
            accelerator.print(f"stopping at step {step}: --max_minutes {args.max_minutes} reached")
            break
        va, vb, ba, bb = next(batches)
        va, vb = va.to(accelerator.device), vb.to(accelerator.device)
        lr = cosine(step, args.max_steps, args.lr, args.min_lr, args.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        z, d = model(torch.cat([va, vb]))
        za, zb = z.chunk(2)
        loss_global = simclr_loss(za, zb, args.temperature)
        loss_dense = torch.zeros((), device=accelerator.device)
        if args.dense_weight > 0:
            gen.manual_seed(args.seed * 999_331 + step)
            da, db = d.chunk(2)
            loss_dense = dense_loss(da, db, ba, bb, args.dense_points, args.dense_temperature, gen)
        loss = loss_global + args.dense_weight * loss_dense
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        optimizer.step()
        step += 1
        bar.update(1)
        last_losses = {"step": step, "loss": loss.detach(), "global": loss_global.detach(), "dense": loss_dense.detach(), "lr": lr}
        if step % 20 == 0:  # read the losses only here: a host sync per step would slow a GPU run
            rec = loss_record(last_losses)
            log(rec)
            bar.set_postfix(loss=f"{rec['global']:.3f}", dense=f"{rec['dense']:.3f}")
        if args.checkpoint_every and step % args.checkpoint_every == 0:
            path = ckpt_dir / f"step_{step}"
            accelerator.save_state(str(path))
            if accelerator.is_main_process:
                torch.save({"step": step, "minutes": minutes()}, path / "extra.pt")
                save_encoder(raw.backbone, out, args)
                for old in sorted(ckpt_dir.glob("step_*"), key=lambda p: int(p.name.split("_")[1]))[:-2]:
                    shutil.rmtree(old)
        if minutes() >= next_probe and accelerator.is_main_process:
            run_probe(minutes())
            next_probe += args.probe_every_minutes
    bar.close()
    if last_losses and last_losses["step"] % 20:  # the last step's losses, also for runs shorter than 20 steps
        log(loss_record(last_losses))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if probes is not None:
            run_probe(minutes())
        save_encoder(raw.backbone, out, args)
        info = dict(vars(args), steps_done=step, minutes=round(minutes(), 2), processes=accelerator.num_processes,
                    torch_threads=torch.get_num_threads(), scenes_seen=step * args.batch_size * accelerator.num_processes)
        (out / "training_args.json").write_text(json.dumps(info, indent=2))
        accelerator.print(f"saved encoder to {out} after {step} steps in {info['minutes']:.1f} min")


if __name__ == "__main__":
    main()
