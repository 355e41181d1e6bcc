"""Automatic warnings that a robustness number may be too optimistic, computed during the evaluation.

Every evaluated cell gets, per attack, a list of `flags` (empty when all is well) and the task's
primary metric at step checkpoints (`checkpoints`, iterates ⌊T/4⌋, ⌊T/2⌋, ⌊3T/4⌋ and T). The
checks reuse what the evaluation computes anyway (the loop's gradients and outputs, through
`attacks.base.observe_steps`); the only extra forwards are one repeated clean forward of the first
batch (`randomized`) and, for EmbedAttack (whose loop sees tokens, not task outputs), one forward
at ⌊3T/4⌋ (its only checkpoint besides T). In the spirit of AutoAttack's checks (Croce & Hein, ICML 2020), for all three tasks:

* `randomized`: two clean forward passes of the first batch differ (beyond float noise).
* `zero_gradient`: at the start point (the loop's first iterate), the share of units that the
  attack still has to break and whose loss gradient w.r.t. the input is exactly zero exceeds
  `ZERO_GRADIENT_MAX_SHARE`. Units: images for classification; labelled (valid) pixels for
  segmentation and depth. An image counts when its whole input gradient is zero; a segmentation
  pixel also when its cross-entropy is saturated (softmax exactly one-hot at the label: its output
  gradient, hence its input gradient, is exactly zero). Partial masking inside one image of a dense
  task (a clamp that freezes some output pixels only) is not seen: that would need a backward per pixel.
* `not_converged`: the damage grew over the last quarter of the steps (iterate ⌊3T/4⌋ to T) by
  more than `NOT_CONVERGED_SHARE` of the attack's total damage (clean to T) and by more than
  `NOT_CONVERGED_MIN` in metric units: more steps would give a lower robust number.
* `black_box_stronger`: a gradient-free attack (Square) beat the white-box attack on a seeded subset
  (the first `BLACK_BOX_SAMPLES` images of the split); the check itself is the `black_box` callable
  passed to `evaluate`. Attacks on the task's loss and the worst case are checked; EmbedAttack is not:
  it maximises an embedding distance without reading the labels, so Square (which reads them) beating
  it is expected at small ε and is no sign of masked gradients.

With `track_best` the checkpoint values use, per image, the most damaging iterate seen so far (as
the returned image is); iterates outside the threat model (SEA's progressive radius) are skipped.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .worst_case import per_image_damage, worst_predictions

FLAGS = {  # name -> (what it means, what to do)
    "randomized": ("two clean passes of the same images gave different outputs (training mode, dropout, "
                   "drop-path or random preprocessing)", "put the model in eval mode or remove the randomness; "
                   "for a randomised defence attack the expectation (EOT)"),
    "zero_gradient": ("the attack's loss gradient is exactly zero at its start on many images/pixels "
                      "(saturated softmax, clipped outputs, non-differentiable layers): gradient masking",
                      "check with a scale-invariant loss (APGD-DLR), Square (--attacks square) or a smoother model"),
    "not_converged": ("the attack was still gaining over its last quarter of steps: the robust number "
                      "is an overestimate", "rerun with more --steps (or APGD)"),
    "black_box_stronger": ("a gradient-free attack (Square) did more damage than this white-box attack on a "
                           "subset: a classic sign of gradient masking", "trust the Square / worst-case number, "
                           "investigate the gradients"),
}
MARKS = {"randomized": "R", "zero_gradient": "Z", "not_converged": "N", "black_box_stronger": "B"}
ZERO_GRADIENT_MAX_SHARE = 0.01  # healthy heads on the bundled encoder: 0 (README, "Automatic warnings")
NOT_CONVERGED_SHARE = 0.05  # of the total damage (clean -> T)
NOT_CONVERGED_MIN = 0.005  # metric units: accuracy, mIoU, metres
BLACK_BOX_SAMPLES = 16
RANDOMIZED_RTOL, RANDOMIZED_ATOL = 1e-3, 1e-5


def checkpoint_steps(steps: int) -> list[int]:
    """Iterates at which the metric is recorded: ⌊kT/4⌋ for k = 1..4, without 0 (T = 2: [1, 2])."""
    return sorted({k * steps // 4 for k in range(1, 5)} - {0})


def flag_marker(flags) -> str:
    """`["not_converged"]` -> `" ⚠N"` (empty string when there is no flag)."""
    marks = "".join(MARKS.get(f, "?") for f in flags or [])
    return f" ⚠{marks}" if marks else ""


def flag_legend(flags_seen) -> str:
    """One line per flag present: marker, meaning and what to do (Markdown list)."""
    lines = [f"- ⚠{MARKS[f]} `{f}`: {FLAGS[f][0]}. Do: {FLAGS[f][1]}." for f in FLAGS if f in set(flags_seen)]
    return "\n".join(lines)


def output_tensor(output) -> Tensor:
    """The tensor of a head's output (logits or depth)."""
    if isinstance(output, Tensor):
        return output
    value = getattr(output, "logits", None)
    return value if isinstance(value, Tensor) else output.predicted_depth


def not_converged(checkpoints: dict[int, float], steps: int, clean: float, higher_is_better: bool) -> bool:
    """Whether the damage grew over the last quarter of the steps by more than the thresholds."""
    last = 3 * steps // 4
    if last not in checkpoints or steps not in checkpoints:
        return False
    sign = 1.0 if higher_is_better else -1.0
    growth = sign * (checkpoints[last] - checkpoints[steps])
    total = sign * (clean - checkpoints[steps])
    return growth > NOT_CONVERGED_MIN and growth > NOT_CONVERGED_SHARE * max(total, 0.0)


class AttackMonitor:
    """What one attack of a cell records: zero-gradient counts and metric meters per checkpoint."""

    def __init__(self, task, spec, attack, predict_pixels: Callable[[Tensor], Tensor]) -> None:
        self.task, self.spec, self.attack, self.predict_pixels = task, spec, attack, predict_pixels
        self.steps = [c for c in checkpoint_steps(attack.steps) if c < attack.steps]
        if attack.surface == "encoder":  # each checkpoint costs a forward here: keep the one the flag needs
            self.steps = [c for c in self.steps if c == 3 * attack.steps // 4]
        self.meters = {c: task.make_meter(spec) for c in self.steps}
        self.zero, self.units = torch.zeros(()), torch.zeros(())

    def observer(self, target) -> _Run:
        """A per-run observer (one call of `attack.perturb`); its `preds` hold the checkpoint predictions."""
        return _Run(self, target)

    def count_zero(self, grad: Tensor, outputs: Tensor | None, target: Tensor) -> None:
        image_zero = grad.detach().flatten(1).abs().amax(1) == 0  # [B]
        name, target = self.task.name, target.to(grad.device)
        if name == "classification":
            live = torch.ones_like(image_zero) if outputs is None else outputs.argmax(1) == target
            zero, units = image_zero & live, image_zero.numel()
        elif name == "segmentation":
            ignore = self.spec.ignore_index
            labelled = target != ignore if ignore is not None else torch.ones_like(target, dtype=torch.bool)
            zero = image_zero.view(-1, 1, 1).expand_as(target)
            if outputs is not None:  # saturated cross-entropy: softmax exactly one-hot at the label
                probs = outputs.float().softmax(1)
                label = torch.where(labelled, target, 0).long().clamp(0, probs.shape[1] - 1)
                saturated = (probs.gather(1, label[:, None])[:, 0] == 1) & ((probs > 0).sum(1) == 1)
                zero = (zero | saturated) & (outputs.argmax(1) == target)
            zero, units = zero & labelled, labelled.sum()
        else:
            target = target.squeeze(1) if target.ndim == 4 else target
            valid = (target > 0) & (target <= float(self.spec.max_depth or 10.0))
            zero, units = image_zero.view(-1, 1, 1) & valid, valid.sum()
        self.zero = self.zero.to(grad.device) + zero.sum()
        self.units = self.units.to(grad.device) + units

    def update(self, preds: dict[int, Tensor], target, gather) -> None:
        for c, meter in self.meters.items():
            if c in preds:
                meter.update(preds[c], target, gather=gather)

    def checkpoint_values(self, final: float) -> dict[int, float]:
        metric = self.task.primary_metric
        values = {c: float(m.compute()[metric]) for c, m in self.meters.items() if m.num_samples}
        return {**values, self.attack.steps: final}

    def zero_share(self, reduce=None) -> float:
        zero, units = self.zero, self.units
        if reduce is not None:
            zero, units = reduce(zero.reshape(1)), reduce(units.reshape(1))
        return float(zero.sum()) / max(float(units.sum()), 1.0)


class _Run:
    """Observer of one loop run (`observe_steps`): counts zero gradients at the start point and keeps
    the predictions at the checkpoints (per image the most damaging so far with `track_best`)."""

    def __init__(self, monitor: AttackMonitor, target) -> None:
        self.m, self.target, self.preds = monitor, target, {}
        self.started, self.best, self.best_damage = False, None, None
        self.task_surface = monitor.attack.surface != "encoder"

    def _predict(self, outputs) -> Tensor:
        pred = self.m.task.predict(outputs.detach())
        return pred.float() if pred.is_floating_point() else pred

    def __call__(self, step: int, x_adv: Tensor, outputs, grad: Tensor, admissible: bool) -> None:
        m = self.m
        if step == 0 and not self.started:  # restarts call again from step 0: count the first start only
            self.started = True
            m.count_zero(grad, outputs.detach() if self.task_surface and isinstance(outputs, Tensor) else None, self.target)
        if not admissible:
            return
        if self.task_surface and m.attack.track_best:
            pred = self._predict(outputs)
            damage = per_image_damage(m.task.name, pred, self.target, m.spec)
            if self.best is None:
                self.best, self.best_damage = pred, damage
            else:
                better = damage > self.best_damage
                self.best = torch.where(better.view(-1, *[1] * (pred.ndim - 1)), pred, self.best)
                self.best_damage = torch.where(better, damage, self.best_damage)
            if step in m.steps:
                self.preds[step] = self.best
        elif step in m.steps:
            with torch.no_grad():
                self.preds[step] = self._predict(outputs) if self.task_surface else m.predict_pixels(x_adv.detach())


class CellDiagnostics:
    """All warnings of one evaluated cell (see module docstring); `evaluate` drives it batch by batch."""

    def __init__(self, task, spec, attacks: dict, predict_pixels, black_box=None, worst_case: bool = False) -> None:
        self.task, self.spec, self.black_box, self.worst_case = task, spec, black_box, worst_case
        self.monitors = {n: AttackMonitor(task, spec, a, predict_pixels) for n, a in attacks.items()}
        self.randomized = torch.zeros((), dtype=torch.bool)
        same_length = len({m.attack.steps for m in self.monitors.values()}) == 1
        common = set.intersection(*[set(m.steps) for m in self.monitors.values()]) if self.monitors else set()
        self.worst_steps = sorted(common) if worst_case and same_length else []
        self.worst_meters = {c: task.make_meter(spec) for c in self.worst_steps}
        self.subset: dict[str, list] = {}

    def compare_clean(self, first, second) -> None:
        """Record whether two clean forwards of the same images differ."""
        a, b = output_tensor(first).float(), output_tensor(second).float()
        differ = ~torch.isclose(a, b, rtol=RANDOMIZED_RTOL, atol=RANDOMIZED_ATOL).all()
        self.randomized = self.randomized.to(differ.device) | differ

    def update_batch(self, ckpt_preds: dict[str, dict[int, Tensor]], preds: dict, target, gather) -> None:
        """Feed a batch's checkpoint predictions (attack -> iterate -> predictions) to the meters."""
        for name, by_step in ckpt_preds.items():
            self.monitors[name].update(by_step, target, gather)
        for c, meter in self.worst_meters.items():
            if not all(c in ckpt_preds.get(n, {}) for n in self.monitors):
                continue  # an iterate outside the threat model (SEA's progressive radius) is not recorded
            pool = {"none": preds["none"], **{n: ckpt_preds[n][c] for n in self.monitors}}
            meter.update(worst_predictions(self.task.name, pool, target, self.spec)[0], target, gather=gather)

    def collect(self, pixels: Tensor, target, preds: dict, groups) -> None:
        """Keep the first `BLACK_BOX_SAMPLES` images (of the first image size seen) for the black-box check."""
        if self.black_box is None:
            return
        have = len(self.subset.get("pixels", []))
        idx, hw = groups[0]
        if have >= BLACK_BOX_SAMPLES or (have and tuple(self.subset["pixels"][0].shape[-2:]) != tuple(hw)):
            return
        rows = (idx if idx is not None else torch.arange(pixels.shape[0], device=pixels.device))[: BLACK_BOX_SAMPLES - have]
        crop = (lambda t: t[rows.to(t.device)][..., : hw[0], : hw[1]] if t.ndim >= 3 else t[rows.to(t.device)])
        for key, value in [("pixels", pixels), ("target", target), *[(n, p) for n, p in preds.items() if not n.startswith("adv/")]]:
            self.subset.setdefault(key, []).extend(crop(value).unbind(0))

    def finish(self, results: dict, model, reduce=None) -> None:
        """Add `flags` and `checkpoints` to every entry of `results` (name -> metrics)."""
        metric, higher = self.task.primary_metric, self.task.higher_is_better
        randomized = bool(reduce(self.randomized.long().reshape(1)).sum()) if reduce else bool(self.randomized)
        clean = results["none"][metric]
        stronger = self._black_box(model, reduce)
        zero_flags = {}
        for name, mon in self.monitors.items():
            ckpts = mon.checkpoint_values(results[name][metric])
            flags, share = ["randomized"] if randomized else [], mon.zero_share(reduce)
            zero_flags[name] = share > ZERO_GRADIENT_MAX_SHARE
            flags += ["zero_gradient"] if zero_flags[name] else []
            flags += ["not_converged"] if not_converged(ckpts, mon.attack.steps, clean, higher) else []
            flags += ["black_box_stronger"] if stronger.get(name) else []
            results[name].update(flags=flags, checkpoints={str(c): v for c, v in sorted(ckpts.items())},
                                 zero_gradient_share=share)
        results["none"].update(flags=["randomized"] if randomized else [], checkpoints={})
        if "worst" in results:  # zero gradient only if every attack had it; convergence from its own checkpoints
            steps = next(iter(self.monitors.values())).attack.steps if self.monitors else 0
            ckpts = {c: float(m.compute()[metric]) for c, m in self.worst_meters.items() if m.num_samples}
            ckpts = {**ckpts, steps: results["worst"][metric]} if self.worst_meters else {}
            flags = ["randomized"] if randomized else []
            flags += ["zero_gradient"] if zero_flags and all(zero_flags.values()) else []
            flags += ["not_converged"] if ckpts and not_converged(ckpts, steps, clean, higher) else []
            flags += ["black_box_stronger"] if stronger.get("worst") else []
            results["worst"].update(flags=flags, checkpoints={str(c): v for c, v in sorted(ckpts.items())})

    def _black_box(self, model, reduce) -> dict[str, bool]:
        if self.black_box is None:
            return {}
        # White-box attacks on the task's loss only. Square is the reference, never compared with itself;
        # an attack on the embedding (EmbedAttack) never reads the labels, so a label-aware Square beating
        # it says nothing about its gradients (it is still checked for zero gradients and convergence).
        names = [n for n, m in self.monitors.items() if not n.startswith("square") and m.attack.surface == "task"]
        names += ["worst"] if self.worst_case else []
        out = {}
        for name in names:
            found = False
            if self.subset.get("pixels"):
                stack = lambda key: torch.stack(self.subset[key])  # noqa: E731
                found = bool(self.black_box(model, stack("pixels"), stack("target"), stack(name)))
            if reduce is not None:  # any process that saw Square win flags the cell
                found = bool(reduce(torch.tensor([int(found)], device=self.randomized.device)).sum())
            out[name] = found
        return out
