"""Attack names as the benchmark takes them: registry names, `apgd` / `apgd:LOSS`, and suites.

* A registry name (`embed`, `pgd`, `segpgd`, `depth_pgd`) applies to the tasks it fits, `embed` to all.
* `apgd` applies to every task with that task's default loss (classification `ce`, segmentation
  `masked_ce`, depth `depth`); `apgd:LOSS` applies to the task of LOSS only (`apgd:dlr`,
  `apgd:js`, ...). Results name APGD rows `apgd:LOSS`, so every row says which loss it used.
* `square` (Square Attack, gradient-free) applies to every task, accepting its updates on that task's
  `SQUARE_LOSS`; `square:LOSS` picks another objective of one task. `steps` is its query budget.
* `apgd_t` (targeted APGD, AutoAttack's) applies to classification.
* `strong` expands, per task, to the paper's task attack + EmbedAttack + APGD with every loss of
  `STRONG_LOSSES` (+ `apgd_t` for classification when the dataset has at least `APGD_T_MIN_CLASSES`
  classes, as AutoAttack), and turns on the per-image worst case.

    >>> expand_attacks(["strong"])[:4]
    ['embed', 'pgd', 'segpgd', 'depth_pgd']
    >>> attacks_for_task(["embed", "apgd", "apgd:dlr"], "classification")
    ['embed', 'apgd:ce', 'apgd:dlr']
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# torch-free copies of the registry names (checked against the registries by tests/test_cli_fast.py): the config
# checks `--attacks` with them before anything imports torch; `build_attack` imports the attacks themselves
from .names import ATTACK_KINDS as ATTACKS
from .names import DEFAULT_LOSS, loss_task
from .names import LOSS_NAMES as LOSSES

if TYPE_CHECKING:
    from .attacks import Attack

STRONG_LOSSES = {
    "classification": ["ce", "dlr"],  # AutoAttack's two untargeted APGD losses (APGD-T below)
    "segmentation": ["masked_ce", "balanced_masked_ce", "js", "masked_spherical"],  # SEA's four
    "depth": ["depth", "depth_tol"],
}
APGD_T_MIN_CLASSES = 10  # AutoAttack targets the 9 runner-up classes
SUITES = {"strong": ["embed", "pgd", "segpgd", "depth_pgd"] + [f"apgd:{loss}" for losses in STRONG_LOSSES.values() for loss in losses]
          + ["apgd_t"]}
SQUARE_LOSS = {"classification": "margin", "segmentation": "pixel_margin", "depth": "depth"}  # Square's objective per task
LOSS_ATTACKS = ("apgd", "square")  # the attacks that take `:LOSS`
WORST = "worst"  # the name of the per-image worst-case row


def expand_attacks(requested: list[str], num_classes: int | None = None) -> list[str]:
    """Suites replaced by their members (order kept, duplicates dropped); every name checked.

    A suite brings `apgd_t` only when `num_classes` (the dataset's) is known and at least
    `APGD_T_MIN_CLASSES`; asked for by name, it is always kept."""
    out: list[str] = []
    for spec in requested:
        for name in SUITES.get(spec, [spec]):
            _check(name)
            if spec in SUITES and name == "apgd_t" and (num_classes is None or num_classes < APGD_T_MIN_CLASSES):
                continue
            if name not in out:
                out.append(name)
    return out


def _check(spec: str) -> None:
    base, colon, loss = spec.partition(":")
    if base not in ATTACKS:
        from .suggestions import did_you_mean

        raise ValueError(f"Unknown attack {spec!r}{did_you_mean(spec, [*ATTACKS, *SUITES])}; available: {sorted(ATTACKS)}, apgd:LOSS and the suites {sorted(SUITES)}.")
    if colon and base not in LOSS_ATTACKS:
        raise ValueError(f"Only {' and '.join(LOSS_ATTACKS)} take a loss (apgd:LOSS, square:LOSS), got {spec!r}.")
    if colon:
        loss_task(loss)  # unknown loss: the error lists the losses per task


def attack_task(spec: str, task: str) -> str | None:
    """The name `spec` runs under for `task` (`apgd` -> `apgd:<default loss>`), or None if it does not apply."""
    base, _, loss = spec.partition(":")
    if base == "apgd":
        loss = loss or DEFAULT_LOSS[task]
        return f"apgd:{loss}" if loss_task(loss) == task else None
    if base == "square":  # every task; `square` uses the task's SQUARE_LOSS
        return spec if not loss or loss_task(loss) == task else None
    surface, attack_task_name = ATTACKS[base]
    if surface == "encoder" or attack_task_name == task:
        return spec
    return None


def attacks_for_task(requested: list[str], task: str, num_classes: int | None = None) -> list[str]:
    """The attacks of `requested` (suites expanded; `num_classes`: see `expand_attacks`) that apply to
    `task`, under their result names."""
    names = [attack_task(spec, task) for spec in expand_attacks(requested, num_classes if task == "classification" else None)]
    return list(dict.fromkeys(n for n in names if n is not None))


def check_plan(requested: list[str], tasks: list[str], worst_case: bool, progressive: bool = False) -> dict[str, list[str]]:
    """Validate a benchmark's attacks before any work; returns the attacks per task.

    Raises `ValueError` when an `apgd:LOSS` fits none of `tasks`, `worst_case` is asked for a
    task with fewer than two attacks (a worst case over one attack is that attack), or
    `progressive` is asked for with no segmentation APGD attack to apply it to.
    """
    plan = {task: attacks_for_task(requested, task) for task in tasks}
    for spec in requested:  # asked for by name (a suite's members may target tasks that are not run)
        base, _, loss = spec.partition(":")
        if spec not in SUITES and base in LOSS_ATTACKS and loss and loss_task(loss) not in tasks:
            raise ValueError(f"Attack {spec!r} is a {loss_task(loss)} loss but the tasks are {tasks}; "
                             f"losses for them: {'; '.join(f'{t}: {list(LOSSES[t])}' for t in tasks)}.")
    if worst_case:
        few = {task: names for task, names in plan.items() if len(names) < 2}
        if few:
            raise ValueError(f"--worst_case takes, per image, the most damaging of several attacks, but {few} "
                             f"has fewer than two; add attacks (e.g. --attacks embed apgd ...) or use --attacks strong.")
    if progressive and not any(n.startswith("apgd") for n in plan.get("segmentation", [])):
        raise ValueError("--progressive is SEA's radius schedule for segmentation APGD attacks, but none is run; add "
                         "--tasks segmentation and --attacks apgd (or apgd:masked_ce, apgd:js, strong), or drop --progressive.")
    return plan


def build_attack(name: str, task, spec, progressive: bool = False, square_queries: int | None = None, **common) -> Attack:
    """`make_attack` for a result name of `attacks_for_task`, with the task's and dataset's settings.

    APGD always keeps each image's most damaging iterate (`track_best=True`). `progressive` turns on
    SEA's progressive radius for the segmentation APGD attacks (SEA defines it for segmentation only).
    `square_queries` replaces `steps` for Square (its query budget; gradient attacks keep `steps`).
    APGD-T targets min(9, K − 1) classes of the dataset's K.
    """
    from .attacks import make_attack

    base, _, loss = name.partition(":")
    if base not in ("apgd", "square", "apgd_t"):
        return make_attack(base, **common, **task.attack_kwargs(base, spec))
    extra = {"ignore_index": spec.ignore_index} if task.name == "segmentation" else {}
    if task.name == "depth":
        extra["max_depth"] = float(spec.max_depth or 10.0)
    if base == "square":
        budget = {"steps": square_queries} if square_queries is not None else {}
        return make_attack("square", **{**common, "track_best": True, **budget}, loss=loss or SQUARE_LOSS[task.name], **extra)
    if base == "apgd_t":
        classes = getattr(spec, "num_classes", None)
        extra = {"target_classes": min(9, classes - 1)} if classes and classes >= 2 else {}
        return make_attack("apgd_t", **{**common, "track_best": True}, **extra)
    if task.name == "segmentation":
        extra["progressive"] = progressive
    return make_attack("apgd", **{**common, "track_best": True}, loss=loss, **extra)
