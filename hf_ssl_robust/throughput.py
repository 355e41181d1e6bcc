"""How fast a device runs our passes: published peaks, measured utilisation, and the measurement itself.

A time estimate is FLOPs (`hf_ssl_robust.cost`) divided by a rate. For a GPU the rate is the card's
published dense peak for the precision times a utilisation; the utilisation comes from a
**calibration** (`hf-ssl-robust plan --calibrate OUT` times real passes of each family on the card)
when one exists for that card, family and precision, else from a conservative default that every
output labels as an assumption. A CPU has no published peak here: its rate is the measured FLOP/s
(a calibration of this CPU model and thread count, else one measured on the spot).

Calibrations are JSON files: the committed ones in `hf_ssl_robust/calibration/`, plus any passed with
`--calibration FILE`.
"""

from __future__ import annotations

import datetime
import json
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["CALIBRATION_DIR", "DEFAULT_UTILISATION", "GPUS", "PEAK_TFLOPS", "Rate", "calibrate", "check_gpu",
           "device_kind", "load_calibrations", "precision_key", "resolve_rate"]

# Dense (no structured sparsity) peak TFLOP/s per card: bf16/fp16 tensor cores, and plain fp32 (torch
# keeps fp32 matmuls off TF32 by default). From NVIDIA's datasheets, whose tensor figures are quoted
# "with sparsity" (halved here): H100 SXM5 and H200 SXM (nvidia.com/en-us/data-center/h100/, /h200/):
# BF16 1,979 sparse -> 989.4, FP32 67; H100 PCIe: BF16 1,513 -> 756.5, FP32 51; A100 SXM 80 GB
# (nvidia.com/en-us/data-center/a100/): BF16 312 dense, FP32 19.5; L4 (nvidia.com/en-us/data-center/l4/):
# BF16 242 sparse -> 121, FP32 30.3.
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "h100": {"bf16": 989.4, "fp32": 67.0},
    "h100-pcie": {"bf16": 756.5, "fp32": 51.0},
    "h200": {"bf16": 989.4, "fp32": 67.0},
    "a100": {"bf16": 312.0, "fp32": 19.5},
    "l4": {"bf16": 121.0, "fp32": 30.3},
}
GPUS = (*PEAK_TFLOPS, "cpu")
# Assumed share of the peak when nothing was measured: eager PyTorch on ViT-S/B-sized matmuls reaches
# well under half of the tensor-core peak; plain fp32 GEMMs come closer to theirs. Deliberately low.
DEFAULT_UTILISATION = {"bf16": 0.25, "fp32": 0.40}
PASSES = ("forward", "attack_step", "train_step")
CALIBRATION_DIR = Path(__file__).parent / "calibration"


def check_gpu(name: str) -> str:
    """`name` lower-cased if it is a known device, else a clear error listing them."""
    key = str(name).lower()
    if key not in GPUS:
        raise ValueError(f"--gpu {name!r} is not a device with a known peak; choose one of {list(GPUS)} "
                         f"(add a card's published dense peaks to hf_ssl_robust.throughput.PEAK_TFLOPS).")
    return key


def precision_key(mixed_precision: str | None) -> str:
    """`bf16` for bf16 / fp16 autocast (same tensor-core peak), else `fp32`."""
    return "bf16" if mixed_precision in ("bf16", "fp16") else "fp32"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_kind(device: torch.device | str | None = None) -> str:
    """`cpu`, or the key of :data:`PEAK_TFLOPS` for this CUDA card (its name, e.g. `NVIDIA H100 80GB HBM3`)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda":
        return "cpu"
    name = torch.cuda.get_device_name(device).lower()
    for key in ("h200", "h100", "a100", "l4"):
        if key in name:
            return "h100-pcie" if key == "h100" and "pcie" in name else key
    return name.replace("nvidia ", "").replace(" ", "-")


def host_id() -> str:
    """What a CPU calibration applies to: the CPU model and the threads torch uses."""
    return f"{_cpu_name()}, {torch.get_num_threads()} threads"


def load_calibrations(paths=()) -> list[dict]:
    """Every calibration: the committed ones, then `paths` (later files win on ties)."""
    files = sorted(CALIBRATION_DIR.glob("*.json")) if CALIBRATION_DIR.is_dir() else []
    out = []
    for path in [*files, *map(Path, paths)]:
        if not path.is_file():
            raise ValueError(f"--calibration {str(path)!r} does not exist (write one with `hf-ssl-robust plan --calibrate FILE`).")
        data = json.loads(path.read_text())
        if "measurements" not in data or "device" not in data:
            raise ValueError(f"{path} is not a calibration file (no 'device' / 'measurements'): write one with `hf-ssl-robust plan --calibrate FILE`.")
        out.append({**data, "path": str(path)})
    return out


@dataclass(frozen=True)
class Rate:
    """FLOP/s per kind of pass on one device, and where the numbers come from (printed with every estimate)."""

    flops_per_s: dict[str, float]
    utilisation: float | None  # of the forward pass; None on a CPU
    source: str
    measured: bool


def _family(model_type: str) -> str:
    return model_type.replace("_vision_model", "")


def resolve_rate(gpu: str, model_type: str, precision: str, calibrations: list[dict], encoder: str | None = None) -> Rate:
    """The rate of `model_type` at `precision` (`bf16` | `fp32`) on `gpu` (see the module docstring).

    On a CPU with no matching calibration, `encoder` is measured now (one small pass of each kind).
    """
    gpu = check_gpu(gpu)
    found = None
    for cal in calibrations:
        if cal["device"] != gpu or (gpu == "cpu" and cal.get("host") != host_id()):
            continue
        for m in cal["measurements"]:
            if m["precision"] == precision and _family(m["model_type"]) == _family(model_type):
                found = (cal, m)
    if gpu == "cpu":
        if found is None:
            mixed = "no" if precision == "fp32" else precision
            cal = calibrate([encoder], [mixed], batch_size=1, max_side=224, repeats=1, device="cpu", train=False)
            found, where = (cal, cal["measurements"][0]), "measured now"
        else:
            where = f"calibration {Path(found[0]['path']).name}"
        rates = {k: v * 1e12 for k, v in found[1]["tflops_per_s"].items()}
        text = ", ".join(f"{k.replace('_step', '')} {v / 1e9:.0f}" for k, v in rates.items())
        return Rate(rates, None, f"measured on this CPU ({host_id()}; {where}, {found[1]['encoder']} {precision}): GFLOP/s {text}", True)
    peak = PEAK_TFLOPS[gpu][precision] * 1e12
    if found is not None:
        util = found[1]["utilisation"]
        source = (f"measured {util['forward']:.0%} forward / {util['attack_step']:.0%} attack utilisation of the {precision} "
                  f"peak ({Path(found[0]['path']).name}: {found[1]['encoder']} on {found[0]['device_name']}, {found[0]['created'][:10]})")
        return Rate({k: peak * util[k] for k in util}, util["forward"], source, True)
    util = DEFAULT_UTILISATION[precision]
    source = (f"ASSUMED {util:.0%} utilisation of the {precision} peak (conservative default: no {gpu} {precision} calibration "
              "for this family; measure one with `hf-ssl-robust plan --calibrate FILE` on the card)")
    return Rate({k: peak * util for k in PASSES}, util, source, False)


def _timed(fn, repeats: int, sync, clock=time.perf_counter) -> float:
    fn()  # warm-up (allocations, kernel selection)
    sync()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        sync()
        times.append(clock() - start)
    return statistics.median(times)


def calibrate(encoders: list[str] | None = None, precisions: list[str] | None = None, *, batch_size: int | None = None,
              max_side: int | None = None, repeats: int = 3, device: str | None = None, train: bool = True, clock=time.perf_counter,
              log=None) -> dict:
    """Time real passes of randomly initialised encoders on `device`; FLOP/s and utilisation per family.

    Args:
        encoders: presets or folders (default: one preset per family of :data:`cost.ARCHITECTURES`).
        precisions: `no` / `bf16` (default: both on a GPU, `no` on a CPU).
        batch_size: images per pass (default 32 on a GPU, 2 on a CPU).
        max_side: cap on the family's classification input side (default: none on a GPU, 224 on a CPU).
        repeats: timed repetitions (median) after one warm-up.
        train: also time DeACL's training step (forward + backward to every weight).
        clock: `time.perf_counter` (wall time); `time.process_time` measures CPU time, which other jobs on a
            shared CPU do not inflate (with one torch thread it is the wall time of a quiet machine).

    Returns:
        The calibration as a dict (write it with `json.dump`): device, host, date and one measurement per
        encoder and precision (seconds, TFLOP/s and utilisation per pass of `batch_size` inputs).
    """
    from .attacks import make_attack
    from .cost import ARCHITECTURES, backbone_config, pass_cost
    from .data import get_dataset_spec
    from .precision import autocast_for
    from .sizes import encoder_family, resolve_input_size
    from .tasks import get_task

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gpu = device.type == "cuda"
    kind = device_kind(device)
    if encoders is None:
        seen, encoders = set(), []
        for hub_id, fields in ARCHITECTURES.items():
            if _family(fields["model_type"]) not in seen:
                seen.add(_family(fields["model_type"]))
                encoders.append(hub_id)
    precisions = precisions or (["no", "bf16"] if gpu else ["no"])
    batch_size = batch_size or (32 if gpu else 2)
    max_side = max_side or (None if gpu else 224)
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    spec = get_dataset_spec("cifar10", task="classification")
    measurements = []
    for name in encoders:
        config, _ = backbone_config(name)
        side = resolve_input_size(encoder_family(config), spec).size
        side = min(side, max_side) if max_side else side
        cost = pass_cost(name, "classification", (side, side), spec, train=train)
        head_class = get_task("classification").head_class
        model = head_class(head_class.config_class(encoder_config=config.to_dict(), num_labels=10)).to(device).eval()
        x = torch.rand(batch_size, 3, side, side, device=device)
        labels = torch.randint(0, 10, (batch_size,), device=device)
        attack = make_attack("pgd", eps=8 / 255, steps=repeats, seed=0)
        for precision in precisions:
            key = precision_key(precision)

            def forward():
                with torch.no_grad(), autocast_for(precision, device):
                    model(x)

            def attack_steps():
                with autocast_for(precision, device):
                    attack.perturb(model, x, labels)

            def train_step():
                encoder = model.encoder.train().requires_grad_(True)
                with autocast_for(precision, device):
                    loss = encoder(x).cls.float().square().mean()
                loss.backward()
                encoder.zero_grad(set_to_none=True)
                encoder.eval().requires_grad_(False)

            seconds = {"forward": _timed(forward, repeats, sync, clock), "attack_step": _timed(attack_steps, 1, sync, clock) / repeats}
            if train:
                seconds["train_step"] = _timed(train_step, repeats, sync, clock)
            flops = {"forward": cost.forward, "attack_step": cost.attack_step, "train_step": cost.train_step}
            tflops = {k: batch_size * flops[k] / seconds[k] / 1e12 for k in seconds}
            peak = PEAK_TFLOPS.get(kind, {}).get(key)
            entry = dict(encoder=name, model_type=config.model_type, precision=key, shape=[side, side], batch_size=batch_size,
                         gflops_per_input={k: round(flops[k] / 1e9, 3) for k in seconds},
                         seconds={k: round(v, 5) for k, v in seconds.items()},
                         tflops_per_s={k: round(v, 4) for k, v in tflops.items()},
                         utilisation={k: round(v / peak, 4) for k, v in tflops.items()} if peak else None)
            measurements.append(entry)
            if log:
                log(f"{name} {key} {side}x{side} batch {batch_size}: " + ", ".join(f"{k} {v:.3g} TFLOP/s" for k, v in tflops.items()))
        del model
    return dict(format=1, device=kind, device_name=torch.cuda.get_device_name(device) if gpu else _cpu_name(), host=host_id(),
                torch=torch.__version__, created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                measurements=measurements)
