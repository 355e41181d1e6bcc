"""Robustness evolution during DeACL (the paper's Figure 2): a small benchmark on the encoder as it
trains, and a plot of clean / EmbedAttack / task-attack metrics against the training step.

    hf-ssl-robust deacl --encoder ./enc --dataset shapes --max_steps 400 --eval_every 100
    # -> output_dir/evolution.jsonl and output_dir/evolution.png
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .attacks import make_attack
from .data import get_dataset_spec, make_dataset
from .data.loading import collate
from .evaluation import evaluate
from .results import attack_title, parse_eps
from .tasks import get_task
from .training import TrainHeadConfig, train_head


def make_evolution_eval(
    tasks: Sequence[str] = ("classification", "segmentation", "depth"),
    dataset: str = "shapes",
    *,
    eps: str | float = "8/255",
    steps: int = 10,
    num_train_samples: int = 600,
    max_eval_samples: int = 64,
    image_size: int | None = None,
    head_epochs: int | None = None,
    seed: int = 0,
) -> Callable[[int, object], dict]:
    """A DeACL `eval_fn(step, encoder) -> {task: {"none": m, "embed": m, <task attack>: m}}`.

    Each call trains a fresh head per task on the current encoder (frozen, feature-cached) and
    scores it clean and under EmbedAttack and the task attack at one ε, on the same images.
    `num_train_samples` / `max_eval_samples` are seeded subsets of the full splits (`seed`; for
    ShapesWorld, scenes rendered from its seeded stream): the same images at every DeACL step.
    """
    eps_value = parse_eps(eps)

    def eval_fn(step: int, encoder) -> dict:
        import copy

        from accelerate import Accelerator

        encoder = copy.deepcopy(encoder)  # heads freeze their encoder: never touch the one being trained
        accelerator = Accelerator()
        out = {}
        for name in tasks:
            task = get_task(name)
            spec = get_dataset_spec(dataset, task=name)
            cfg = TrainHeadConfig(encoder="", task=name, dataset=dataset, image_size=image_size, epochs=head_epochs,
                                  num_train_samples=num_train_samples, num_eval_samples=max_eval_samples, seed=seed)
            model, _ = train_head(cfg, accelerator=accelerator, encoder=encoder)
            attacks = {a: make_attack(a, eps=eps_value, step_size=eps_value / 4, steps=steps, seed=seed, **task.attack_kwargs(a, spec))
                       for a in ("embed", task.task_attack)}
            data = make_dataset(spec, "eval", num_samples=max_eval_samples, seed=seed, image_size=model.config.image_size)
            loader = accelerator.prepare(torch.utils.data.DataLoader(data, batch_size=32, collate_fn=collate))
            results = evaluate(model, loader, task, spec, attacks=attacks, accelerator=accelerator, desc=f"evolution {name}")
            out[name] = {attack: metrics[task.primary_metric] for attack, metrics in results.items()}
        return out

    return eval_fn


def plot_evolution(jsonl: str | Path, path: str | Path) -> Path | None:
    """One panel per task: clean, EmbedAttack and task-attack metric against the DeACL step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(jsonl).read_text().splitlines() if line.strip()]
    rows = [r for r in rows if isinstance(r.get("metrics", r), dict)]
    if not rows:
        return None

    def metrics(r):
        return r.get("metrics", {k: v for k, v in r.items() if k != "step"})

    tasks = [t for t in metrics(rows[0]) if isinstance(metrics(rows[0])[t], dict)]
    if not tasks:
        return None
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.4 * len(tasks), 3.4), squeeze=False)
    for ax, name in zip(axes[0], tasks):
        task = get_task(name)
        for attack in metrics(rows[0])[name]:
            xs = [r["step"] for r in rows if name in metrics(r)]
            ys = [metrics(r)[name][attack] for r in rows if name in metrics(r)]
            ax.plot(xs, ys, "-o", ms=3, label=attack_title(attack))
        ax.set_title(name)
        ax.set_xlabel("DeACL step")
        ax.set_ylabel(task.primary_metric + ("" if task.higher_is_better else " (lower is better)"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
