"""Square Attack: gradient-free random search on the task model's outputs, for all three tasks.

Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box adversarial
attack via random search" (ECCV 2020), https://arxiv.org/abs/1912.00049. It reads only the model's
outputs (scores), never a gradient, so it is blind to gradient masking: when it beats a white-box
attack, the white-box number is suspect (AutoAttack's warning; `diagnostics_blackbox.py`).

The search (Algorithm 1): start from `init`, then for `steps` queries draw a candidate by changing
one square window of side `h`, keep it for an image if its objective rose (strictly), else keep the
current point. The window covers a fraction `p` of the image: `h = round(sqrt(p·H·W))`, at least 1
(L-inf) or 3 (L2, the pattern needs a centre); `p` starts at `p_init` (L-inf 0.8, L2 0.1 by default) and halves at queries 10, 50,
200, 500, 1000, 2000, 4000, 6000, 8000 of the paper's 10,000, rescaled to our budget (query `i` of
`steps` counts as `i · 10000 / steps`).

* L-inf: init = vertical stripes of width 1, each column of each channel at `x ± eps` (random
  sign); a candidate sets the window of every channel to `x ± eps` (one random sign per channel).
* L2: init = the image tiled by squares of side `max(min(H, W) // 5, 3)`, each holding the centred
  pattern η (below) with a random sign per channel, rescaled to `‖δ‖₂ = eps`. A candidate (Algorithm 3)
  draws two windows W1, W2; per channel, the perturbation of W1 becomes the normalised sum of ±η and
  of its own normalised values, carrying the L2 mass of W1 ∪ W2 plus an equal share of the budget
  still unused (`eps² − ‖δ‖²`), and W2 is emptied: mass moves between windows, the ball is kept.
  η of side h is two halves `(η^(h, ⌊h/2⌋), −η^(h, h − ⌊h/2⌋))`, transposed with probability 1/2,
  where `η^(a, b)_{r,s} = Σ_{k=0}^{M} 1/(n + 1 − k)²`, `n = ⌊a/2⌋`, `M = n − max(|r − ⌊a/2⌋|, |s − ⌊b/2⌋|)`
  (0-based r, s; 0 where M < 0): rings whose weight grows towards the centre.

Objective (`loss`, maximised, any objective of `objectives.py`): classification `margin`
(`max_{i≠y} z_i − z_y`, the paper's); an image stops once misclassified (margin > 0) and is no
longer queried. Segmentation and depth accept a window when the task loss of the image rises:
`pixel_margin` (the margin per pixel capped at 0: scale-invariant, so a saturated softmax does not
blind it) and `depth` (the depth training loss); no early stop.

Budget and cost: `steps` is the number of queries (forward passes of the task model) per image after
the one that scores the start point, so at most `steps + 1` forwards, no backward. `step_size` is
not used. `random_start=False` starts from `x` itself. The returned point is always the best found
(only improvements are accepted): `scores` (per-image `objectives.damage`) is always filled.
Randomness: a CPU `torch.Generator` per image when `seed` is a sequence of B ints (results then do
not depend on the batching), one for the batch when an int, the global one when None.

Example:
    >>> adv = Square(eps=8 / 255, steps=1000, seed=0).perturb(classifier, pixels, labels).pixels
    >>> adv = make_attack("square", loss="pixel_margin", steps=500).perturb(segmenter, pixels, masks).pixels
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..encoders import check_pixels
from . import objectives
from .base import Attack, AttackResult, _norm, _project, _round_down, frozen, register_attack

HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)  # of a 10,000-query run (the paper's schedule)
P_INIT = {"linf": 0.8, "l2": 0.1}  # default first window fraction per norm (see `Square.p_init`)


def window_fraction(p_init: float, step: int, steps: int) -> float:
    """`p` at query `step` (0-based) of `steps`: `p_init` halved at each rescaled checkpoint passed."""
    i = (step + 1) * 10000 / max(steps, 1)
    return p_init / 2 ** sum(i > t for t in HALVINGS)


def ring_pattern(a: int, b: int) -> Tensor:
    """`η^(a, b)` `[a, b]` (module docstring), float32."""
    n = a // 2
    weights = torch.tensor([1 / (n + 1 - k) ** 2 for k in range(n + 1)]).cumsum(0)  # [n + 1]  # cpu-ok: a small pattern, moved with .to(x)
    r, s = torch.arange(a)[:, None], torch.arange(b)[None, :]  # cpu-ok: pattern indices
    m = n - torch.maximum((r - a // 2).abs(), (s - b // 2).abs())
    return torch.where(m >= 0, weights[m.clamp(0, n)], torch.zeros(()))  # cpu-ok: pattern


def split_pattern(h: int) -> Tensor:
    """The L2 update's pattern of side h: two rings of opposite sign side by side, unit L2 norm."""
    k = h // 2
    eta = torch.cat([ring_pattern(h, k), -ring_pattern(h, h - k)], dim=1)
    return eta / eta.norm()


class Draws:
    """Uniform integers per image: from one CPU generator per image (a seed sequence), one for the batch, or the global RNG."""

    def __init__(self, seed, n: int) -> None:
        self.n = n
        if isinstance(seed, (list, tuple)):
            if len(seed) != n:
                raise ValueError(f"Got {len(seed)} per-image seeds for {n} images.")
            self.gens = [torch.Generator().manual_seed(int(s)) for s in seed]
        else:
            self.gens = [torch.Generator().manual_seed(seed)] if seed is not None else [None]

    def ints(self, high: int, k: int) -> Tensor:
        """`[n, k]` int64 in `[0, high)`."""
        if len(self.gens) == 1:
            return torch.randint(high, (self.n, k), generator=self.gens[0])  # cpu-ok: CPU generators: device-independent draws
        return torch.cat([torch.randint(high, (1, k), generator=g) for g in self.gens])  # cpu-ok: per-image CPU generators

    def signs(self, k: int) -> Tensor:
        return self.ints(2, k).float() * 2 - 1


@register_attack("square")
@dataclass
class Square(Attack):
    """Square Attack (module docstring).

    Args:
        loss: the objective accepted on (an `objectives.py` name; fixes the task): `margin`,
            `pixel_margin`, `depth`, ... (`attack_suites.SQUARE_LOSS` per task).
        p_init: fraction of the image the first windows cover (halved along the schedule); None:
            `P_INIT[norm]` (L-inf 0.8: measured best of 0.1 / 0.3 / 0.8 for budgets of a few hundred
            queries on the bundled encoder; L2 0.1, not tuned here).
        ignore_index, max_depth, tolerance: as APGD (segmentation ignore label; depth validity; `depth_tol`).
    """

    loss: str = "margin"
    p_init: float | None = None
    ignore_index: int = 255
    max_depth: float = 10.0
    tolerance: float = 1.25
    track_best: bool = True  # always: random search only ever keeps improvements

    @property
    def loss_task(self) -> str:
        return objectives.loss_task(self.loss)

    def validate(self) -> None:
        super().validate()
        objectives.loss_task(self.loss)  # unknown loss: ValueError listing the losses per task
        if self.p_init is not None and not 0 < self.p_init <= 1:
            raise ValueError(f"p_init (the fraction of the image a window covers) must lie in (0, 1], got {self.p_init}.")
        if not self.max_depth > 0 or not self.tolerance > 1:
            raise ValueError(f"max_depth must be > 0 and tolerance > 1, got {self.max_depth} and {self.tolerance}.")

    def forward(self, model: Any, pixels: Tensor) -> Tensor:
        return objectives.task_outputs(self.loss_task, model(pixels))

    def prepare_target(self, model: Any, pixels: Tensor, target: Any) -> Any:
        return objectives.prepare_target(self.loss_task, super().prepare_target(model, pixels, target), self)

    def objective(self, outputs: Tensor, target: Any, step: int) -> Tensor:
        objectives.check_shapes(self.loss_task, outputs, target, self.loss)
        return objectives.LOSSES[self.loss_task][self.loss](outputs, target, step, self).float()

    def score(self, outputs: Tensor, target: Any) -> Tensor:
        return objectives.damage(self.loss_task, outputs, target, self).float()

    def perturb(self, model: Any, pixels: Tensor, target: Any = None) -> AttackResult:
        """Attack `pixels` `[B, 3, H, W]` in [0, 1] with at most `steps + 1` forward passes and no gradient."""
        self.validate()
        check_pixels(pixels)
        if not bool(((pixels >= 0) & (pixels <= 1)).all()):
            raise ValueError("pixels must lie in [0, 1] (normalisation happens inside the encoder).")
        x = pixels.detach().clone()
        if self.eps == 0:
            return AttackResult(pixels=x, losses=x.new_zeros(0))
        with frozen(model), torch.no_grad():
            return self._search(model, x, target)

    def _search(self, model: Any, x: Tensor, target: Any) -> AttackResult:
        b, c, h, w = x.shape
        linf, radius = self.norm == "linf", _round_down(self.eps, x.dtype)
        target = self.prepare_target(model, x, target)
        draws = Draws(self.seed, b)
        x_adv = _project(self._init(x, radius, draws) if self.random_start else x.clone(), x, radius, linf)
        out = self.forward(model, x_adv)
        best, damage = self.objective(out, target, 0), self.score(out, target)
        stops = self.loss_task == "classification"
        # L-inf: the two vertices x ± eps of every pixel, projected once (a candidate only picks among them)
        vertices = (_project(x - radius, x, radius, True), _project(x + radius, x, radius, True)) if linf else None
        losses = []
        for step in range(self.steps):
            losses.append(best.mean())
            p_init = self.p_init if self.p_init is not None else P_INIT[self.norm]
            side = max(round(math.sqrt(window_fraction(p_init, step, self.steps) * h * w)), 1 if linf else 3)
            side = min(side, h, w)
            if linf:
                candidate = self._linf_candidate(x, x_adv, vertices, side, draws)
            else:
                candidate = self._l2_candidate(x, x_adv, radius, side, draws)
            idx = (damage <= 0).nonzero()[:, 0] if stops else None  # misclassified images are done
            if idx is not None and idx.numel() == 0:
                continue  # keep drawing, so an image's draws do not depend on the others
            sub = (lambda t: t) if idx is None else (lambda t: t[idx])
            sub_target = sub(target) if not isinstance(target, tuple) else tuple(sub(t) for t in target)
            out = self.forward(model, sub(candidate))
            new, new_damage = self.objective(out, sub_target, step), self.score(out, sub_target)
            better = new > sub(best)
            if idx is None:
                x_adv = torch.where(better.view(-1, 1, 1, 1), candidate, x_adv)
                best, damage = torch.where(better, new, best), torch.where(better, new_damage, damage)
            else:
                keep = idx[better]
                x_adv[keep], best[keep], damage[keep] = candidate[keep], new[better], new_damage[better]
        losses = torch.stack(losses) if losses else x.new_zeros(0)
        return AttackResult(pixels=x_adv, losses=losses, scores=damage)

    def _init(self, x: Tensor, radius: float, draws: Draws) -> Tensor:
        b, c, h, w = x.shape
        if self.norm == "linf":  # vertical stripes
            return x + radius * draws.signs(c * w).view(b, c, 1, w).to(x)
        t = max(min(h, w) // 5, 3)
        tile = ring_pattern(t, t)
        rows, cols = torch.arange(h), torch.arange(w)  # cpu-ok: pattern indices, moved with .to(x)
        grid = tile[rows[:, None] % t, cols[None, :] % t]  # [H, W] pattern repeated
        signs = draws.signs(c * -(-h // t) * -(-w // t)).view(b, c, -(-h // t), -(-w // t))
        delta = grid * signs[:, :, rows // t][:, :, :, cols // t]  # [B, C, H, W]
        delta = delta / _norm(delta).clamp_min(1e-12).view(-1, 1, 1, 1) * radius
        return x + delta.to(x)

    def _window(self, x: Tensor, side: int, draws: Draws) -> tuple[Tensor, Tensor, Tensor]:
        """A random window per image: mask `[B, 1, H, W]` and its top-left corner (rows, cols) `[B]`."""
        h, w = x.shape[-2:]
        r, s = draws.ints(h - side + 1, 1)[:, 0], draws.ints(w - side + 1, 1)[:, 0]
        ar, ac = torch.arange(h), torch.arange(w)  # cpu-ok: window masks, moved to x's device below
        in_r = (ar[None] >= r[:, None]) & (ar[None] < r[:, None] + side)
        in_c = (ac[None] >= s[:, None]) & (ac[None] < s[:, None] + side)
        return (in_r[:, None, :, None] & in_c[:, None, None, :]).to(x.device), r, s

    def _linf_candidate(self, x: Tensor, x_adv: Tensor, vertices: tuple[Tensor, Tensor], side: int, draws: Draws) -> Tensor:
        mask, _, _ = self._window(x, side, draws)
        up = draws.ints(2, x.shape[1]).bool().view(x.shape[0], -1, 1, 1).to(x.device)  # per channel: x + eps or x − eps
        low, high = vertices
        return torch.where(mask, torch.where(up, high, low), x_adv)

    def _l2_candidate(self, x: Tensor, x_adv: Tensor, radius: float, side: int, draws: Draws) -> Tensor:
        b, c, h, w = x.shape
        m1, r1, s1 = self._window(x, side, draws)
        m2, _, _ = self._window(x, side, draws)
        eta = split_pattern(side)
        flip = draws.ints(2, 1)[:, 0].bool()  # transpose the pattern for these images
        pattern = torch.where(flip.view(-1, 1, 1), eta.T, eta)  # [B, side, side]
        ri = (torch.arange(h)[None] - r1[:, None]).clamp(0, side - 1)  # [B, H] row inside the window # cpu-ok: host indices
        ci = (torch.arange(w)[None] - s1[:, None]).clamp(0, side - 1)  # cpu-ok: host indices
        placed = pattern[torch.arange(b)[:, None, None], ri[:, :, None], ci[:, None, :]][:, None].to(x) * m1  # [B, 1, H, W] # cpu-ok: built on the host, moved
        rho = draws.signs(c).view(b, c, 1, 1).to(x)
        nu = x_adv - x
        unused = (radius**2 - _norm(nu).square()).clamp_min(0)  # [B]
        both = m1 | m2
        per_channel = lambda t: t.flatten(2).norm(dim=2)[:, :, None, None]  # noqa: E731  [B, C, 1, 1]
        nu_w1 = nu * m1
        temp = rho * placed + nu_w1 / per_channel(nu_w1).clamp_min(1e-12)
        avail = (per_channel(nu * both).square() + unused.view(-1, 1, 1, 1) / c).sqrt()
        new_w1 = temp / per_channel(temp).clamp_min(1e-12) * avail
        nu = torch.where(m1, new_w1, torch.where(both, torch.zeros_like(nu), nu))
        return _project((x + nu).clamp(0, 1), x, radius, False)
