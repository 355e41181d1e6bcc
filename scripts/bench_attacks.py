"""Speed and memory of the attacks, the head-training feature cache and the DeACL step.

For each attack it times, in one process and round-robin (floor, ours, naive, floor, ours, ...):

* floor: T x (one forward + one backward w.r.t. the input pixels only, parameters frozen) of
  the model under attack (the encoder for `embed`, the task model for the others): the least
  any T-step gradient attack can cost;
* ours: `make_attack(name, steps=T, seed=0).perturb(...)`; goal: ours / floor <= 1.10;
* naive: the loop a user would write (parameters requiring grad, `loss.backward()` filling
  parameter gradients too, `x.grad` read, the clean embedding recomputed each step for
  `embed`, manual projection): ours' speed-up over it.

It also times head training with and without the frozen-feature cache, the share of a DeACL
step spent generating adversarial examples, and peak memory per image of each attack (CPU:
peak RSS of a fresh child process; CUDA: `torch.cuda.max_memory_allocated`).

Precision variants side by side: `--amp none,bf16,bf16+compile` times every attack (and the
DeACL step) in each, then prints ms per image, the ratio to the floor, the speed against fp32,
achieved TFLOP/s against the card's bf16 peak (CUDA) and the batch `--batch_size auto` picks
(`--report_auto_batch`). Under autocast the pixel layer stays fp32 (hf_ssl_robust.precision).

    nice -n 19 python scripts/bench_attacks.py --config vits14 --image_size 224 --batch_size 8 \
        --steps 5 --repeats 5 --output outputs/bench/vits14.json
    python scripts/bench_attacks.py --config tiny --repeats 1 --sections attacks   # smoke run
    nice -n 19 python scripts/bench_attacks.py --config vits14 --amp none,bf16 --sections attacks --no_naive

Models are random-weight configs of the real architectures (speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from transformers import Dinov2Config, Dinov2Model, ViTConfig, ViTModel  # noqa: E402

from hf_ssl_robust import (  # noqa: E402
    SSLForDepthEstimation,
    SSLForImageClassification,
    SSLForSemanticSegmentation,
    load_encoder,
    make_attack,
)
from hf_ssl_robust.batching import current_rss_bytes, find_max_batch_size, peak_rss_bytes, reset_peak_rss  # noqa: E402
from hf_ssl_robust.losses import depth_loss  # noqa: E402

ATTACK_NAMES = ("embed", "pgd", "segpgd", "depth_pgd")
# name -> (backbone kind, config kwargs, default image size)
CONFIGS = {
    "tiny": ("dinov2", dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=2, patch_size=8, mlp_ratio=4), 64),
    "vits14": ("dinov2", dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, patch_size=14, mlp_ratio=4), 224),
    "vitb16": ("vit", dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, patch_size=16, intermediate_size=3072), 224),
}
NUM_CLASSES, NUM_SEG_CLASSES = 10, 21
EPS, STEP_SIZE = 8 / 255, 2 / 255
# Dense bf16 tensor-core peak in TFLOP/s from the vendor's data sheets (no sparsity), by device name.
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0,
                    "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0}


# ----------------------------------------------------------------------------- models and data
def build_models(config: str, image_size: int, device: str, seed: int = 0) -> dict:
    """Random-weight encoder and the three task models on it, in eval mode."""
    kind, kwargs, _ = CONFIGS[config]
    torch.manual_seed(seed)
    if kind == "dinov2":
        backbone = Dinov2Model(Dinov2Config(image_size=image_size, **kwargs))
    else:
        backbone = ViTModel(ViTConfig(image_size=image_size, **kwargs), add_pooling_layer=False)
    encoder = load_encoder(backbone.eval())
    models = {
        "encoder": encoder,
        "classification": SSLForImageClassification.from_encoder(encoder, num_labels=NUM_CLASSES, image_size=image_size),
        "segmentation": SSLForSemanticSegmentation.from_encoder(encoder, num_labels=NUM_SEG_CLASSES, image_size=image_size),
        "depth": SSLForDepthEstimation.from_encoder(encoder, image_size=image_size),
    }
    return {k: m.to(device).eval() for k, m in models.items()}


def make_batch(batch: int, size: int, device: str, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    masks = torch.randint(NUM_SEG_CLASSES, (batch, size, size), generator=g)
    masks[:, : size // 8] = 255  # some ignored pixels, as in VOC
    return {
        "pixels": torch.rand(batch, 3, size, size, generator=g).to(device),
        "labels": torch.randint(NUM_CLASSES, (batch,), generator=g).to(device),
        "masks": masks.to(device),
        "depth": (0.5 + 9 * torch.rand(batch, size, size, generator=g)).to(device),
    }


def surface(name: str, models: dict):
    """(model under attack, target key, output getter) of an attack."""
    return {
        "embed": (models["encoder"], None, lambda out: out.cls),
        "pgd": (models["classification"], "labels", lambda out: out.logits),
        "segpgd": (models["segmentation"], "masks", lambda out: out.logits),
        "depth_pgd": (models["depth"], "depth", lambda out: out.predicted_depth),
    }[name]


# ----------------------------------------------------------------------------- the three variants
def run_floor(model, getter, x: torch.Tensor, steps: int, autocast) -> None:
    """T x (forward + backward w.r.t. the input only); parameters frozen by the caller."""
    for _ in range(steps):
        xg = x.detach().requires_grad_(True)
        with autocast():
            out = getter(model(xg))
        torch.autograd.grad(out, xg, grad_outputs=torch.ones_like(out))


def run_ours(name: str, model, x, target, steps: int, autocast):
    attack = make_attack(name, eps=EPS, step_size=STEP_SIZE, steps=steps, seed=0)
    with autocast():
        return attack.perturb(model, x, target).pixels


def run_naive(name: str, model, getter, x, target, steps: int, autocast):
    """The loop as commonly written: parameter gradients, `.grad`, recomputed targets, manual clamps."""
    x_adv = (x + torch.empty_like(x).uniform_(-EPS, EPS)).clamp(0, 1)
    for t in range(steps):
        x_adv = x_adv.clone().detach().requires_grad_(True)
        model.zero_grad()
        with autocast():
            out = getter(model(x_adv))
            if name == "embed":
                clean = getter(model(x)).detach()  # recomputed every step
                loss = (out - clean).flatten(1).norm(dim=1).sum()
            elif name == "pgd":
                loss = F.cross_entropy(out, target)
            elif name == "segpgd":
                ce = F.cross_entropy(out.float(), target, ignore_index=255, reduction="none")
                correct = (out.argmax(1) == target).float()
                lam = t / (2 * steps)
                loss = (((1 - lam) * correct + lam * (1 - correct)) * ce).mean()
            else:
                valid = (target > 0) & (target <= 10)
                loss = depth_loss(out.float(), target, valid).mean()
        loss.backward()
        x_adv = x_adv.detach() + STEP_SIZE * x_adv.grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - EPS), x + EPS).clamp(0, 1)
    model.zero_grad(set_to_none=True)
    return x_adv


@contextlib.contextmanager
def params_requiring_grad(model, flag: bool):
    saved = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in saved:
        p.requires_grad_(flag)
    try:
        yield
    finally:
        for p, f in saved:
            p.requires_grad_(f)


# ----------------------------------------------------------------------------- helpers
def sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def make_autocast(device: str, amp: str):
    if amp == "none":
        return contextlib.nullcontext
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    return lambda: torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def vit_forward_flops(config: str, image_size: int) -> float:
    """Analytic FLOPs of one encoder forward per image: 2 x weights x tokens + attention + patch embed."""
    _, kw, _ = CONFIGS[config]
    d, layers, p = kw["hidden_size"], kw["num_hidden_layers"], kw["patch_size"]
    mlp = kw.get("intermediate_size", kw.get("mlp_ratio", 4) * d)
    patches = (image_size // p) ** 2
    n = patches + 1
    per_layer = 2 * n * (4 * d * d + 2 * d * mlp) + 2 * 2 * n * n * d  # qkv+proj, mlp; QK^T and AV
    return layers * per_layer + 2 * patches * 3 * p * p * d


def machine_info(device: str) -> dict:
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "device": device,
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["fp32_matmul_tf32"] = torch.backends.cuda.matmul.allow_tf32  # torch's default: off (true fp32)
    with contextlib.suppress(ImportError):
        import transformers

        info["transformers"] = transformers.__version__
    return info


def check_adversarial(adv: torch.Tensor, x: torch.Tensor) -> dict:
    return {"dtype": str(adv.dtype), "within_eps": bool((adv - x).abs().max() <= EPS),
            "in_unit_box": bool((adv >= 0).all() and (adv <= 1).all()), "finite": bool(torch.isfinite(adv).all())}


def _median_ms(values: list[float]) -> float:
    return 1000 * statistics.median(values)


# ----------------------------------------------------------------------------- sections
def bench_attacks(args, models: dict, batch: dict) -> list[dict]:
    autocast = make_autocast(args.device, args.amp)
    x = batch["pixels"]
    variants = []
    for name in args.attacks:
        model, key, getter = surface(name, models)
        if args.compile:
            model = torch.compile(model, backend=args.compile_backend)
        target = batch[key] if key else None
        variants.append((name, "floor", model, getter, target))
        variants.append((name, "ours", model, getter, target))
        if name == "embed":  # the clean embedding (the default target) costs one no-grad forward
            variants.append((name, "clean_forward", model, getter, target))
        if not args.no_naive:
            variants.append((name, "naive", model, getter, target))
    times = {(n, v): [] for n, v, *_ in variants}
    checks = {}
    for rnd in range(args.warmup + args.repeats):
        for name, variant, model, getter, target in variants:  # round-robin: load drifts hit all alike
            sync(args.device)
            start = time.perf_counter()
            if variant == "floor":
                with params_requiring_grad(model, False):
                    run_floor(model, getter, x, args.steps, autocast)
            elif variant == "ours":
                adv = run_ours(name, model, x, target, args.steps, autocast)
            elif variant == "clean_forward":
                with torch.no_grad(), autocast():
                    getter(model(x))
            else:
                with params_requiring_grad(model, True):
                    adv = run_naive(name, model, getter, x, target, args.steps, autocast)
            sync(args.device)
            elapsed = time.perf_counter() - start
            if rnd >= args.warmup:
                times[(name, variant)].append(elapsed)
            if args.verbose:
                print(f"  round {rnd}{' (warm-up)' if rnd < args.warmup else ''} {name:>9} {variant:>5}: {elapsed:.3f} s", flush=True)
            if variant in ("ours", "naive") and rnd == 0:
                checks[(name, variant)] = check_adversarial(adv, x)
    flops_fwd = vit_forward_flops(args.config, args.image_size) * x.shape[0]
    peaks = {}
    if torch.device(args.device).type == "cuda":  # peak memory of one `ours` run per attack
        for name, variant, model, getter, target in variants:
            if variant == "ours":
                sync(args.device)
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                run_ours(name, model, x, target, args.steps, autocast)
                sync(args.device)
                peaks[name] = (torch.cuda.max_memory_allocated() - base) / 2**20
    rows = []
    for name in args.attacks:
        floor, ours = _median_ms(times[(name, "floor")]), _median_ms(times[(name, "ours")])
        row = {"attack": name, "amp": args.amp, "compile": args.compile, "batch_size": x.shape[0],
               "floor_ms": floor, "ours_ms": ours, "ratio": ours / floor, "ms_per_image": ours / x.shape[0],
               "floor_ms_per_image": floor / x.shape[0], "peak_mb": peaks.get(name),
               "img_per_s_floor": 1000 * x.shape[0] / floor, "img_per_s_ours": 1000 * x.shape[0] / ours,
               "check_ours": checks[(name, "ours")],
               # executed work: forward + input-only backward ~ 2 forwards (no weight gradients)
               "tflops_ours": 2 * args.steps * flops_fwd / (ours / 1000) / 1e12,
               "times_s": {v: times[(name, v)] for v in ("floor", "ours", "naive", "clean_forward") if (name, v) in times}}
        if (name, "clean_forward") in times:  # least possible: T steps + the clean target
            fwd = _median_ms(times[(name, "clean_forward")])
            row.update(clean_forward_ms=fwd, bound_ratio=(floor + fwd) / floor, ratio_vs_floor_plus_target=ours / (floor + fwd))
        if not args.no_naive:
            naive = _median_ms(times[(name, "naive")])
            row.update(naive_ms=naive, speedup=naive / ours, img_per_s_naive=1000 * x.shape[0] / naive,
                       check_naive=checks[(name, "naive")])
        rows.append(row)
    return rows


def bench_training(args) -> dict:
    """Classification head on ShapesWorld at 64 px, tiny config: epoch time with vs without cache."""
    from accelerate import Accelerator

    from hf_ssl_robust.training import TrainHeadConfig, train_head

    encoder = build_models("tiny", 64, "cpu")["encoder"]
    runs = {"yes": [], "no": []}
    accelerator = Accelerator(cpu=True)
    for rnd in range(args.train_repeats):
        for cache in ("yes", "no"):
            cfg = TrainHeadConfig(task="classification", dataset="shapes", image_size=64, epochs=args.train_epochs,
                                  num_train_samples=args.train_samples, num_eval_samples=32, cache_features=cache, seed=0)
            _, info = train_head(cfg, accelerator=accelerator, encoder=encoder)
            runs[cache].append(info["timings"])
    out = {"train_samples": args.train_samples, "epochs": args.train_epochs, "repeats": args.train_repeats}
    for cache, label in (("yes", "cached"), ("no", "uncached")):
        epoch = statistics.median(t["train_s"] for t in runs[cache]) / args.train_epochs
        out[label] = {"epoch_s": epoch, "feature_cache_s": statistics.median(t["feature_cache_s"] for t in runs[cache]),
                      "timings": runs[cache]}
    out["epoch_speedup"] = out["uncached"]["epoch_s"] / out["cached"]["epoch_s"]
    return out


def bench_deacl(args) -> dict:
    """Time one DeACL step (5-step inner PGD at eps 4/255, under `--amp`'s autocast as `train_deacl`
    runs it) and its attack part, from outside."""
    import copy

    from hf_ssl_robust.defenses.deacl import deacl_loss

    size, bsz = args.deacl_image_size, args.deacl_batch_size
    autocast = make_autocast(args.device, args.amp)
    cuda = torch.device(args.device).type == "cuda"
    teacher = build_models(args.deacl_config, size, args.device)["encoder"].requires_grad_(False)
    student = copy.deepcopy(teacher).train().requires_grad_(True)
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9)
    x = make_batch(bsz, size, args.device, seed=1)["pixels"]
    attack_s, step_s = [], []
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for step in range(args.warmup + args.deacl_steps):
        sync(args.device)
        t0 = time.perf_counter()
        with torch.no_grad(), autocast():
            t_cls = teacher(x).cls
        attack = make_attack("embed", distance="cosine", tokens="cls", eps=4 / 255, step_size=1 / 255, steps=5, seed=step)
        sync(args.device)
        t1 = time.perf_counter()
        with autocast():
            x_adv = attack.perturb(student, x, t_cls).pixels
        sync(args.device)
        t2 = time.perf_counter()
        with autocast():
            out = student(torch.cat([x, x_adv]))
        s_cls, s_adv = out.cls.chunk(2)
        loss, _ = deacl_loss(s_cls, s_adv, t_cls)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(args.device)
        t3 = time.perf_counter()
        if step >= args.warmup:
            attack_s.append(t2 - t1)
            step_s.append(t3 - t0)
    attack, total = statistics.median(attack_s), statistics.median(step_s)
    return {"config": args.deacl_config, "amp": args.amp, "image_size": size, "batch_size": bsz, "inner_steps": 5,
            "attack_ms": 1000 * attack, "step_ms": 1000 * total, "attack_share": attack / total, "attack_s": attack_s,
            "step_s": step_s, "peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None}


def memory_child(args) -> dict:
    """Peak memory of one variant in this (fresh) process; printed as JSON by `--_memory_child`."""
    models = build_models(args.config, args.image_size, args.device)
    batch = make_batch(args.batch_size, args.image_size, args.device)
    name, variant = args._memory_child.split(":")
    model, key, getter = surface(name, models)
    target = batch[key] if key else None
    autocast = make_autocast(args.device, args.amp)
    cuda = torch.device(args.device).type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = current_rss_bytes()
        reset_peak_rss()
    if variant == "floor":
        with params_requiring_grad(model, False):
            run_floor(model, getter, batch["pixels"], args.steps, autocast)
    elif variant == "ours":
        run_ours(name, model, batch["pixels"], target, args.steps, autocast)
    else:
        with params_requiring_grad(model, True):
            run_naive(name, model, getter, batch["pixels"], target, args.steps, autocast)
    peak = torch.cuda.max_memory_allocated() if cuda else peak_rss_bytes()
    return {"attack": name, "variant": variant, "image_size": args.image_size, "batch_size": args.batch_size,
            "peak_bytes": peak - base, "mb_per_image": (peak - base) / args.batch_size / 2**20,
            "measure": "cuda max_memory_allocated" if cuda else "VmHWM - VmRSS before (fresh process)"}


def bench_memory(args) -> list[dict]:
    rows = []
    for size in args.memory_sizes:
        for name in args.memory_attacks or args.attacks:
            for variant in args.memory_variants:
                cmd = [sys.executable, __file__, "--config", args.memory_config, "--image_size", str(size),
                       "--batch_size", str(args.memory_batch_size), "--steps", str(args.memory_steps),
                       "--device", args.device, "--amp", args.amp, "--_memory_child", f"{name}:{variant}"]
                done = subprocess.run(cmd, capture_output=True, text=True, check=True)
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
                r = rows[-1]
                print(f"  memory {args.memory_config} {size}px {name:>9} {variant:>5}: {r['mb_per_image']:8.1f} MB/image", flush=True)
    return rows


# ----------------------------------------------------------------------------- report
def format_attack_table(rows: list[dict], cuda: bool) -> str:
    head = "| attack | floor ms | ours ms | ratio | naive ms | speed-up | img/s (floor / ours / naive) |"
    if cuda:
        head += " TFLOP/s ours |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        naive = f"{r['naive_ms']:.0f}" if "naive_ms" in r else "-"
        speed = f"{r['speedup']:.2f}x" if "speedup" in r else "-"
        ips = f"{r['img_per_s_floor']:.2f} / {r['img_per_s_ours']:.2f} / " + (f"{r['img_per_s_naive']:.2f}" if "naive_ms" in r else "-")
        line = f"| {r['attack']} | {r['floor_ms']:.0f} | {r['ours_ms']:.0f} | {r['ratio']:.3f} | {naive} | {speed} | {ips} |"
        if cuda:
            line += f" {r['tflops_ours']:.1f} |"
        lines.append(line)
    for r in rows:
        if "bound_ratio" in r:
            lines.append(f"\n{r['attack']}: the clean target costs one no-grad forward ({r['clean_forward_ms']:.0f} ms), so the least "
                         f"possible ratio is {r['bound_ratio']:.3f}; ours / (floor + that forward) = {r['ratio_vs_floor_plus_target']:.3f}")
    return "\n".join(lines)


def variant_args(args, amp: str, compiled: bool) -> argparse.Namespace:
    v = argparse.Namespace(**vars(args))
    v.amp, v.compile = amp, compiled
    return v


def variant_label(amp: str, compiled: bool) -> str:
    return {"none": "fp32", "bf16": "bf16", "fp16": "fp16"}[amp] + (" + compile" if compiled else "")


def bf16_peak_tflops(device_name: str) -> float | None:
    """The card's dense bf16 peak from `BF16_PEAK_TFLOPS` (longest matching name), or None."""
    matches = [k for k in BF16_PEAK_TFLOPS if k.lower() in device_name.lower()]
    return BF16_PEAK_TFLOPS[max(matches, key=len)] if matches else None


def format_precision_table(rows: list[dict], peak: float | None, auto: dict) -> str:
    """One row per attack and variant: ms/image, ratio to the floor, speed-up over fp32, TFLOP/s, memory."""
    head = "| attack | variant | batch | ms/image | floor ms/image | ours / floor | speed vs fp32 | TFLOP/s | % of bf16 peak | peak MB | auto batch |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    fp32 = {r["attack"]: r["ms_per_image"] for r in rows if r["amp"] == "none" and not r["compile"]}
    order = list(dict.fromkeys(r["attack"] for r in rows))
    for r in sorted(rows, key=lambda r: order.index(r["attack"])):  # stable: variants keep their order
        speed = f"{fp32[r['attack']] / r['ms_per_image']:.2f}x" if r["attack"] in fp32 else "-"
        pct = f"{100 * r['tflops_ours'] / peak:.1f}" if peak else "-"
        mem = f"{r['peak_mb']:.0f}" if r.get("peak_mb") is not None else "-"
        lines.append(f"| {r['attack']} | {variant_label(r['amp'], r['compile'])} | {r['batch_size']} | {r['ms_per_image']:.2f} | "
                     f"{r['floor_ms_per_image']:.2f} | {r['ratio']:.3f} | {speed} | {r['tflops_ours']:.3g} | {pct} | {mem} | "
                     f"{auto.get(r['amp'], '-')} |")
    return "\n".join(lines)


def profile_attack(args, models: dict, batch: dict) -> str:
    """torch.profiler's table (top 15 ops by self time) of one `ours` run of the first attack."""
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.device(args.device).type == "cuda"
    name = args.attacks[0]
    model, key, _ = surface(name, models)
    if args.compile:
        model = torch.compile(model, backend=args.compile_backend)
    autocast = make_autocast(args.device, args.amp)
    target = batch[key] if key else None
    run_ours(name, model, batch["pixels"], target, 1, autocast)  # warm (and compile)
    sync(args.device)
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        run_ours(name, model, batch["pixels"], target, args.profile_steps, autocast)
        sync(args.device)
    title = f"profile: {name}, {variant_label(args.amp, args.compile)}, batch {batch['pixels'].shape[0]}, T={args.profile_steps}"
    for sort_by in ("self_device_time_total", "self_cuda_time_total") if cuda else ("self_cpu_time_total",):
        try:  # torch renamed the CUDA column to "device"; accept either
            return title + "\n" + prof.key_averages().table(sort_by=sort_by, row_limit=15)
        except (AttributeError, KeyError):
            continue
    return title + "\n" + prof.key_averages().table(row_limit=15)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=sorted(CONFIGS), default="tiny")
    p.add_argument("--image_size", type=int, default=None, help="default: 64 (tiny), 224 (others)")
    p.add_argument("--batch_size", default="8", help="an int, or 'auto' (hf_ssl_robust.batching.find_max_batch_size)")
    p.add_argument("--steps", type=int, default=5, help="attack steps T")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    p.add_argument("--attacks", default=",".join(ATTACK_NAMES))
    p.add_argument("--sections", default="attacks,training,deacl,memory", help="any of attacks,training,deacl,memory")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", "--dtype", dest="amp", default="none",
                   help="autocast dtype(s) for the forward, comma-separated, each none|bf16|fp16 with an optional "
                        "+compile (e.g. none,bf16,bf16+compile); perturbation, projection and pixel layer stay fp32")
    p.add_argument("--compile", action="store_true", help="torch.compile the model under attack (every --amp variant)")
    p.add_argument("--compile_backend", default="inductor", help="e.g. aot_eager to check the path without a compiler")
    p.add_argument("--report_auto_batch", action="store_true", help="also find the batch --batch_size auto picks, per variant")
    p.add_argument("--peak_tflops", type=float, default=None, help="the card's dense bf16 peak (default: by device name)")
    p.add_argument("--profile", action="store_true", help="torch.profiler table of one run of the first attack, per variant")
    p.add_argument("--profile_steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--no_naive", action="store_true")
    p.add_argument("--verbose", action="store_true", help="print every timed run")
    p.add_argument("--train_samples", type=int, default=512)
    p.add_argument("--train_epochs", type=int, default=2)
    p.add_argument("--train_repeats", type=int, default=1)
    p.add_argument("--deacl_steps", type=int, default=3)
    p.add_argument("--deacl_batch_size", type=int, default=32)
    p.add_argument("--deacl_image_size", type=int, default=64)
    p.add_argument("--deacl_config", default="tiny", choices=sorted(CONFIGS))
    p.add_argument("--memory_config", default="vits14", choices=sorted(CONFIGS))
    p.add_argument("--memory_sizes", default="224,518", help="comma-separated; empty to skip")
    p.add_argument("--memory_batch_size", type=int, default=1)
    p.add_argument("--memory_steps", type=int, default=2)
    p.add_argument("--memory_variants", default="floor,ours", help="any of floor,ours,naive")
    p.add_argument("--memory_attacks", default="", help="default: --attacks")
    p.add_argument("--output", default=None, help="JSON path")
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON", help="only print one precision table per config from these reports")
    p.add_argument("--_memory_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.image_size = args.image_size or CONFIGS[args.config][2]
    args.attacks = [a for a in args.attacks.split(",") if a]
    unknown = set(args.attacks) - set(ATTACK_NAMES)
    if unknown:
        p.error(f"unknown attacks {sorted(unknown)}; choose from {list(ATTACK_NAMES)}")
    args.variants = []
    for item in (v for v in args.amp.split(",") if v):
        amp, _, extra = item.partition("+")
        if amp not in ("none", "bf16", "fp16") or extra not in ("", "compile"):
            p.error(f"--amp item {item!r}: expected none|bf16|fp16, optionally followed by +compile")
        args.variants.append((amp, args.compile or extra == "compile"))
    if not args.variants:
        p.error("--amp needs at least one of none, bf16, fp16")
    args.amp, args.compile = args.variants[0]  # the current variant (main switches it)
    args.sections = [s for s in args.sections.split(",") if s]
    args.memory_sizes = [int(s) for s in args.memory_sizes.split(",") if s]
    args.memory_variants = [v for v in args.memory_variants.split(",") if v]
    args.memory_attacks = [a for a in args.memory_attacks.split(",") if a]
    if args.batch_size != "auto":
        args.batch_size = int(args.batch_size)
    return args


def resolve_batch_size(args, models) -> int:
    """`--batch_size auto`: the largest batch (<= 256) at which one step of every attack fits."""
    autocast = make_autocast(args.device, args.amp)

    def step(b: int) -> None:
        batch = make_batch(b, args.image_size, args.device)
        for name in args.attacks:
            model, key, _ = surface(name, models)
            run_ours(name, model, batch["pixels"], batch[key] if key else None, 1, autocast)

    return find_max_batch_size(step, 256, device=args.device)


def merge_reports(paths: list[str]) -> str:
    """One precision table per (config, image size) from several reports (e.g. eager and compiled runs)."""
    groups: dict = {}
    deacl_rows: list[dict] = []
    for path in paths:
        report = json.loads(Path(path).read_text())
        a = report["args"]
        key = (a["config"], a["image_size"], a["steps"], report["machine"].get("gpu") or report["machine"]["cpu"])
        group = groups.setdefault(key, {"rows": [], "auto": {}, "peak": None})
        group["rows"] += report.get("attacks", [])
        group["auto"].update(report.get("auto_batch_size", {}))
        group["peak"] = group["peak"] or report.get("peak_bf16_tflops")
        deacl = report.get("deacl") or []
        deacl_rows += deacl if isinstance(deacl, list) else [deacl]
    out = []
    for (config, size, steps, machine), g in groups.items():
        out.append(f"### {config} at {size}x{size}, T={steps}, {machine}\n")
        out.append(format_precision_table(g["rows"], g["peak"], g["auto"]) + "\n")
    for d in deacl_rows:
        mem = f", peak {d['peak_mb']:.0f} MB" if d.get("peak_mb") else ""
        out.append(f"DeACL step ({d['config']}, {d['image_size']}px, batch {d['batch_size']}, 5 inner steps, {variant_label(d['amp'], False)}): "
                   f"{d['step_ms']:.0f} ms, attack {100 * d['attack_share']:.0f}%{mem}")
    return "\n".join(out)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.merge:
        print(merge_reports(args.merge))
        return {}
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._memory_child:
        print(json.dumps(memory_child(args)))
        return {}
    cuda = torch.device(args.device).type == "cuda"
    report = {"machine": machine_info(args.device), "args": {k: v for k, v in vars(args).items() if not k.startswith("_")},
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if "attacks" in args.sections:
        models = build_models(args.config, args.image_size, args.device)
        report["attacks"], report["auto_batch_size"], report["profile"] = [], {}, {}
        report["encoder_forward_gflops_per_image"] = vit_forward_flops(args.config, args.image_size) / 1e9
        for amp, compiled in args.variants:
            v = variant_args(args, amp, compiled)
            label = variant_label(amp, compiled)
            if v.batch_size == "auto" or args.report_auto_batch:  # what `auto` picks for this precision
                auto = report["auto_batch_size"].get(amp) or resolve_batch_size(v, models)
                report["auto_batch_size"][amp] = auto
                v.batch_size = auto if v.batch_size == "auto" else v.batch_size
            batch = make_batch(v.batch_size, args.image_size, args.device)
            rows = bench_attacks(v, models, batch)
            report["attacks"].extend(rows)
            print(f"\nAttacks: {args.config}, {args.image_size}px, batch {v.batch_size}, T={args.steps}, {label}, "
                  f"{args.device} ({report['machine']['cpu'] if not cuda else report['machine']['gpu']})")
            print(format_attack_table(rows, cuda), flush=True)
            if args.profile:
                report["profile"][label] = profile_attack(v, models, batch)
                print(report["profile"][label], flush=True)
        if len(args.variants) > 1 or cuda:
            peak = args.peak_tflops or bf16_peak_tflops(report["machine"].get("gpu", ""))
            report["peak_bf16_tflops"] = peak
            print(f"\nPrecision variants ({args.config}, {args.image_size}px, T={args.steps}; TFLOP/s counts forward + "
                  f"input-only backward as 2 forwards of {report['encoder_forward_gflops_per_image']:.1f} GFLOP/image):")
            print(format_precision_table(report["attacks"], peak, report["auto_batch_size"]), flush=True)
    if "training" in args.sections:
        tr = bench_training(args)
        report["training"] = tr
        print(f"\nHead training (tiny, ShapesWorld 64px, {tr['train_samples']} images): epoch {tr['cached']['epoch_s']:.2f} s cached "
              f"(+{tr['cached']['feature_cache_s']:.2f} s once to cache) vs {tr['uncached']['epoch_s']:.2f} s uncached: "
              f"{tr['epoch_speedup']:.1f}x per epoch", flush=True)
    amps = list(dict.fromkeys(amp for amp, _ in args.variants))  # DeACL and memory: eager, once per precision
    if "deacl" in args.sections:
        report["deacl"] = []
        for amp in amps:
            d = bench_deacl(variant_args(args, amp, False))
            report["deacl"].append(d)
            mem = f", peak {d['peak_mb']:.0f} MB" if d["peak_mb"] else ""
            print(f"\nDeACL step ({d['config']}, {d['image_size']}px, batch {d['batch_size']}, 5 inner steps, amp={amp}): "
                  f"{d['step_ms']:.0f} ms, attack {d['attack_ms']:.0f} ms = {100 * d['attack_share']:.0f}%{mem}", flush=True)
        if len(amps) == 1:
            report["deacl"] = report["deacl"][0]
    if "memory" in args.sections and args.memory_sizes:
        report["memory"] = []
        for amp in amps:
            print(f"\nPeak memory ({args.memory_config}, batch {args.memory_batch_size}, T={args.memory_steps}, amp={amp}):", flush=True)
            report["memory"].extend(bench_memory(variant_args(args, amp, False)))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(report, indent=2, default=str))
        print(f"\nwrote {args.output}")
    return report


if __name__ == "__main__":
    main()
