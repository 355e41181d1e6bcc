"""The benchmark's robustness figure: one panel per task, the same colour for an encoder in every panel.

A panel shows *curves* (metric against ε, one line per encoder and attack) only where every attack in
it was run at three or more radii: with one or two radii a line would invent the values in between.
Otherwise it shows *grouped bars* at one ε: a group per condition (clean, EmbedAttack, the task
attack, ...), a bar per encoder, the 95 % bootstrap interval as an error bar where the record has
one (`ci95`), and the image-free prior (records with ``"encoder": "prior"``) as a dashed line.

    python scripts/plot_results.py results.json [more_results.json ...] --output robustness.png
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from .results import TASK_TABLES, _attack_order, _ordered, attack_title, encoder_names, format_eps, load_records

ENCODER_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#d62728")
CURVE_MIN_RADII = 3  # fewer radii than this: bars at one ε, not a line through two points


def _primary(records: Sequence[dict], metrics: dict[str, str] | None) -> dict[str, str]:
    metrics = {**{t: m for t, (_, m) in TASK_TABLES.items()}, **(metrics or {})}
    return {t: metrics[t] for t in _ordered(r["task"] for r in records) if t in metrics and any(r["metric"] == metrics[t] for r in records)}


def _radii(rows: Sequence[dict]) -> dict[str, list[float]]:
    """Attack -> the radii it was run at (ε > 0), over the panel's encoders."""
    radii: dict[str, set[float]] = {}
    for r in rows:
        if r["attack"] != "none" and r["encoder"] != "prior":
            radii.setdefault(r["attack"], set()).add(float(r["eps"]))
    return {a: sorted(v) for a, v in radii.items()}


def bar_eps(rows: Sequence[dict]) -> float | None:
    """The radius the bars show: the one most attacks were run at (the largest on a tie)."""
    counts: dict[float, int] = {}
    for radii in _radii(rows).values():
        for eps in radii:
            counts[eps] = counts.get(eps, 0) + 1
    return max(counts, key=lambda e: (counts[e], e)) if counts else None


def plot_robustness(records: Sequence[dict], path: str | os.PathLike, metrics: dict[str, str] | None = None) -> Path | None:
    """Write the figure (module docstring) to ``path``; None when no record has a task's primary metric."""
    import matplotlib.pyplot as plt

    fig = robustness_figure(records, metrics)
    if fig is None:
        return None
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def robustness_figure(records: Sequence[dict], metrics: dict[str, str] | None = None):
    """The figure of `plot_robustness` as a matplotlib Figure (None when there is nothing to draw)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    primary = _primary(records, metrics)
    if not primary:
        return None
    names = encoder_names([r for r in records if r["encoder"] != "prior"] or records)
    colours = {e: ENCODER_COLOURS[i % len(ENCODER_COLOURS)] for i, e in enumerate(names)}
    fig, axes = plt.subplots(1, len(primary), figsize=(4.8 * len(primary), 3.8), squeeze=False)
    for ax, (task, metric) in zip(axes[0], primary.items()):
        rows = [r for r in records if r["task"] == task and r["metric"] == metric]
        radii = _radii(rows)
        if radii and all(len(v) >= CURVE_MIN_RADII for v in radii.values()):
            _curves(ax, rows, names, colours)
            ax.set_xlabel("ε (×1/255)")
        else:
            eps = _bars(ax, rows, names, colours)
            ax.set_xlabel(f"ε = {format_eps(eps)}" if eps is not None else "clean only")
        datasets = _ordered(r["dataset"] for r in rows)
        ax.set_title(f"{task} ({datasets[0] if len(datasets) == 1 else 'all datasets'})")
        ax.set_ylabel(metric + (" (lower is better)" if metric == "rmse" else " (higher is better)"))
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _prior_lines(ax, rows: Sequence[dict]) -> None:
    drawn = set()
    for r in rows:
        if r["encoder"] == "prior" and (r["dataset"], r["value"]) not in drawn:  # two results files: one line
            drawn.add((r["dataset"], r["value"]))
            ax.axhline(r["value"], color="0.3", ls="--", lw=1.1, label=f"image-free prior ({r['dataset']})", zorder=3)


def _bars(ax, rows: Sequence[dict], names: dict[str, str], colours: dict[str, str]) -> float | None:
    eps = bar_eps(rows)
    chosen = [r for r in rows if r["encoder"] != "prior" and (r["attack"] == "none" or (eps is not None and abs(float(r["eps"]) - eps) < 1e-12))]
    attacks = sorted(_ordered(r["attack"] for r in chosen), key=_attack_order)
    encoders = [e for e in names if any(r["encoder"] == e for r in chosen)]
    width = 0.8 / max(len(encoders), 1)
    for j, encoder in enumerate(encoders):
        xs, values, lows, highs = [], [], [], []
        for i, attack in enumerate(attacks):
            match = [r for r in chosen if r["encoder"] == encoder and r["attack"] == attack]
            if not match:
                continue
            r = match[-1]
            xs.append(i - 0.4 + width * (j + 0.5))
            values.append(r["value"])
            low, high = r.get("ci95") or (r["value"], r["value"])
            lows.append(max(r["value"] - low, 0.0))
            highs.append(max(high - r["value"], 0.0))
        has_ci = any(lows) or any(highs)
        ax.bar(xs, values, width * 0.92, color=colours[encoder], label=names[encoder],
               yerr=[lows, highs] if has_ci else None, capsize=2 if has_ci else 0, zorder=2)
    ax.set_xticks(range(len(attacks)), [attack_title(a) for a in attacks], fontsize=8)
    _prior_lines(ax, rows)
    return eps


def _curves(ax, rows: Sequence[dict], names: dict[str, str], colours: dict[str, str]) -> None:
    for encoder in [e for e in names if any(r["encoder"] == e for r in rows)]:
        mine = [r for r in rows if r["encoder"] == encoder]
        clean = [r["value"] for r in mine if r["attack"] == "none"]
        for attack in sorted({r["attack"] for r in mine if r["attack"] != "none"}, key=_attack_order):
            pts = sorted((float(r["eps"]), r["value"]) for r in mine if r["attack"] == attack)
            if clean:
                pts = [(0.0, clean[-1])] + pts
            style = {"embed": "-o", "worst": "-D"}.get(attack, ":^" if attack.startswith("apgd") else "--s")
            ax.plot([e * 255 for e, _ in pts], [v for _, v in pts], style, color=colours[encoder], ms=4,
                    lw=2.2 if attack == "worst" else 1.2, label=f"{names[encoder]} · {attack_title(attack)}")
    _prior_lines(ax, rows)


def main(argv: Sequence[str] | None = None) -> Path | None:
    p = argparse.ArgumentParser(description="Draw the robustness figure from one or more results.json files.")
    p.add_argument("results", nargs="+", help="results.json files; their records are drawn together")
    p.add_argument("--output", required=True, help="PNG to write")
    args = p.parse_args(argv)
    records = [r for path in args.results for r in load_records(path)]
    out = plot_robustness(records, args.output)
    print(f"wrote {out}" if out else "no task metric to plot")
    return out
