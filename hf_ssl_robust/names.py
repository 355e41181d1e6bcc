"""Torch-free copies of the registry names the command line checks (attacks, losses, norms).

The config dataclasses (`configs.py`) validate `--attacks apgd:dlr`, `--norm` and the like before any
work; importing the real registries (`attacks/`, `attacks/objectives.py`) would import torch, which
costs seconds for a `--help` or a typo. `tests/test_cli_fast.py` checks that these copies equal the
real registries, so a new attack or loss that is missing here fails a test, not a run.
"""

from __future__ import annotations

# Registry name -> (surface, task): `surface` "encoder" attacks apply to every task; a "task" attack
# expects that task's model (None: any task, with a per-task loss). Order: `attacks.ATTACKS`'.
ATTACK_KINDS: dict[str, tuple[str, str | None]] = {
    "pgd": ("task", "classification"),
    "apgd": ("task", None),
    "apgd_t": ("task", "classification"),
    "depth_pgd": ("task", "depth"),
    "embed": ("encoder", None),
    "segpgd": ("task", "segmentation"),
    "square": ("task", None),
}
# Objectives per task, as `attacks.objectives.LOSSES` registers them.
LOSS_NAMES: dict[str, tuple[str, ...]] = {
    "classification": ("ce", "dlr", "margin"),
    "segmentation": ("masked_ce", "balanced_masked_ce", "js", "masked_spherical", "pixel_margin", "segpgd"),
    "depth": ("depth", "depth_tol"),
}
DEFAULT_LOSS: dict[str, str] = {"classification": "ce", "segmentation": "masked_ce", "depth": "depth"}
NORMS: tuple[str, ...] = ("linf", "l2")


def loss_task(name: str) -> str:
    """The task whose outputs objective `name` expects; `ValueError` listing the losses if unknown
    (the message of `attacks.objectives.loss_task`)."""
    for task, losses in LOSS_NAMES.items():
        if name in losses:
            return task
    known = "; ".join(f"{t}: {', '.join(ls)}" for t, ls in LOSS_NAMES.items())
    raise ValueError(f"Unknown attack loss {name!r}; available per task: {known}.")
