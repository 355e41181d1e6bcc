"""Benchmark results: records, files (JSON / CSV / Markdown tables like the paper's) and plots.

A record is one measured number: `(encoder, task, dataset, attack, eps, metric) -> value`, with
`attack == "none"` and `eps == 0` for clean evaluation. Everything else (tables, plots, model
cards, the Space's results tab) is derived from a list of records.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from .configs import parse_eps  # noqa: F401  (re-export: its home was here)
from .diagnostics import flag_legend, flag_marker
from .uncertainty import NOT_SEPARATED_MARK, NOT_SEPARATED_NOTE, half_width, record_interval, record_separated

RECORD_KEYS = ("encoder", "task", "dataset", "attack", "eps", "steps", "metric", "value", "num_samples")
ATTACK_TITLES = {"none": "Clean", "embed": "EmbedAttack", "pgd": "PGD", "segpgd": "SegPGD", "depth_pgd": "DepthPGD",
                 "worst": "Worst case", "apgd_t": "APGD-T", "square": "Square"}
LOSS_TITLES = {"ce": "CE", "dlr": "DLR", "masked_ce": "mCE", "balanced_masked_ce": "bal-mCE", "js": "JS", "segpgd": "SegPGD loss",
               "depth": "depth loss", "depth_tol": "depth-tol", "masked_spherical": "mSph", "margin": "margin",
               "pixel_margin": "pixel margin"}


def attack_title(name: str) -> str:
    """Column title of an attack: `apgd:dlr` -> `APGD-DLR`, `worst` -> `Worst case`."""
    base, _, loss = name.partition(":")
    if base == "apgd":
        return f"APGD-{LOSS_TITLES.get(loss, loss)}"
    if base == "square" and loss:
        return f"Square-{LOSS_TITLES.get(loss, loss)}"
    return ATTACK_TITLES.get(name, name)


def _attack_order(name: str) -> tuple[int, str]:
    """Columns: clean, EmbedAttack, the paper's task attacks, APGD, then the worst case."""
    rank = {"none": 0, "embed": 1, "worst": 4}.get(name, 3 if name.startswith("apgd") else 2)
    return rank, name
TASK_TABLES = {
    "classification": ("Table 1: linear classification accuracy (higher is better)", "accuracy"),
    "segmentation": ("Table 2: semantic segmentation mIoU (higher is better)", "mean_iou"),
    "depth": ("Table 3: monocular depth RMSE in metres (lower is better)", "rmse"),
}


def format_eps(eps: float) -> str:
    """`0.0313725...` -> `8/255`; values that are no multiple of 1/255 are printed as decimals."""
    if eps == 0:
        return "0"
    k = eps * 255
    if abs(k - round(k)) < 1e-6:
        return f"{round(k)}/255"
    return f"{eps:.4g}"


def write_json(path: str | os.PathLike, obj) -> None:
    """Write JSON atomically (a crash never leaves half a file behind).

    The temporary file is named per process, so two processes writing the same file (seen: a
    2-process `accelerate launch` benchmark, 1 run in 5) never rename each other's half-written file."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"Not JSON serialisable: {type(value).__name__}")


def load_records(path: str | os.PathLike) -> list[dict]:
    """Read `results.json` (a list of records, or a dict with a `records` list)."""
    data = json.loads(Path(path).read_text())
    records = data["records"] if isinstance(data, dict) else data
    for i, record in enumerate(records):
        missing = [k for k in RECORD_KEYS if k not in record]
        if missing:
            raise ValueError(f"{path}: record {i} lacks {missing}; is this a results.json written by hf-ssl-robust?")
    return records


def write_csv(path: str | os.PathLike, records: Sequence[dict]) -> None:
    keys = list(RECORD_KEYS) + sorted({k for r in records for k in r} - set(RECORD_KEYS))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(records)


def _fmt(value: float | None, metric: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3f}" if metric == "rmse" else f"{value:.2f}"


def format_value(record: dict | None, metric: str) -> str:
    """A record's value as a table shows it: `0.48 ± 0.06` with its 95 % interval's half-width (`ci95`,
    rounded like the value), `0.48` for a record without one (results written before intervals)."""
    if record is None:
        return "–"
    text = _fmt(record["value"], metric)
    width = half_width(record_interval(record))
    return text if width is None or text == "–" else f"{text} ± {_fmt(width, metric)}"


def not_separated_marker(record: dict | None) -> str:
    """`" ≈"` for an attacked record whose value is not separated from clean by its interval, else empty."""
    return NOT_SEPARATED_MARK if record is not None and record_separated(record) is False else ""


def markdown_tables(records: Sequence[dict], metrics: dict[str, str] | None = None) -> str:
    """Tables laid out like the paper's Tables 1–3: one per task, rows (dataset, encoder),
    columns Clean, then EmbedAttack and the task attack at every ε measured. A value shows its 95 %
    bootstrap interval as `0.45 ± 0.06` when the record has one (`ci95`). A record's `flags` show as a
    marker after its value (`0.45 ± 0.06 ⚠N`), explained in a legend under the tables; an attacked value
    not separated from clean by the intervals (`separated_from_clean: false`) gets ` ≈` and a note."""
    metrics = {**{t: m for t, (_, m) in TASK_TABLES.items()}, **(metrics or {})}
    names = encoder_names(records)
    blocks, flagged, close, intervals = [], set(), False, any(record_interval(r) is not None for r in records)
    for task in _ordered(r["task"] for r in records):
        metric = metrics.get(task, "value")
        rows = [r for r in records if r["task"] == task and r["metric"] == metric]
        if not rows:
            continue
        columns = [("none", 0.0)] + sorted(
            {(r["attack"], float(r["eps"])) for r in rows if r["attack"] != "none"},
            key=lambda c: (*_attack_order(c[0]), c[1]),
        )
        multi_eps = len({eps for a, eps in columns if a != "none"}) > 1
        heads = ["Dataset", "Encoder"] + [
            attack_title(a) + (f" ({format_eps(e)})" if multi_eps and a != "none" else "") for a, e in columns
        ]
        title = TASK_TABLES.get(task, (f"{task}: {metric}", metric))[0]
        eps_note = ", ".join(sorted({format_eps(e) for a, e in columns if a != "none"}))
        steps = sorted({int(r["steps"]) for r in rows if r["attack"] != "none"})
        if eps_note:
            title += f"; ε = {eps_note}, {', '.join(map(str, steps))} steps"
        lines = [f"**{title}**", "", "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
        for dataset in _ordered(r["dataset"] for r in rows):
            for encoder in _ordered(r["encoder"] for r in rows if r["dataset"] == dataset):
                cells = []
                for attack, eps in columns:
                    match = [
                        r
                        for r in rows
                        if r["dataset"] == dataset and r["encoder"] == encoder and r["attack"] == attack
                        and (attack == "none" or abs(float(r["eps"]) - eps) < 1e-9)
                    ]
                    flags = match[-1].get("flags") or [] if match else []
                    flagged.update(flags)
                    marker = not_separated_marker(match[-1] if match else None)
                    close |= bool(marker)
                    cells.append(format_value(match[-1] if match else None, metric) + flag_marker(flags) + marker)
                lines.append(f"| {dataset} | {names[encoder]} | " + " | ".join(cells) + " |")
        if any(r["encoder"] == "prior" for r in rows):
            from .priors import PRIOR_NAMES

            lines += ["", f"`prior`: the image-free {PRIOR_NAMES.get(task, 'prior')} of the training split (no encoder; an attack cannot change it)."]
        blocks.append("\n".join(lines))
    legend = flag_legend(flagged)
    notes = (["± : half-width of the 95 % bootstrap interval over images (`ci95` in results.json)."] if intervals else []) + (
        [f"{NOT_SEPARATED_MARK.strip()} {NOT_SEPARATED_NOTE}."] if close else [])
    return ("\n\n".join(blocks) + "\n" + ("\n" + "\n".join(notes) + "\n" if notes else "")
            + (f"\nWarnings (`flags` in results.json):\n\n{legend}\n" if legend else ""))


def display_name(encoder: str) -> str:
    """Short encoder name for tables: the last path component of a folder or Hub id."""
    return Path(str(encoder).rstrip("/")).name or str(encoder)


def encoder_names(records: Sequence[dict]) -> dict[str, str]:
    """Encoder -> its table name: the basename, with parent folders where two encoders share it."""
    from .identity import unique_display_names

    return unique_display_names(_ordered(r["encoder"] for r in records))


def _ordered(values: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for v in values:
        seen.setdefault(v, None)
    return list(seen)


def plot_robustness_curves(records: Sequence[dict], path: str | os.PathLike, metrics: dict[str, str] | None = None) -> Path | None:
    """One panel per task: grouped bars at one ε, or curves where every attack ran at >= 3 radii
    (`hf_ssl_robust.plots.plot_robustness`)."""
    from .plots import plot_robustness

    return plot_robustness(records, path, metrics)


def plot_examples(examples: dict, task, spec, eps: float, path: Path) -> None:
    """Rows of: clean image, adversarial image, perturbation (amplified), target, clean and adversarial predictions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attack = task.task_attack if f"adv/{task.task_attack}" in examples else next((k[4:] for k in examples if k.startswith("adv/")), None)
    if attack is None:
        return
    pixels, adv = examples["pixels"], examples[f"adv/{attack}"]
    n = pixels.shape[0]
    fig, axes = plt.subplots(n, 6, figsize=(12, 2.1 * n), squeeze=False)
    kw = {}
    if task.name == "segmentation":
        kw = dict(cmap="tab20", vmin=0, vmax=max(spec.num_classes - 1, 1), interpolation="nearest")
    elif task.name == "depth":
        kw = dict(cmap="magma_r", vmin=0, vmax=float(examples["target"].max()))
    names = spec.class_names or []
    for i in range(n):
        delta = adv[i] - pixels[i]
        amp = 0.5 / max(float(delta.abs().max()), 1e-12)
        panels = [("clean", pixels[i].permute(1, 2, 0)), (f"{attack} ε={format_eps(eps)}", adv[i].permute(1, 2, 0)),
                  ("perturbation ×%.0f" % amp, (0.5 + delta * amp).clamp(0, 1).permute(1, 2, 0))]
        for j, (title, img) in enumerate(panels):
            axes[i, j].imshow(img.numpy())
            axes[i, j].set_title(title, fontsize=8)
        for j, key in enumerate(["target", "none", attack], start=3):
            value = examples[key][i]
            title = {"target": "target", "none": "clean prediction"}.get(key, "adversarial prediction")
            if task.name == "classification":
                axes[i, j].text(0.5, 0.5, names[int(value)] if names else str(int(value)), ha="center", va="center", fontsize=12)
            else:
                axes[i, j].imshow(value.float().numpy(), **kw)
            axes[i, j].set_title(title, fontsize=8)
        for ax in axes[i]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
