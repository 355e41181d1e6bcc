"""APGD: AutoAttack's step-size policy on the one projected-gradient loop, for all three tasks.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks" (ICML 2020), https://arxiv.org/abs/2003.01690, Algorithm 1; the dense
losses follow SEA (Croce et al. 2024, https://arxiv.org/abs/2306.12941), see `objectives.py`.

The policy (`APGDStep`): the step starts at 2ε (L-inf and L2 alike) for every image; each step
is a projected gradient step `z` followed by momentum, `x ← P(x + α(z − x) + (1 − α)(x − x_prev))`
with α = 0.75 (1 on the first step). At the checkpoints `w_j = ⌈p_j N⌉`, `p_0 = 0`, `p_1 = 0.22`,
`p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)`, an image's step is halved and it restarts
from its best point so far when (1) its objective rose in at most ρ = 0.75 of the steps since the
last checkpoint, or (2) its step was not halved at the last checkpoint and its best objective
has not improved since. Everything else (random start, projection, leaving the model untouched,
the best iterate) is the shared loop's.

Threat model: L-inf or L2 ball of radius eps, pixels in [0, 1], untargeted. `step_size` is not
used (the policy sets its own). The returned image is, per image, the iterate with the highest
damage (`track_best`, on by default): for classification the largest margin `max_{i≠y} z_i − z_y`
(so an image misclassified at any iterate is returned misclassified), for segmentation the
highest pixel error rate, for depth the highest RMSE. `restarts > 1` reruns the loop from new
random starts (`restart_seed(seed, r)`: a hash of the seed and r, never another image's seed) and keeps each image's most damaging result.

Shapes: as PGD / SegPGD / DepthPGD for the task of `loss` (logits `[B, K]` or `[B, C, H, W]`,
depth `[B, H, W]`; HF outputs accepted), target labels / masks / depth maps.

Example:
    >>> adv = APGD(loss="dlr", eps=8 / 255, steps=100, seed=0).perturb(classifier, pixels, labels).pixels
    >>> adv = make_attack("apgd", loss="js", steps=50).perturb(segmenter, pixels, masks).pixels
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from . import objectives
from .base import Attack, AttackResult, StepPolicy, projected_gradient_ascent, register_attack, restart_seed


def checkpoints(steps: int) -> list[int]:
    """Steps at which APGD checks progress: the AutoAttack schedule in integers (22 %, then -3 %, at least 6 %)."""
    k, decrease, smallest = max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    out, t = [], k
    while t < steps:
        out.append(t)
        k = max(k - decrease, smallest)
        t += k
    return out


class APGDStep(StepPolicy):
    """AutoAttack's step-size schedule with momentum and restarts from the best point (module docstring).

    With `progressive=True` (SEA) the radius is 2ε, 1.5ε, then ε over 30 / 30 / 40 % of the steps;
    each phase is an APGD run of its own length that starts from the previous phase's best point
    projected onto the smaller ball, and only iterates of the last phase (inside ε) are admissible
    as the returned best.
    """

    def __init__(self, attack: APGD, x: Tensor, radius: float) -> None:
        super().__init__(attack, x, radius)
        self.eps, steps = radius, attack.steps
        bounds = [(0, 1.0)]
        if attack.progressive and steps > 1:
            bounds = [(0, 2.0), (min(round(0.3 * steps), steps - 1), 1.5), (min(round(0.6 * steps), steps - 1), 1.0)]
        self.phases = dict(bounds)  # start step -> radius factor; a later phase with the same start wins
        self.last_phase = max(self.phases)

    def admissible(self, step: int) -> bool:
        return step == 0 or step > self.last_phase  # produced with radius ε

    def next(self, x_adv: Tensor, grad: Tensor, loss: Tensor, step: int) -> Tensor:
        loss = loss.float()
        if step in self.phases:  # a new APGD run: fresh step size, checkpoints and best point
            self.radius = self.phases[step] * self.eps
            if step > 0:  # continue from the best point so far, inside the smaller ball; its loss is not known yet
                x_adv, grad, loss = self.project(self.best_x), self.best_grad, torch.full_like(loss, float("-inf"))
            starts = sorted(self.phases) + [self.attack.steps]
            self.checks = {step + c for c in checkpoints(starts[starts.index(step) + 1] - step)}
            self.last_check, self.phase_start = step, step
            self.eta = torch.full_like(loss, 2 * self.radius)  # [B] per-image step
            self.best_x, self.best_loss, self.best_grad = x_adv, loss, grad
            self.rises = torch.zeros_like(loss)
            self.best_at_check, self.halved = loss, torch.ones_like(loss, dtype=torch.bool)
        else:
            self.rises = self.rises + (loss > self.last_loss)
            better = loss > self.best_loss
            img = better.view(-1, 1, 1, 1)
            self.best_x, self.best_grad = torch.where(img, x_adv, self.best_x), torch.where(img, grad, self.best_grad)
            self.best_loss = torch.where(better, loss, self.best_loss)
            if step in self.checks:
                x_adv, grad = self._check(x_adv, grad, step)
        self.last_loss = loss
        z = self.project(x_adv + self.eta.view(-1, 1, 1, 1) * self.direction(grad))
        if step > self.phase_start:
            a = self.attack.momentum
            z = self.project(x_adv + a * (z - x_adv) + (1 - a) * (x_adv - self.prev))
        self.prev = x_adv
        return z

    def _check(self, x_adv: Tensor, grad: Tensor, step: int) -> tuple[Tensor, Tensor]:
        since = step - self.last_check
        oscillating = self.rises <= self.attack.rho * since  # condition 1 (AutoAttack: at most ρ of the steps rose)
        stuck = ~self.halved & (self.best_at_check >= self.best_loss)  # condition 2
        reduce = oscillating | stuck
        self.eta = torch.where(reduce, self.eta / 2, self.eta)
        self.halved, self.best_at_check, self.last_check = reduce, self.best_loss, step
        self.rises = torch.zeros_like(self.rises)
        img = reduce.view(-1, 1, 1, 1)
        return torch.where(img, self.best_x, x_adv), torch.where(img, self.best_grad, grad)


@register_attack("apgd")
@dataclass
class APGD(Attack):
    """APGD with a per-task loss (see module docstring and `objectives.py`).

    Args:
        loss: classification `ce` | `dlr`; segmentation `masked_ce` | `balanced_masked_ce` |
            `js` | `segpgd`; depth `depth` | `depth_tol`.
        momentum: α of the momentum step (AutoAttack: 0.75).
        rho: fraction of rising steps below which a checkpoint halves the step (0.75).
        restarts: independent runs from new random starts; each image keeps its most damaging.
        ignore_index: segmentation label that counts nowhere.
        max_depth: depth ground truth above this (metres) is invalid.
        tolerance: `depth_tol` keeps the pixels with `max(d̂/d, d/d̂)` below this (δ1: 1.25).
        progressive: SEA's progressive radius 2ε → 1.5ε → ε over 30 / 30 / 40 % of the steps
            (`APGDStep`); the returned image is always inside ε. Needs `track_best`.
    """

    loss: str = "ce"
    momentum: float = 0.75
    rho: float = 0.75
    restarts: int = 1
    ignore_index: int = 255
    max_depth: float = 10.0
    tolerance: float = 1.25
    progressive: bool = False
    track_best: bool = True

    @property
    def loss_task(self) -> str:
        """The task whose model this attack's loss expects."""
        return objectives.loss_task(self.loss)

    def validate(self) -> None:
        super().validate()
        objectives.loss_task(self.loss)  # unknown loss: ValueError listing the losses per task
        if not 0 <= self.momentum <= 1:
            raise ValueError(f"momentum must lie in [0, 1], got {self.momentum}.")
        if not 0 < self.rho <= 1:
            raise ValueError(f"rho must lie in (0, 1], got {self.rho}.")
        if isinstance(self.restarts, bool) or not isinstance(self.restarts, int) or self.restarts < 1:
            raise ValueError(f"restarts must be an int >= 1, got {self.restarts!r}.")
        if self.progressive and not self.track_best:
            raise ValueError("progressive=True returns the best iterate inside eps: it needs track_best=True.")
        if self.restarts > 1 and not self.track_best:
            raise ValueError("restarts > 1 keeps each image's most damaging run: it needs track_best=True.")
        if not self.max_depth > 0 or not self.tolerance > 1:
            raise ValueError(f"max_depth must be > 0 and tolerance > 1, got {self.max_depth} and {self.tolerance}.")

    def step_policy(self, x: Tensor, radius: float) -> StepPolicy:
        return APGDStep(self, x, radius)

    def forward(self, model: Any, pixels: Tensor) -> Tensor:
        return objectives.task_outputs(self.loss_task, model(pixels))

    def prepare_target(self, model: Any, pixels: Tensor, target: Any) -> Any:
        return objectives.prepare_target(self.loss_task, super().prepare_target(model, pixels, target), self)

    def objective(self, outputs: Tensor, target: Any, step: int) -> Tensor:
        task = self.loss_task
        objectives.check_shapes(task, outputs, target, self.loss)
        return objectives.LOSSES[task][self.loss](outputs, target, step, self)

    def score(self, outputs: Tensor, target: Any) -> Tensor:
        objectives.check_shapes(self.loss_task, outputs, target, self.loss)
        return objectives.damage(self.loss_task, outputs, target, self)

    def perturb(self, model: Any, pixels: Tensor, target: Any = None) -> AttackResult:
        """Attack `pixels`; with `restarts > 1`, per image the most damaging of the runs (needs `track_best`)."""
        if self.restarts == 1:
            return projected_gradient_ascent(self, model, pixels, target)
        best = None
        for r in range(self.restarts):
            run = projected_gradient_ascent(dataclasses.replace(self, restarts=1, seed=restart_seed(self.seed, r)), model, pixels, target)
            if best is None or run.scores is None:  # eps = 0: nothing to compare
                best = best or run
                continue
            better = run.scores > best.scores
            best = AttackResult(pixels=torch.where(better.view(-1, 1, 1, 1), run.pixels, best.pixels),
                                losses=torch.cat([best.losses, run.losses]), scores=torch.where(better, run.scores, best.scores))
        return best
