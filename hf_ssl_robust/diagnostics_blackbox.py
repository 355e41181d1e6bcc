"""`black_box_stronger`: does a gradient-free attack hurt images more than the white-box attack did?

A white-box attack follows the gradient; where the gradient is masked (a saturated softmax, clipped
outputs, a non-differentiable layer) it stalls while the model is still fragile. Square Attack
(`attacks/square.py`) reads only outputs, so when it beats the white-box attack on the same images
the white-box number overstates robustness: AutoAttack's "black-box stronger" warning, here for
classification, segmentation and depth alike.

The check runs Square on a seeded subset of a cell's images (`blackbox_subset`: the same images
whatever the batching) and compares, per image, the damage of Square's adversarial prediction with
the damage of the white-box attack's (`prediction_damage`, from predictions the evaluation makes
anyway):

* classification: Square is stronger on an image iff the white-box attack left it correctly
  classified and Square misclassifies it (0/1 error: no margin needed, the decision is exact);
* segmentation: iff Square's pixel error rate exceeds the white-box one by more than
  `SEG_MARGIN` = 0.02 (2 % of the image's labelled pixels: a handful of boundary pixels flipping
  either way is not evidence);
* depth: iff Square's RMSE exceeds the white-box one by more than `DEPTH_MARGIN` = 5 % (relative).

The cell is flagged when the share of subset images on which Square is stronger exceeds `MIN_SHARE`
= 0.1 and at least `MIN_IMAGES` = 2 images (see the measurement in README: a gradient attack that
works leaves Square ahead on no image or very few; a masked gradient leaves it ahead on most of them).

    >>> idx = blackbox_subset(len(dataset), size=32, seed=0)        # which images to check
    >>> white = prediction_damage("classification", pgd_preds, labels)           # [n]
    >>> check = black_box_stronger(head, "classification", pixels, labels, white, eps=8 / 255, queries=1000, seeds=idx)
    >>> check.flagged, check.share, check.as_dict()
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .attack_suites import SQUARE_LOSS
from .attacks import make_attack
from .attacks.base import frozen
from .attacks.objectives import task_outputs

SEG_MARGIN = 0.02  # absolute pixel error rate
DEPTH_MARGIN = 0.05  # relative RMSE
MIN_SHARE = 0.1
MIN_IMAGES = 2
TASKS = tuple(SQUARE_LOSS)


def blackbox_subset(num_images: int, size: int = 32, seed: int = 0) -> list[int]:
    """`min(size, num_images)` image indices of a split, drawn with `seed`, sorted (same for any batching)."""
    if num_images < 0 or size < 0:
        raise ValueError(f"num_images and size must be >= 0, got {num_images} and {size}.")
    perm = torch.randperm(num_images, generator=torch.Generator().manual_seed(seed))
    return sorted(perm[: min(size, num_images)].tolist())


def prediction_damage(task: str, pred: Tensor, target: Tensor, ignore_index: int = 255, max_depth: float = 10.0) -> Tensor:
    """Per-image damage `[B]` of a prediction (larger = more hurt), as the evaluation predicts.

    classification: `pred` labels `[B]` → 1.0 if wrong; segmentation: `pred` labels `[B, H, W]` → error
    rate over labelled pixels; depth: `pred` metres `[B, H, W]` → RMSE over `0 < target <= max_depth`
    (NaN for an image without valid pixels; never counted as stronger).
    """
    _check_task(task)
    if task == "classification":
        return (pred != target).float()
    if task == "segmentation":
        valid = target != ignore_index
        wrong = (pred != target) & valid
        return wrong.flatten(1).sum(1).float() / valid.flatten(1).sum(1).clamp_min(1).float()
    target = target.squeeze(1) if target.ndim == 4 else target
    pred = pred.squeeze(1) if pred.ndim == 4 else pred
    valid = (target > 0) & (target <= max_depth)
    sq = torch.where(valid, (pred.float() - target.float()).square(), torch.zeros((), device=pred.device))
    n = valid.flatten(1).sum(1).float()
    return (sq.flatten(1).sum(1) / n).sqrt()  # NaN where n == 0


def stronger_per_image(task: str, square: Tensor, white_box: Tensor) -> Tensor:
    """`[B]` bool: Square more damaging than the white-box attack on the image (module docstring's margins)."""
    _check_task(task)
    if task == "classification":
        return (white_box <= 0) & (square > 0)
    if task == "segmentation":
        return square > white_box + SEG_MARGIN
    return square > white_box * (1 + DEPTH_MARGIN)  # NaN compares False


def blackbox_flag(stronger: Tensor) -> bool:
    """The cell's verdict from the per-image `stronger` of its whole subset (concatenate the batches' first):
    Square stronger on more than `MIN_SHARE` of the images and on at least `MIN_IMAGES` of them."""
    count, n = int(stronger.sum()), stronger.numel()
    return n > 0 and count / n > MIN_SHARE and count >= MIN_IMAGES


@dataclass
class BlackBoxCheck:
    """The outcome of `black_box_stronger` on one cell's subset (all tensors on the CPU).

    Attributes:
        flagged: whether the cell gets the `black_box_stronger` flag.
        stronger: `[n]` bool, Square more damaging than the white-box attack on the image.
        share: `stronger.mean()` (0 for an empty subset).
        square_damage, white_box_damage: `[n]` per-image damage (`prediction_damage`).
        queries: Square's query budget per image; square_pixels: `[n, 3, H, W]` Square's adversarial images.
    """

    flagged: bool
    stronger: Tensor
    share: float
    square_damage: Tensor
    white_box_damage: Tensor
    queries: int
    square_pixels: Tensor

    def as_dict(self) -> dict:
        """JSON-ready summary for a record: flag, share, images, queries, mean damages."""
        mean = lambda t: float(t.nanmean()) if t.numel() else float("nan")  # noqa: E731
        return {"black_box_stronger": self.flagged, "share": self.share, "images": int(self.stronger.numel()),
                "queries": self.queries, "square_damage": mean(self.square_damage), "white_box_damage": mean(self.white_box_damage)}


@torch.no_grad()
def black_box_stronger(
    model,
    task: str,
    pixels: Tensor,
    target: Tensor,
    white_box_damage: Tensor | Mapping[str, Tensor],
    *,
    eps: float,
    norm: str = "linf",
    queries: int = 1000,
    seeds: int | Sequence[int] | None = 0,
    ignore_index: int = 255,
    max_depth: float = 10.0,
    p_init: float | None = None,
) -> BlackBoxCheck:
    """Run Square on `pixels` and say whether it is more damaging than the white-box attack was.

    Args:
        model: the task model the white-box attack ran on (a head with its encoder): pixels
            `[n, 3, H, W]` in [0, 1] → logits `[n, K]`, segmentation logits `[n, C, H, W]` or depth
            `[n, H, W]` (HF outputs accepted). Left exactly as it was (mode, parameters, grads).
        task: `classification`, `segmentation` or `depth`.
        pixels, target: the subset's clean images and their labels / masks / depth maps.
        white_box_damage: `[n]` per-image damage of the white-box attack's adversarial predictions
            on these images (`prediction_damage`), same order; or a mapping attack name -> `[n]` to
            compare several attacks of the cell with one Square run.
        eps, norm: the cell's threat model (Square runs in the same ball).
        queries: Square's budget per image (forward passes after the start point).
        seeds: per-image seeds (e.g. the images' split indices: then batch-independent), or one int.
        ignore_index, max_depth: the dataset's (segmentation ignore label; depth validity).
        p_init: Square's first window fraction (None: the attack's default).

    Returns:
        `BlackBoxCheck` (a dict name -> `BlackBoxCheck` for a mapping); `flagged` iff Square is
        stronger on more than `MIN_SHARE` of the images and on at least `MIN_IMAGES` of them.
    """
    _check_task(task)
    n = pixels.shape[0] if pixels.ndim == 4 else -1
    damages = dict(white_box_damage) if isinstance(white_box_damage, Mapping) else {None: white_box_damage}
    for name, dmg in damages.items():
        if not isinstance(dmg, Tensor) or dmg.shape != (n,):
            got = tuple(dmg.shape) if isinstance(dmg, Tensor) else type(dmg).__name__
            raise ValueError(f"white_box_damage{'' if name is None else f'[{name!r}]'} must hold one value per image, shape ({n},), "
                             f"got {got}; compute it with prediction_damage(task, white_box_predictions, target).")
    if isinstance(queries, bool) or not isinstance(queries, int) or queries < 1:
        raise ValueError(f"queries must be an int >= 1 (Square's budget per image), got {queries!r}.")
    kwargs = {"ignore_index": ignore_index} if task == "segmentation" else {"max_depth": max_depth} if task == "depth" else {}
    if p_init is not None:
        kwargs["p_init"] = p_init
    seed = tuple(int(s) for s in seeds) if isinstance(seeds, (list, tuple, Tensor)) else seeds
    attack = make_attack("square", loss=SQUARE_LOSS[task], eps=eps, norm=norm, steps=queries, seed=seed, **kwargs)
    adv = attack.perturb(model, pixels, target).pixels
    with frozen(model):
        out = task_outputs(task, model(adv))
    pred = out.argmax(1) if task != "depth" else out
    square = prediction_damage(task, pred, target, ignore_index, max_depth).cpu()
    checks = {}
    for name, dmg in damages.items():
        white = dmg.detach().float().cpu()
        stronger = stronger_per_image(task, square, white)
        count = int(stronger.sum())
        share = count / n if n else 0.0
        checks[name] = BlackBoxCheck(flagged=blackbox_flag(stronger), stronger=stronger, share=share,
                                     square_damage=square, white_box_damage=white, queries=queries, square_pixels=adv.cpu())
    return checks if isinstance(white_box_damage, Mapping) else checks[None]


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}.")


def square_hook(task: str, *, eps: float, norm: str = "linf", queries: int = 1000, seed: int = 0,
                ignore_index: int = 255, max_depth: float = 10.0):
    """The `black_box` callable of `evaluate` (`black_box(model, pixels, target, adv_pred) -> bool`) for
    one cell: Square runs once on the cell's subset and each attack (and the worst case) is compared
    with that one run, instead of a Square run per attack."""
    runs: dict[tuple, Tensor] = {}

    def check(model, pixels: Tensor, target: Tensor, adv_pred: Tensor) -> bool:
        white = prediction_damage(task, adv_pred, target, ignore_index, max_depth)
        key = (tuple(pixels.shape), float(pixels.double().sum()), float(target.double().sum()))
        if key not in runs:
            result = black_box_stronger(model, task, pixels, target, white, eps=eps, norm=norm, queries=queries, seeds=seed,
                                        ignore_index=ignore_index, max_depth=max_depth)
            runs[key] = result.square_damage
        return blackbox_flag(stronger_per_image(task, runs[key].to(white.device), white))

    return check
