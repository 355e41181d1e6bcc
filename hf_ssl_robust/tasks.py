"""The three downstream tasks: what each head reads, predicts, is scored by and attacked with.

Only this module knows that segmentation predicts an argmax over classes or that depth is
scored by RMSE; training and the benchmark loop are task-agnostic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from .metrics.functional import AccuracyMeter, DepthMeter, MeanIoUMeter


@dataclass(frozen=True)
class Task:
    """A downstream task.

    Attributes:
        name: `classification`, `segmentation` or `depth`.
        target_key: the batch key of its target (`labels`, `mask`, `depth`).
        task_attack: the attack on the task model (`pgd`, `segpgd`, `depth_pgd`).
        embed_tokens, embed_pre_norm: the tokens its head reads, which EmbedAttack targets.
        primary_metric: the metric of the paper's table; `higher_is_better` says its direction.
    """

    name: str
    target_key: str
    task_attack: str
    embed_tokens: str
    embed_pre_norm: bool
    primary_metric: str
    higher_is_better: bool
    predict: Callable[[Any], Tensor]

    @property
    def head_class(self):
        from .heads import HEADS

        return HEADS[self.name]

    def head_kwargs(self, spec, image_size: int, window_stride: int | None = None) -> dict:
        """Head config fields that come from the dataset spec (and the sizes table's window stride)."""
        kwargs: dict[str, Any] = {"image_size": image_size}
        if self.name == "classification":
            kwargs["num_labels"] = spec.num_classes
        elif self.name == "segmentation":
            kwargs.update(num_labels=spec.num_classes, ignore_index=spec.ignore_index, window_size=image_size)
            if window_stride is not None:
                kwargs["window_stride"] = window_stride
        else:
            kwargs["max_depth"] = float(spec.max_depth or 10.0)
        if spec.class_names and self.name != "depth":
            kwargs["id2label"] = dict(enumerate(spec.class_names))
        return kwargs

    def make_meter(self, spec):
        """A streaming meter of this task's metrics for one evaluation pass."""
        if self.name == "classification":
            return AccuracyMeter()
        if self.name == "segmentation":
            return MeanIoUMeter(num_labels=spec.num_classes, ignore_index=spec.ignore_index)
        return DepthMeter(max_depth=float(spec.max_depth or 10.0))

    def attacks(self, requested: list[str], spec=None) -> list[str]:
        """The requested attacks that apply to this task (`embed`, `apgd` and `square` to every task; see
        `attack_suites`); with the dataset `spec`, `strong` adds APGD-T where the dataset has >= 10 classes."""
        from .attack_suites import attacks_for_task

        return attacks_for_task(requested, self.name, getattr(spec, "num_classes", None))

    def attack_kwargs(self, attack: str, spec) -> dict:
        """Task-specific attack settings: which tokens EmbedAttack targets, ignore index, max depth."""
        if attack == "embed":  # the head's `read_tokens` decides which tokens; kept for bare encoders
            return {"tokens": self.embed_tokens, "pre_norm": self.embed_pre_norm}
        if attack == "segpgd":
            return {"ignore_index": spec.ignore_index}
        if attack == "depth_pgd":
            return {"max_depth": float(spec.max_depth or 10.0)}
        return {}


def _argmax_logits(output) -> Tensor:
    return _unwrap(output, "logits").argmax(dim=1)


def _depth(output) -> Tensor:
    return _unwrap(output, "predicted_depth")


def _unwrap(output, key: str) -> Tensor:
    return output if isinstance(output, Tensor) else getattr(output, key)


TASKS: dict[str, Task] = {
    "classification": Task("classification", "labels", "pgd", "cls", False, "accuracy", True, _argmax_logits),
    "segmentation": Task("segmentation", "mask", "segpgd", "patch", False, "mean_iou", True, _argmax_logits),
    "depth": Task("depth", "depth", "depth_pgd", "patch", True, "rmse", False, _depth),
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        from .configs import check_task

        check_task(name)  # raises the error (torch-free, for the configs)
    return TASKS[name]
