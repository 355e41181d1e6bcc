"""The one projected-gradient loop every attack shares, the `Attack` base class and its registry.

An attack is a stateless dataclass that is its own config. It defines only its objective
(`loss(outputs, target, step) -> [B]`, maximised), optionally `forward` (how to call the model),
`prepare_target` (e.g. the clean embedding), `score` (the per-sample damage used to keep the
best iterate) and `step_policy` (how a gradient becomes the next iterate: a fixed step by default,
APGD's schedule in `apgd.py`). `projected_gradient_ascent` owns everything else: validation,
random start, the sign (L-inf) or normalised (L2) gradient step, the projection, and leaving the
model untouched.

Threat model: `‖x_adv − x‖ ≤ eps` (L-inf or L2, per sample) and `x_adv ∈ [0, 1]`, with eps in
[0, 1] pixel units. Both hold exactly in floating point for L-inf; for L2 up to a 1e-5 margin
taken inside the ball.

Example:
    >>> attack = make_attack("pgd", eps=8 / 255, steps=20, seed=0)
    >>> adv = attack.perturb(classifier, pixels, labels).pixels     # [B, 3, H, W] in [0, 1]
"""

from __future__ import annotations

import abc
import contextlib
import contextvars
import dataclasses
import zlib
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..encoders import check_pixels
from ..precision import InputGradScaler

ATTACKS: dict[str, type[Attack]] = {}
NORMS = ("linf", "l2")
_L2_MARGIN = 1e-5  # project L2 onto a ball this much (relatively) smaller: float rounding of the norm
_STEP_OBSERVER = contextvars.ContextVar("step_observer", default=None)


@contextlib.contextmanager
def observe_steps(observer):
    """Within the block, every run of the loop calls `observer(step, x_adv, outputs, grad, admissible)`
    after each gradient (`outputs` still carry the graph: detach them). Used by `diagnostics.py`."""
    token = _STEP_OBSERVER.set(observer)
    try:
        yield
    finally:
        _STEP_OBSERVER.reset(token)


def register_attack(name: str):
    """Class decorator: make an `Attack` subclass available as `make_attack(name)`."""

    def decorator(cls: type[Attack]) -> type[Attack]:
        if name in ATTACKS and ATTACKS[name] is not cls:
            raise ValueError(f"Attack {name!r} is already registered by {ATTACKS[name].__name__}.")
        cls.name = name
        ATTACKS[name] = cls
        return cls

    return decorator


def make_attack(name: str, **kwargs: Any) -> Attack:
    """Build a registered attack by name, e.g. `make_attack("segpgd", eps=4 / 255, steps=10)`."""
    if name not in ATTACKS:
        from ..suggestions import did_you_mean

        raise ValueError(f"Unknown attack {name!r}{did_you_mean(name, ATTACKS)}; available: {sorted(ATTACKS)}")
    cls = ATTACKS[name]
    fields = sorted(f.name for f in dataclasses.fields(cls) if f.init)
    unknown = sorted(set(kwargs) - set(fields))
    if unknown:
        raise ValueError(f"Unknown argument(s) {unknown} for attack {name!r}; accepted: {fields}")
    return cls(**kwargs)


_MASK64 = (1 << 64) - 1


def mix_seed(*parts: int | str) -> int:
    """A 63-bit seed from ints and strings (splitmix64-style combine; strings by CRC-32), stable
    across processes and Python runs (unlike `hash`). Random starts are seeded per image with
    `mix_seed(seed, image_index, attack_name)` and restart r > 0 with `mix_seed(that, "restart", r)`,
    so no two attacks, images or restarts share a start, and none depends on batching."""
    h = 0x9E3779B97F4A7C15
    for part in parts:
        value = zlib.crc32(part.encode()) | (1 << 32) if isinstance(part, str) else int(part)  # 1 << 32: str never equals an int
        h = ((h ^ (value & _MASK64)) * 0xBF58476D1CE4E5B9) & _MASK64
        h ^= h >> 31
    return h >> 1


def image_seeds(seed: int, indices, attack_name: str) -> list[int]:
    """One random-start seed per image: `mix_seed(seed, index, attack_name)` for each index of the split."""
    return [mix_seed(seed, int(k), attack_name) for k in indices]


def restart_seed(seed: int | tuple[int, ...] | None, restart: int):
    """The seed (int, per-image tuple or None) of restart `restart`: `seed` itself for restart 0."""
    if seed is None or restart == 0:
        return seed
    if isinstance(seed, (list, tuple)):
        return tuple(mix_seed(s, "restart", restart) for s in seed)
    return mix_seed(seed, "restart", restart)


@dataclass
class AttackResult:
    """Output of `Attack.perturb`.

    Attributes:
        pixels: `[B, 3, H, W]` adversarial images in [0, 1] (the final iterate, or the per-sample
            best one with `track_best=True`).
        losses: `[steps]` batch-mean objective at the iterate each step starts from, on the
            pixels' device (no host sync; `.tolist()` for floats). Empty when eps = 0.
        scores: `[B]` per-sample `Attack.score` of the returned pixels; only with `track_best=True`.
    """

    pixels: Tensor
    losses: Tensor
    scores: Tensor | None = None


@dataclass
class Attack(abc.ABC):
    """Base class: a projected-gradient attack defined by its objective.

    Args:
        eps: radius of the threat model in [0, 1] pixel units (L-inf, or L2 per sample).
        step_size: L-inf: size of the sign step; L2: L2 length of the normalised gradient step.
        steps: number of gradient steps T.
        random_start: start uniformly in the eps-ball (clamped to [0, 1] before the first forward).
        seed: seeds the random start (a `torch.Generator` on the pixels' device); None uses the
            global RNG; a sequence of B ints seeds each image on its own (results then do not
            depend on how images are batched; the benchmark passes `image_seeds(seed, indices, name)`).
        norm: "linf" (sign-gradient ascent, the paper) or "l2" (normalised-gradient ascent).
        track_best: return, per sample, the iterate with the highest `score` (final iterate
            included, at the cost of one more forward) instead of the final one.
    """

    eps: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 20
    random_start: bool = True
    seed: int | tuple[int, ...] | None = None
    norm: str = "linf"
    track_best: bool = False

    name: ClassVar[str] = ""
    surface: ClassVar[str] = "task"  # "encoder" for attacks on the embedding
    task: ClassVar[str | None] = None  # the task whose model a "task" attack expects

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `ValueError` for settings that make no sense."""
        if not self.eps >= 0:
            raise ValueError(f"eps must be >= 0 (pixel units in [0, 1]), got {self.eps}.")
        if not self.step_size >= 0:
            raise ValueError(f"step_size must be >= 0, got {self.step_size}.")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"steps must be an int >= 0, got {self.steps!r}.")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {list(NORMS)}, got {self.norm!r}.")

    @abc.abstractmethod
    def loss(self, outputs: Any, target: Any, step: int) -> Tensor:
        """Per-sample objective to maximise, `[B]`; `step` counts from 0 to `steps - 1`."""

    def forward(self, model: Any, pixels: Tensor) -> Any:
        """Call the model on `[B, 3, H, W]` pixels (override to pick tokens, unwrap outputs...)."""
        return model(pixels)

    def prepare_target(self, model: Any, pixels: Tensor, target: Any) -> Any:
        """Hook run once (model in eval mode) before the loop, e.g. to embed the clean images."""
        if target is None:
            raise ValueError(f"Attack {self.name!r} needs a target (labels, masks or depth maps).")
        return target

    def objective(self, outputs: Any, target: Any, step: int) -> Tensor:
        """What the loop maximises, `[B]`: `loss` (APGD picks one of several by name here)."""
        return self.loss(outputs, target, step)

    def score(self, outputs: Any, target: Any) -> Tensor:
        """Per-sample damage, `[B]`, used by `track_best` (default: the objective at the last step)."""
        return self.objective(outputs, target, max(self.steps - 1, 0))

    def step_policy(self, x: Tensor, radius: float) -> StepPolicy:
        """How each gradient becomes the next iterate (default: fixed `step_size`, the paper's PGD)."""
        return StepPolicy(self, x, radius)

    def perturb(self, model: Any, pixels: Tensor, target: Any = None) -> AttackResult:
        """Attack `pixels` (`[B, 3, H, W]` in [0, 1]); see `projected_gradient_ascent`."""
        return projected_gradient_ascent(self, model, pixels, target)


def projected_gradient_ascent(attack: Attack, model: Any, pixels: Tensor, target: Any = None) -> AttackResult:
    """Maximise `attack.loss` by projected gradient ascent on the input.

    The model is put in eval mode and its parameters get `requires_grad=False` for the duration
    (gradients flow to the input only, via `torch.autograd.grad`); per-module train/eval flags,
    `requires_grad` flags and any `.grad` are exactly as before afterwards. Works under an outer
    `torch.no_grad()` or `torch.inference_mode()`. `pixels` is never modified.
    """
    attack.validate()
    check_pixels(pixels)
    if torch.is_inference_mode_enabled():  # inference tensors cannot enter autograd: use clones
        with torch.inference_mode(False):
            target = target.clone() if isinstance(target, Tensor) else target
            return projected_gradient_ascent(attack, model, pixels.clone(), target)
    if not bool(((pixels >= 0) & (pixels <= 1)).all()):  # one host sync, before the loop
        raise ValueError("pixels must lie in [0, 1] (normalisation happens inside the encoder).")
    x = pixels.detach().clone()
    if attack.eps == 0:
        return AttackResult(pixels=x, losses=x.new_zeros(0))

    with frozen(model), torch.enable_grad():
        return _ascend(attack, model, x, target)


@contextlib.contextmanager
def frozen(model: Any):
    """Model in eval mode with `requires_grad=False` on every parameter for the duration; every module's
    train/eval flag and every parameter's `requires_grad` are restored afterwards (`.grad` is never touched)."""
    is_module = isinstance(model, nn.Module)
    modes = [(m, m.training) for m in model.modules()] if is_module else []  # models may mix modes
    flags = [(p, p.requires_grad) for p in model.parameters()] if is_module else []
    try:
        for m, _ in modes:
            m.training = False
        for p, _ in flags:
            p.requires_grad_(False)  # no parameter gradient is ever computed
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode


def _ascend(attack: Attack, model: Any, x: Tensor, target: Any) -> AttackResult:
    linf = attack.norm == "linf"
    radius = _round_down(attack.eps, x.dtype)
    target = attack.prepare_target(model, x, target)
    x_adv = _random_start(x, radius, linf, attack.seed) if attack.random_start else x.clone()
    x_adv = _project(x_adv, x, radius, linf)
    policy = attack.step_policy(x, radius)
    scaler = InputGradScaler(x.device.type)  # fp16 autocast: per-sample loss scaling (no underflow to 0)
    best = best_score = None
    losses, observe = [], _STEP_OBSERVER.get()
    for step in range(attack.steps):
        x_adv.requires_grad_(True)
        outputs = attack.forward(model, x_adv)
        loss = attack.objective(outputs, target, step)  # [B]
        if loss.shape != x.shape[:1]:
            raise ValueError(f"{type(attack).__name__}.loss must return one value per sample [B], got {tuple(loss.shape)}.")
        if loss.requires_grad:  # samples are independent: summing keeps each sample's gradient
            grad = scaler.grad(loss, x_adv)  # the true (unscaled) gradient; `loss` stays unscaled
        else:  # the objective does not depend on the input (e.g. a constant model)
            grad = torch.zeros_like(x_adv)
        x_adv = x_adv.detach()
        losses.append(loss.detach().mean())
        if observe is not None:
            observe(step, x_adv, outputs, grad, policy.admissible(step))
        if attack.track_best and policy.admissible(step):
            best, best_score = _keep_best(attack, best, best_score, x_adv, outputs, target)
        x_adv = policy.next(x_adv, grad, loss.detach(), step)
        del outputs, loss, grad  # free the graph before the next forward
    if attack.track_best:
        with torch.no_grad():
            outputs = attack.forward(model, x_adv)
        best, best_score = _keep_best(attack, best, best_score, x_adv, outputs, target)
        x_adv = best
    losses = torch.stack(losses) if losses else x.new_zeros(0)
    return AttackResult(pixels=x_adv.detach(), losses=losses, scores=best_score)


class StepPolicy:
    """The step-size policy of the loop: turns the gradient at iterate t into iterate t + 1.

    The default is the paper's PGD: a fixed step of `attack.step_size` along the sign of the
    gradient (L-inf) or the normalised gradient (L2), then the projection. Policies with state
    (APGD's momentum and step-size schedule) subclass it; the loop itself never changes.
    """

    def __init__(self, attack: Attack, x: Tensor, radius: float) -> None:
        self.attack, self.x, self.radius, self.linf = attack, x, radius, attack.norm == "linf"

    def next(self, x_adv: Tensor, grad: Tensor, loss: Tensor, step: int) -> Tensor:
        """The next iterate from `x_adv` (`[B, 3, H, W]`), its gradient and its objective `[B]`."""
        return self.project(x_adv + self.attack.step_size * self.direction(grad))

    def admissible(self, step: int) -> bool:
        """Whether the iterate of `step` may be returned (inside the threat model; see APGD's progressive radius)."""
        return True

    def direction(self, grad: Tensor) -> Tensor:
        """Steepest-ascent direction of unit size: sign (L-inf) or gradient / its L2 norm (L2)."""
        if self.linf:
            return grad.sign()
        return grad / _norm(grad).clamp_min(1e-12).view(-1, 1, 1, 1)

    def project(self, x_adv: Tensor) -> Tensor:
        return _project(x_adv, self.x, self.radius, self.linf)


def _keep_best(attack, best, best_score, x_adv, outputs, target):
    with torch.no_grad():
        outputs = outputs.detach() if isinstance(outputs, Tensor) else outputs
        score = attack.score(outputs, target).detach().float()  # [B]
    if best is None:
        return x_adv.clone(), score
    better = score > best_score  # strict: ties keep the earlier iterate
    best = torch.where(better.view(-1, 1, 1, 1), x_adv, best)
    return best, torch.where(better, score, best_score)


def _norm(t: Tensor) -> Tensor:
    return torch.linalg.vector_norm(t.flatten(1), dim=1)  # [B]


def _round_down(eps: float, dtype: torch.dtype) -> float:
    """Largest value of `dtype` that is <= eps, so that comparisons in either precision hold."""
    e = torch.tensor(eps, dtype=dtype)  # cpu-ok: a Python float's rounding, read back with .item()
    if e.item() > eps:
        e = torch.nextafter(e, torch.zeros_like(e))
    return e.item()


def _random_start(x: Tensor, eps: float, linf: bool, seed) -> Tensor:
    if isinstance(seed, (list, tuple)):  # one seed per image
        if len(seed) != x.shape[0]:
            raise ValueError(f"Got {len(seed)} per-image seeds for {x.shape[0]} images.")
        return torch.cat([_random_start(x[i : i + 1], eps, linf, int(s)) for i, s in enumerate(seed)])
    generator = None
    if seed is not None:
        generator = torch.Generator(device=x.device)
        generator.manual_seed(seed)
    if linf:
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x + (2 * noise - 1) * eps
    # uniform in the L2 ball: Gaussian direction, radius eps * U^(1/n)
    direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    direction = direction / _norm(direction).clamp_min(1e-12).view(-1, 1, 1, 1)
    u = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
    radius = eps * u.pow(1.0 / x[0].numel())
    return x + direction * radius.view(-1, 1, 1, 1)


def _project(x_adv: Tensor, x: Tensor, eps: float, linf: bool) -> Tensor:
    """Project onto the eps-ball around x and onto [0, 1], exactly (no in-place op on x)."""
    if linf:
        x_adv = torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp(0, 1)
        # x ± eps is rounded and may overshoot by one ulp: step such pixels back towards x
        return torch.where((x_adv - x).abs() > eps, torch.nextafter(x_adv, x), x_adv)
    delta = x_adv - x
    factor = (eps * (1 - _L2_MARGIN) / _norm(delta).clamp_min(1e-12)).clamp(max=1)  # [B]
    return (x + delta * factor.view(-1, 1, 1, 1)).clamp(0, 1)
