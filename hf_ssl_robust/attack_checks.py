"""Attack sanity checks: plant an adversarial example that surely exists within ε, see who finds it.

In the spirit of Zimmermann et al., "Increasing Confidence in Adversarial Robustness Evaluations"
(NeurIPS 2022, https://arxiv.org/abs/2206.13991; their binarization test): for each image x we pick
a point x' = clip(x + δ) with δ a random vertex of the L-inf ball, read the frozen encoder's tokens
t(x) and t(x'), and build a linear head *for that image* that reads the projection

    p(z) = <t(z) − t(x), u> / ‖u‖²,  u = t(x') − t(x)     (p(x) = 0, p(x') = 1; per token for dense tasks)

and is right at x but wrong wherever p > τ (so at x'):

* classification: logits `[0, s(p − τ), −s, −s] + s` (the shift changes no softmax), label 0: wrong iff p > τ;
* segmentation: per patch token the same two logits (+ a third, −s), upsampled bilinearly to the
  input like the real head, mask 0 everywhere: a pixel is wrong iff its upsampled p > τ;
* depth: `log d̂ = log d + c·σ·p` with p upsampled bilinearly and σ a random sign per token
  (nearest-upsampled), c = 1: a pixel is wrong iff |log d̂ − log d| > c·τ (a factor e^τ);
* EmbedAttack (which never sees the head) is checked against its own objective: found iff the
  embedding moved at least τ·‖t(x') − t(x)‖.

An attack that works finds (nearly) every planted example; `THRESHOLDS` are set from measurement
on the bundled encoder (README, "Attack sanity checks"), and an attack weakened on purpose (0 steps,
a step size of 0) falls far below them.

Example:
    >>> rows = check_attacks("shapes-resnet-tiny", tasks=["classification"], num_images=8)
    >>> print(format_checks(rows))
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attack_suites import attacks_for_task, build_attack, expand_attacks
from .data import get_dataset_spec
from .data.synthetic import render_scenes
from .encoders import load_encoder
from .tasks import get_task

TAU = 0.9
LOGIT_SCALE = 10.0
DEPTH_SCALE = 1.0
# Share of planted units an attack must find. Measured on the bundled encoder (16 images, 8/255, 20 steps,
# README): 1.00 for most, 0.99 DepthPGD / APGD-depth, 0.94 APGD-DLR, 0.92 APGD-depth-tol (it stops pushing
# a pixel once it is off by 1.25x, short of the planted e^0.9); with 0 steps every attack finds 0.00.
THRESHOLDS = {"default": 0.9, "apgd:dlr": 0.8, "apgd:depth_tol": 0.8}


class PlantedModel(nn.Module):
    """A frozen encoder with a per-image linear head that is right at x and wrong at x' (module docstring)."""

    def __init__(self, encoder, task: str, pixels: Tensor, planted: Tensor, target: Tensor | None = None, seed: int = 0) -> None:
        super().__init__()
        self.encoder, self.task = encoder, task
        with torch.no_grad():
            t0, t1 = self.read_tokens(pixels), self.read_tokens(planted)
        self.register_buffer("t0", t0)
        self.register_buffer("u", t1 - t0)
        self.size = pixels.shape[-2:]
        if task == "depth":
            g = torch.Generator().manual_seed(seed)
            sign = torch.randint(0, 2, (t0.shape[0], 1, *t0.shape[2:]), generator=g).float() * 2 - 1
            self.register_buffer("sign", sign.to(t0.device))
            self.register_buffer("depth", target.float())

    def read_tokens(self, pixels: Tensor) -> Tensor:
        """The tokens the planted head reads: CLS `[B, D]` or the patch grid `[B, D, h, w]` (EmbedAttack's target too)."""
        out = self.encoder(pixels)
        return out.cls if self.task == "classification" else out.patch_grid()

    def projection(self, pixels: Tensor) -> Tensor:
        """p per image `[B]` or per token, upsampled to the input `[B, H, W]`."""
        p = ((self.read_tokens(pixels) - self.t0) * self.u).sum(1) / (self.u * self.u).sum(1).clamp_min(1e-12)
        if self.task == "classification":
            return p
        return F.interpolate(p[:, None], size=tuple(self.size), mode="bilinear", align_corners=False)[:, 0]

    def forward(self, pixels: Tensor) -> Tensor:
        if self.task == "depth":
            sign = F.interpolate(self.sign, size=tuple(self.size), mode="nearest")[:, 0]  # per pixel: |g| = c·p exactly
            return self.depth * torch.exp(DEPTH_SCALE * sign * self.projection(pixels))  # [B, H, W]
        p = self.projection(pixels)
        z1 = LOGIT_SCALE * (p - TAU)
        zero, low = torch.zeros_like(z1), torch.full_like(z1, -LOGIT_SCALE)
        # + s on every logit: softmax, argmax and every logit difference are unchanged, but the correct
        # logit is no longer exactly 0, which would leave a normalised-logit loss (SEA's spherical:
        # z_y / ‖z‖) flat at 0 whatever the input, and the attack on it blind.
        return torch.stack([zero, z1, low] + ([low] if self.task == "classification" else []), dim=1) + LOGIT_SCALE

    def found(self, adv: Tensor, target: Tensor) -> Tensor:
        """`[B]` share of each image's units (1 for an image, pixels for dense tasks) that are wrong at `adv`."""
        with torch.no_grad():
            out = self(adv)
            if self.task == "classification":
                return (out.argmax(1) != target).float()
            if self.task == "segmentation":
                return (out.argmax(1) != target).flatten(1).float().mean(1)
            valid = self.depth > 0
            wrong = ((out / self.depth.clamp_min(1e-6)).log().abs() > DEPTH_SCALE * TAU) & valid
            return wrong.flatten(1).float().sum(1) / valid.flatten(1).float().sum(1).clamp_min(1)

    def embedding_found(self, adv: Tensor, planted: Tensor) -> Tensor:
        """`[B]` 1 where the embedding moved at least τ times as far as the planted point's."""
        with torch.no_grad():
            moved = (self.read_tokens(adv) - self.t0).flatten(1).norm(dim=1)
        return (moved >= TAU * self.u.flatten(1).norm(dim=1)).float()


def planted_point(pixels: Tensor, eps: float, seed: int) -> Tensor:
    """x' = clip(x + δ, 0, 1), δ a seeded random vertex of the L-inf ball (inside the ball, never on the far side)."""
    g = torch.Generator().manual_seed(seed)
    sign = torch.randint(0, 2, pixels.shape, generator=g).to(pixels) * 2 - 1
    return (pixels + 0.999 * eps * sign).clamp(0, 1)


def check_attacks(encoder="shapes-resnet-tiny", tasks=("classification", "segmentation", "depth"), attacks=("strong",),
                  eps: float = 8 / 255, steps: int = 20, num_images: int = 16, image_size: int = 64, seed: int = 0,
                  overrides: dict | None = None) -> list[dict]:
    """Plant one adversarial example per image and task; report the share each attack finds.

    Args:
        encoder: a name `load_encoder` accepts or a `PixelEncoder`.
        tasks, attacks: what to check (`attacks` as on the benchmark's command line: names, `apgd:LOSS`, `strong`).
        eps, steps: the threat model and attack length (step size eps / 4 for fixed-step attacks).
        num_images: ShapesWorld test-stream images per task (`seed`).
        overrides: attack fields to force on every attack, e.g. `{"steps": 0}` (a weakened attack, for tests).

    Returns:
        One row per (task, attack): `task`, `attack`, `found` (mean share), `threshold`, `passed`,
        `clean_wrong` / `planted` (the share wrong at x and at x': 0 and 1 by construction).
    """
    if num_images < 1 or steps < 0 or not eps > 0:
        raise ValueError(f"Need num_images >= 1, steps >= 0 and eps > 0; got {num_images}, {steps}, {eps}.")
    for task_name in tasks:  # bad names fail here, before the encoder is loaded
        get_task(task_name)
    expand_attacks(list(attacks))
    enc = load_encoder(encoder) if not isinstance(encoder, nn.Module) else encoder
    enc = enc.eval().requires_grad_(False)
    scenes = render_scenes(num_images, image_size=image_size, seed=seed + 7919)  # not the training stream's seed
    pixels = scenes["pixel_values"]
    planted = planted_point(pixels, eps, seed)
    rows = []
    for task_name in tasks:
        task, spec = get_task(task_name), get_dataset_spec("shapes", task=task_name)
        target = {"classification": torch.zeros(num_images, dtype=torch.long),
                  "segmentation": torch.zeros(num_images, image_size, image_size, dtype=torch.long),
                  "depth": scenes["depth"]}[task_name]
        model = PlantedModel(enc, task_name, pixels, planted, target=scenes["depth"], seed=seed)
        clean_wrong = float(model.found(pixels, target).mean())
        at_planted = float(model.found(planted, target).mean())  # 1.0: the planted example is there
        for name in attacks_for_task(list(attacks), task_name):
            attack = build_attack(name, task, spec, eps=eps, step_size=eps / 4, steps=steps, seed=seed)
            if overrides:
                attack = dataclasses.replace(attack, **overrides)
            result = attack.perturb(model, pixels, None if attack.surface == "encoder" else target)
            found = model.embedding_found(result.pixels, planted) if attack.surface == "encoder" else model.found(result.pixels, target)
            threshold = THRESHOLDS.get(name, THRESHOLDS["default"])
            rows.append(dict(task=task_name, attack=name, found=float(found.mean()), threshold=threshold,
                             passed=float(found.mean()) >= threshold, clean_wrong=clean_wrong, planted=at_planted,
                             steps=attack.steps, eps=eps))
    return rows


def format_checks(rows: list[dict]) -> str:
    """Markdown table: task, attack, share found, threshold, verdict."""
    from .results import attack_title, format_eps

    lines = ["| task | attack | planted examples found | threshold | |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {attack_title(r['attack'])} | {r['found']:.2f} | {r['threshold']:.2f} | "
                     f"{'ok' if r['passed'] else 'FAIL'} |")
    if rows:
        lines.append(f"\nε = {format_eps(rows[0]['eps'])}, {rows[0]['steps']} steps, τ = {TAU}; share wrong at x / at the planted x': "
                     + ", ".join(dict.fromkeys(f"{r['task']} {r['clean_wrong']:.2f} / {r['planted']:.2f}" for r in rows)))
    return "\n".join(lines) + "\n"
