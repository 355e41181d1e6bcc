"""Run configs of the command line: `BenchmarkConfig`, `TrainHeadConfig`, `DeACLConfig`, torch-free.

Each config checks its fields in `__post_init__` (unknown names with a did-you-mean, ε strings, ranges)
without importing torch or transformers: `hf-ssl-robust COMMAND --help` and a typo answer at once, and
the modules that run them (`benchmark.py`, `training.py`, `defenses/deacl.py`) re-export them. Registry
names come from torch-free places (`data/registry.py`, `names.py`); `--dataset_name` and `--revision`
checks load what they need when they are given.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from .attack_suites import SUITES, check_plan
from .data.custom import DatasetArgs, add_custom_dataset, revision_problems
from .data.registry import DATASETS, TASKS
from .suggestions import did_you_mean

__all__ = ["BenchmarkConfig", "DeACLConfig", "PAPER_PRESETS", "PRECISIONS", "TrainHeadConfig", "ATTACK_ON", "OBJECTIVES", "check_mixed_precision",
           "check_num_workers", "check_task", "parse_eps"]

PRECISIONS = ("no", "bf16", "fp16")


def parse_eps(value: str | float | int, norm: str = "linf") -> float:
    """Parse an ε given as `8/255`, `0.0314` or `0` (never `eval`). L-inf radii lie in [0, 1];
    L2 radii may exceed 1 (ImageNet-scale L2 attacks use 0.5 to 3 and more)."""
    if isinstance(value, (int, float)):
        eps = float(value)
    else:
        try:
            eps = float(Fraction(str(value).strip()))
        except (ValueError, ZeroDivisionError) as err:
            raise ValueError(f"Cannot read eps {value!r}: write it as a fraction like 8/255 or a number like 0.03.") from err
    if math.isnan(eps) or eps < 0:
        raise ValueError(f"eps={value!r} is negative: eps is a radius >= 0 in [0, 1] pixel units (8/255 is the paper's).")
    if norm != "l2" and eps > 1.0:
        raise ValueError(f"eps={value!r} is above 1: L-inf eps is in [0, 1] pixel units (8/255 is the paper's); L2 radii may exceed 1 with --norm l2.")
    return eps


def check_mixed_precision(value: str | None) -> str | None:
    """`value` if it is one of `PRECISIONS` (or None: take accelerate's setting), else a clear error."""
    if value is not None and value not in PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {list(PRECISIONS)} (or unset to follow "
                         f"`accelerate launch --mixed_precision`), got {value!r}.")
    return value


def check_task(name: str) -> str:
    """`name` if it is a task, else the error of `tasks.get_task` (which calls this)."""
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}{did_you_mean(name, TASKS)}; available: {sorted(TASKS)}")
    return name


def check_num_workers(value: int | str) -> int | None:
    """DataLoader workers as given: an int >= 0, or None for ``"auto"`` (`data.loaders.resolve_num_workers` decides it).

    Raises:
        ValueError: neither ``"auto"`` nor an integer >= 0.
    """
    if str(value) == "auto":
        return None
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise ValueError(f"num_workers must be 'auto' or an integer >= 0, got {value!r}")
    return n


@dataclass
class BenchmarkConfig(DatasetArgs):
    """What to benchmark. Empty `encoders` means the bundled tiny encoders (the embedded default);
    `--dataset_name` (fields of `DatasetArgs`) adds a dataset that is not in the registry."""

    encoders: list[str] = field(default_factory=list, metadata={"help": "Encoders (preset, Hub id, bundled name, folder)."})
    revision: str | None = field(default=None, metadata={"help": "Hub commit SHA, branch or tag of the encoders (Hub ids only; a local folder or bundled encoder is refused); the resolved commit is recorded in run_info.json."})
    tasks: list[str] = field(default_factory=lambda: list(TASKS), metadata={"help": "classification segmentation depth"})
    datasets: list[str] = field(default_factory=lambda: ["shapes"], metadata={"help": "Registry dataset names."})
    attacks: list[str] = field(default_factory=lambda: ["embed", "pgd", "segpgd", "depth_pgd"], metadata={"help": "Each applies to the tasks it fits; embed and apgd (each task's default loss) to all; apgd:LOSS to LOSS's task; `strong` = paper attack + embed + APGD with every loss, and --worst_case."})
    eps: list[str] = field(default_factory=lambda: ["8/255"], metadata={"help": "Radii in pixel units, e.g. 2/255 8/255 (L-inf: in [0, 1]; L2 radii may exceed 1)."})
    steps: int = field(default=20, metadata={"help": "Attack steps (paper: 20)."})
    square_queries: int = field(default=1000, metadata={"help": "Query budget of the gradient-free Square attack (`--attacks square`; one forward per query, no backward)."})
    step_size: str = field(default="auto", metadata={"help": "Step size; auto = eps/4 (2/255 at the paper's 8/255)."})
    norm: str = field(default="linf", metadata={"help": "linf | l2"})
    track_best: bool = field(default=False, metadata={"help": "Keep each image's most damaging iterate (APGD always does)."})
    worst_case: bool = field(default=False, metadata={"help": "Add a `worst` row: per image the attack that hurt it most (needs >= 2 attacks per task)."})
    progressive: bool = field(default=False, metadata={"help": "SEA's progressive radius (2ε → 1.5ε → ε over 30/30/40 %% of the steps) for the segmentation APGD attacks."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Seeded subset of the evaluation split (same images clean and attacked)."})
    batch_size: str = field(default="32", metadata={"help": "Evaluation / attack batch size, or `auto`: the largest that fits in memory."})
    output_dir: str = field(default="outputs/benchmark", metadata={"help": "Results, heads and plots go here; re-running resumes."})
    heads_dir: str | None = field(default=None, metadata={"help": "Reuse heads trained by an earlier run (its output_dir/heads): a head is taken only if it was trained for this exact encoder (weights fingerprint), dataset, task and head settings; one that differs is refused, naming the difference."})
    force_heads: bool = field(default=False, metadata={"help": "Reuse --heads_dir heads for the same encoder name, dataset and task even when their identity differs (logged and listed in run_info.json)."})
    data_dir: list[str] = field(default_factory=list, metadata={"help": "Local copies: NAME=PATH per dataset (repeatable), e.g. cityscapes=/data/cs; a bare PATH when only one requested dataset reads files. ShapesWorld is always generated."})
    image_size: int | None = field(default=None, metadata={"help": "Input size: square side (classification), short side and window (dense tasks). Default: the paper's size for the encoder family and dataset (see `hf-ssl-robust info` / hf_ssl_robust.sizes)."})
    num_train_samples: int | None = field(default=None, metadata={"help": "Head training subset (ShapesWorld: how many scenes)."})
    head_epochs: int | None = field(default=None, metadata={"help": "Override the paper's head epochs (all tasks)."})
    head_lr: float | None = field(default=None, metadata={"help": "Override the paper's head learning rate (all tasks)."})
    num_examples: int = field(default=4, metadata={"help": "Images in each clean-vs-adversarial example figure."})
    num_workers: str = field(default="auto", metadata={"help": "DataLoader workers for head training and evaluation; auto: none for in-memory ShapesWorld, else up to 8 (one core left free)."})
    embed_encoder: bool = field(default=False, metadata={"help": "Save trained heads with their encoder's weights inside (self-contained, for offline use); default: lean heads that pin their encoder."})
    priors: str = field(default="auto", metadata={"help": "Image-free prior rows (majority class, per-pixel class prior, per-pixel mean depth from the training split): auto = for generated data (cheap), yes = every dataset (reads the training split once more), no.", "choices": ["auto", "yes", "no"]})
    dry_run: bool = field(default=False, metadata={"help": "Print every cell that would run (sizes, windows, head settings, forward/backward passes) without loading weights or data."})
    mixed_precision: str | None = field(default=None, metadata={"help": "Autocast for attacks and evaluation (the pixel layer stays fp32); default: `accelerate launch --mixed_precision`, else no.", "choices": ["no", "bf16", "fp16"]})
    seed: int = field(default=0, metadata={"help": "Seed of head training, subsets and every attack's random starts (per image, attack and restart)."})

    def __post_init__(self):
        from .validation import benchmark_problems, parse_data_dirs, raise_problems

        check_mixed_precision(self.mixed_precision)
        if self.priors not in ("auto", "yes", "no"):
            raise ValueError(f"priors must be auto, yes or no, got {self.priors!r}.")
        self.data_dir = [self.data_dir] if isinstance(self.data_dir, str) else list(self.data_dir or [])
        if any(a in SUITES for a in self.attacks):
            self.worst_case = True  # a suite is run for its worst case
        custom = add_custom_dataset(self) + revision_problems(self)  # --dataset_name: loaded and checked here, before any work
        raise_problems(custom + benchmark_problems(self, encoders=False))  # every cheap check, all at once
        self.attack_plan = check_plan(self.attacks, self.tasks, self.worst_case, self.progressive)  # task -> attacks
        self.eps_values = [parse_eps(e, norm=self.norm) for e in self.eps]
        if str(self.batch_size) != "auto":
            self.batch_size = int(self.batch_size)
        self.data_dirs = parse_data_dirs(self.data_dir, self.datasets)[0]

    def resolved_encoders(self) -> list[str]:
        if self.encoders:
            return list(self.encoders)
        from .encoders import bundled_encoders

        bundled = bundled_encoders()
        if not bundled:
            raise ValueError("No --encoders given and no bundled encoders found: pass --encoders <name or folder>.")
        return list(bundled)

    def attack_step_size(self, eps: float) -> float:
        return eps / 4 if self.step_size == "auto" else parse_eps(self.step_size, norm=self.norm)


# The paper's head-training hyper-parameters (DESIGN.md §4).
PAPER_PRESETS = {
    "classification": dict(epochs=5, batch_size=16, lr=0.5, weight_decay=0.0, optimizer="adam"),
    "segmentation": dict(epochs=50, batch_size=16, lr=1e-4, weight_decay=1e-3, optimizer="adamw"),
    "depth": dict(epochs=20, batch_size=128, lr=1e-4, weight_decay=1e-2, optimizer="adamw"),
}


@dataclass
class TrainHeadConfig:
    """Settings of `train_head`; unset hyper-parameters take the paper's preset for the task."""

    encoder: str = field(default="", metadata={"help": "Encoder: preset, Hub id, bundled name or local folder."})
    revision: str | None = field(default=None, metadata={"help": "Hub commit SHA, branch or tag of the encoder (its resolved commit is in the head's key)."})
    task: str = field(default="classification", metadata={"help": "The downstream task.", "choices": ["classification", "segmentation", "depth"]})
    dataset: str = field(default="shapes", metadata={"help": "Registry dataset name (see `hf-ssl-robust info`)."})
    output_dir: str | None = field(default=None, metadata={"help": "Where the head is saved (default outputs/heads/<encoder>-<dataset>-<task>)."})
    data_dir: str | None = field(default=None, metadata={"help": "Local folder for datasets that are not on the Hub."})
    image_size: int | None = field(default=None, metadata={"help": "Input size: square side (classification), short side and window (dense tasks). Default: the paper's size for the encoder family and dataset (see `hf-ssl-robust info` / hf_ssl_robust.sizes)."})
    epochs: int | None = field(default=None, metadata={"help": "Epochs; default: the task's paper preset, then the dataset's `head_presets`."})
    batch_size: int | None = field(default=None, metadata={"help": "Global batch size (split across processes); default: the preset's."})
    lr: float | None = field(default=None, metadata={"help": "Learning rate; default: the preset's (classification searches a few, see lr_candidates)."})
    weight_decay: float | None = field(default=None, metadata={"help": "Weight decay; default: the preset's."})
    optimizer: str | None = field(default=None, metadata={"help": "Optimizer; default: the preset's.", "choices": ["adam", "adamw", "sgd"]})
    lr_candidates: list[float] = field(default_factory=list, metadata={"help": "Learning rates to try, best validation wins (default: classification tries the paper's 0.5 and three decades below it; other tasks only the paper's)."})
    augment: bool = field(default=True, metadata={"help": "Paper augmentation: flips (+ random crops for dense tasks)."})
    cache_features: str = field(default="auto", metadata={"help": "Train on cached encoder features (auto: when only flips augment and the cache is small).", "choices": ["auto", "yes", "no"]})
    max_cache_gb: float = field(default=4.0, metadata={"help": "auto caching only below this cache size."})
    val_fraction: float = field(default=0.1, metadata={"help": "Validation share carved from the training split."})
    num_train_samples: int | None = field(default=None, metadata={"help": "Subset of the training split (ShapesWorld: how many to render)."})
    num_eval_samples: int | None = field(default=None, metadata={"help": "Subset of the evaluation split."})
    eval_batch_size: int = field(default=64, metadata={"help": "Batch size of feature caching, validation and the test scoring."})
    embed_encoder: bool = field(default=False, metadata={"help": "Save the encoder's weights inside the head folder (self-contained: offline use, the bundled Space); default: a lean folder pinning the encoder (id or folder, revision, weights SHA-256)."})
    evaluate_test: bool = field(default=True, metadata={"help": "Score the trained head on the evaluation split (the benchmark scores it itself)."})
    mixed_precision: str | None = field(default=None, metadata={"help": "Autocast precision (the pixel layer stays fp32); default: `accelerate launch --mixed_precision`, else no.", "choices": ["no", "bf16", "fp16"]})
    num_workers: str = field(default="auto", metadata={"help": "DataLoader workers; auto: none for in-memory data (ShapesWorld, cached features), else up to 8 (one core left free)."})
    seed: int = field(default=0, metadata={"help": "Seed of the split, the shuffling, the augmentation and the head's initialisation."})

    def __post_init__(self):
        check_task(self.task)
        check_mixed_precision(self.mixed_precision)
        if self.cache_features not in ("auto", "yes", "no"):
            raise ValueError(f"cache_features must be auto, yes or no, got {self.cache_features!r}.")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}.")
        if self.optimizer is not None and self.optimizer not in ("adam", "adamw", "sgd"):
            raise ValueError(f"optimizer must be adam, adamw or sgd, got {self.optimizer!r}.")
        check_num_workers(self.num_workers)

    def hyperparameters(self, spec=None) -> dict:
        """The paper's preset for the task, then the dataset's own `head_presets`, then explicit settings."""
        preset = {**PAPER_PRESETS[self.task], **(spec.head_presets.get(self.task, {}) if spec is not None else {})}
        return {k: (getattr(self, k) if getattr(self, k) is not None else v) for k, v in preset.items()}


ATTACK_ON = ("student", "teacher")
OBJECTIVES = ("cls", "dense")


def _help(text: str, default: Any, choices: tuple | None = None) -> Any:
    metadata = {"help": text} if choices is None else {"help": text, "choices": list(choices)}
    return field(default=default, metadata=metadata)


@dataclass
class DeACLConfig:
    """DeACL run; the defaults are the paper's DINO ViT-B/16 protocol (DESIGN §4), on the bundled encoder unless `encoder` is set."""

    encoder: str = _help("Encoder to make robust: preset, bundled name, Hub id or local folder (default: the bundled "
                         "standard encoder, as `hf-ssl-robust benchmark`; the paper used dino-vitb16).", "shapes-resnet-tiny")
    dataset: str = _help("Registry dataset whose images are used (labels unused).", "shapes")
    image_folder: str | None = _help("Folder of images (ImageNet-style, searched recursively); overrides dataset.", None)
    data_dir: str | None = _help("Local copy of a registry dataset (save_to_disk, parquet or imagefolder).", None)
    num_train_samples: int = _help("ShapesWorld only: how many training scenes to render.", 2000)
    image_size: int | None = _help("Training resolution; default: ShapesWorld's size, else 224 (the paper).", None)
    batch_size: int = _help("Global batch size, split across processes.", 128)
    epochs: int = _help("Training epochs (ignored when max_steps is set).", 100)
    max_steps: int | None = _help("Total optimisation steps; overrides epochs.", None)
    stop_after_steps: int | None = _help("Stop (after checkpointing) at this step, keeping the schedule of the full run.", None)
    lr: float = _help("Peak SGD learning rate.", 0.05)
    momentum: float = _help("SGD momentum.", 0.9)
    weight_decay: float = _help("SGD weight decay.", 0.0)
    warmup_epochs: float = _help("Linear warm-up epochs before the cosine decay.", 10.0)
    warmup_ratio: float | None = _help("Warm-up as a fraction of all steps; default warmup_epochs / epochs.", None)
    eps: str = _help("L-inf radius in [0, 1] pixel units, e.g. 4/255 (also a float).", "4/255")
    attack_steps: int = _help("Steps of the inner PGD.", 5)
    attack_step_size: str | None = _help("Inner PGD step size; default eps / 4.", None)
    gamma: float = _help("Weight γ of the robustness term.", 2.0)
    attack_on: str = _help("Generate x_adv on the 'student' (released code) or the frozen 'teacher' (paper text).", "student", ATTACK_ON)
    objective: str = _help("'cls' (the paper) or 'dense' (also align patch tokens).", "cls", OBJECTIVES)
    dense_weight: float = _help("Weight of the patch-token terms with objective='dense'.", 1.0)
    augment: bool = _help("Random resized crops + horizontal and vertical flips.", True)
    min_crop_scale: float = _help("Smallest crop area (fraction of the image) of the random resized crop.", 0.25)
    mixed_precision: str | None = _help("'no', 'bf16' or 'fp16' (the pixel layer stays fp32); default: `accelerate launch --mixed_precision`, else no.", None, ("no", "bf16", "fp16"))
    seed: int = _help("Seed of data order, augmentation, attack starts and dropout.", 0)
    output_dir: str = _help("Where the encoder, logs and checkpoints go.", "deacl-output")
    checkpoint_every: int = _help("Save a resumable checkpoint every N steps (0 = never).", 1000)
    keep_last: int = _help("Keep only the last K checkpoints.", 2)
    resume: bool = _help("Continue from the latest checkpoint in output_dir/checkpoints.", False)
    eval_every: int = _help("Call the eval callback every N steps (0 = off).", 0)
    eval_tasks: list[str] = field(default_factory=lambda: ["classification", "segmentation", "depth"],
                                  metadata={"help": "Tasks of the robustness-evolution benchmark run every eval_every steps (CLI)."})
    eval_train_samples: int = _help("ShapesWorld scenes its heads train on.", 600)
    eval_samples: int = _help("ShapesWorld scenes it scores, clean and attacked.", 64)
    log_every: int = _help("Log losses every N steps.", 10)
    num_workers: str = _help("DataLoader workers; auto: none for in-memory ShapesWorld, else up to 8 (one core left free).", "auto")
    push_to_hub: str | None = _help("Hub repo to publish the robust encoder to (done by the publishing step).", None)

    def __post_init__(self) -> None:
        self.eps = _parse_eps("eps", self.eps)
        self.attack_step_size = self.eps / 4 if self.attack_step_size is None else _parse_eps("attack_step_size", self.attack_step_size)
        _choice("attack_on", self.attack_on, ATTACK_ON)
        _choice("objective", self.objective, OBJECTIVES)
        check_mixed_precision(self.mixed_precision)
        for name in ("batch_size", "epochs", "num_train_samples", "keep_last", "log_every", "eval_train_samples", "eval_samples"):
            _at_least(name, getattr(self, name), 1)
        check_num_workers(self.num_workers)
        for task in self.eval_tasks:
            try:
                check_task(task)  # unknown task: a clear error before any training
            except ValueError as err:
                raise ValueError(f"eval_tasks: {err}") from None
        for name in ("attack_steps", "checkpoint_every", "eval_every"):
            _at_least(name, getattr(self, name), 0)
        for name in ("max_steps", "stop_after_steps", "image_size"):
            if getattr(self, name) is not None:
                _at_least(name, getattr(self, name), 1)
        for name in ("gamma", "dense_weight", "weight_decay", "warmup_epochs"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}.")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r} (the paper uses 0.05).")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r} (the paper uses 0.9).")
        if self.warmup_ratio is not None and not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}; e.g. 0.1 for 10% warm-up.")
        if self.warmup_ratio is None and self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs={self.warmup_epochs} must be < epochs={self.epochs} (or set warmup_ratio).")
        if not 0 < self.min_crop_scale <= 1:
            raise ValueError(f"min_crop_scale must be in (0, 1], got {self.min_crop_scale!r}.")
        if self.image_folder is None:
            if self.dataset not in DATASETS:
                raise ValueError(f"Unknown dataset {self.dataset!r}{did_you_mean(self.dataset, DATASETS)}; available: {sorted(DATASETS)}, or set image_folder=PATH.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _parse_eps(name: str, value: Any) -> float:
    try:
        return parse_eps(value)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from err


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}.")


def _at_least(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")
