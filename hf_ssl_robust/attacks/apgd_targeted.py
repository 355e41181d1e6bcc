"""APGD-T: targeted APGD on the targeted DLR loss, restarted over the runner-up classes (AutoAttack's).

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks" (ICML 2020), https://arxiv.org/abs/2003.01690, Sec. 4 and Eq. 6: for a
target class t, maximise the targeted DLR loss

    −(z_y − z_t) / (z_π1 − (z_π3 + z_π4) / 2 + 1e-12)        (π sorts the logits, decreasing)

with APGD's policy (`apgd.py`); AutoAttack runs it for the 9 classes ranked 2nd to 10th by the
clean logits of each image, one run per target class. Classification only, with at least 4
classes (the loss reads z_π4); `target_classes` is capped at K − 1.

Runs and the returned image: target rank k = 1, 2, ... (1 = the image's clean runner-up), and for each
`restarts` random starts (seeds `seed + run`); every image keeps its most damaging iterate over
all runs (the untargeted margin `max_{i≠y} z_i − z_y`, as APGD), and an image already misclassified
is not attacked again (AutoAttack's order). Cost: up to `target_classes · restarts · steps`
forward+backward passes per image, plus one clean forward. `losses` `[steps]`: per step, the mean over
the runs of each run's batch-mean targeted DLR.

Example:
    >>> adv = make_attack("apgd_t", eps=8 / 255, steps=100, seed=0).perturb(classifier, pixels, labels).pixels
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from . import objectives
from .apgd import APGD
from .base import AttackResult, frozen, projected_gradient_ascent, register_attack


def targeted_dlr(logits: Tensor, labels: Tensor, targets: Tensor) -> Tensor:
    """AutoAttack's targeted DLR loss `[B]` (module docstring); needs K >= 4."""
    if logits.shape[1] < 4:
        raise ValueError(f"The targeted DLR loss needs at least 4 classes (it reads z_π4), got {logits.shape[1]}.")
    top = logits.float().sort(dim=1, descending=True).values
    z = logits.float()
    z_y, z_t = z.gather(1, labels[:, None])[:, 0], z.gather(1, targets[:, None])[:, 0]
    return -(z_y - z_t) / (top[:, 0] - (top[:, 2] + top[:, 3]) / 2 + 1e-12)


@register_attack("apgd_t")
@dataclass
class APGDT(APGD):
    """Targeted APGD (module docstring). `loss` must stay `dlr` (its targeted form is what is ascended).

    Args:
        target_classes: how many runner-up classes to target (AutoAttack: 9), capped at K − 1.
        target_rank: the class rank one run targets (set by `perturb`; 1 = the clean runner-up).
    """

    loss: str = "dlr"
    target_classes: int = 9
    target_rank: int = 1

    task: ClassVar[str | None] = "classification"

    def validate(self) -> None:
        super().validate()
        if self.loss != "dlr":
            raise ValueError(f"apgd_t ascends the targeted DLR loss: loss must be 'dlr', got {self.loss!r}.")
        for name in ("target_classes", "target_rank"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}.")

    def prepare_target(self, model: Any, pixels: Tensor, target: Any) -> tuple[Tensor, Tensor]:
        """`(labels, target classes)`; given plain labels, the target is the clean class of rank `target_rank`."""
        if isinstance(target, tuple):
            return target[0].long(), target[1].long()
        labels = super().prepare_target(model, pixels, target)
        with torch.no_grad():
            order = self.forward(model, pixels).sort(dim=1, descending=True).indices
        return labels, order[:, min(self.target_rank, order.shape[1] - 1)]

    def objective(self, outputs: Tensor, target: tuple[Tensor, Tensor], step: int) -> Tensor:
        objectives.check_shapes("classification", outputs, target[0], "apgd_t (targeted dlr)")
        return targeted_dlr(outputs, *target)

    def score(self, outputs: Tensor, target: tuple[Tensor, Tensor]) -> Tensor:
        objectives.check_shapes("classification", outputs, target[0], "apgd_t (targeted dlr)")
        return objectives.damage("classification", outputs, target[0], self)

    def perturb(self, model: Any, pixels: Tensor, target: Any = None) -> AttackResult:
        """Attack `pixels`: one APGD run per (target rank, restart); per image the most damaging result."""
        self.validate()
        if torch.is_inference_mode_enabled():  # the targets enter autograd (gather): no inference tensors
            with torch.inference_mode(False):
                return self.perturb(model, pixels.clone(), target.clone() if isinstance(target, Tensor) else target)
        if self.eps == 0 or target is None:  # identity, or the base's "needs a target" error
            return projected_gradient_ascent(self, model, pixels, target)
        labels = target.long()
        with frozen(model), torch.no_grad():
            order = self.forward(model, pixels).sort(dim=1, descending=True).indices  # [B, K]
        if order.shape[1] < 4:
            raise ValueError(f"apgd_t needs at least 4 classes (the targeted DLR loss reads z_π4), got {order.shape[1]}.")
        ranks = range(1, min(self.target_classes, order.shape[1] - 1) + 1)
        best, todo, run, losses = None, torch.arange(len(pixels), device=pixels.device), 0, []
        for rank in ranks:
            for r in range(self.restarts):
                seed = self._seed(run, todo)
                one = dataclasses.replace(self, restarts=1, seed=seed, target_rank=rank)
                res = projected_gradient_ascent(one, model, pixels[todo], (labels[todo], order[todo, rank]))
                run += 1
                losses.append(res.losses)
                if best is None:
                    best = res
                else:
                    better = res.scores > best.scores[todo]
                    keep = todo[better]
                    pixels_, scores_ = best.pixels.clone(), best.scores.clone()
                    pixels_[keep], scores_[keep] = res.pixels[better], res.scores[better]
                    best = AttackResult(pixels=pixels_, losses=best.losses, scores=scores_)
                todo = (best.scores <= 0).nonzero()[:, 0]  # still correctly classified
                if todo.numel() == 0:
                    break
            if todo.numel() == 0:
                break
        best.losses = torch.stack(losses).mean(0)  # [steps]: per step, the mean over runs of each run's batch mean
        return best

    def _seed(self, run: int, todo: Tensor):
        if self.seed is None:
            return None
        if isinstance(self.seed, (list, tuple)):
            return tuple(int(self.seed[i]) + run for i in todo.tolist())
        return self.seed + run
