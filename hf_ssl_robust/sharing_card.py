"""The dataset card of a results dataset (`sharing.write_results_dataset`): rendered from its rows.

Its YAML header names the Parquet file in `configs`, so `datasets.load_dataset("user/name")` (and
the Hub's viewer) read the table; the body says what was run, shows the paper-style tables and the
provenance, and gives the exact command that reproduces the run.
"""

from __future__ import annotations

from collections.abc import Sequence

import yaml

from .results import display_name, format_eps, markdown_tables

TAGS = ["hf-ssl-robust", "adversarial-robustness", "robustness-leaderboard", "self-supervised", "vision"]
NOT_RECORDED = "not recorded"


def card_metadata(pretty_name: str) -> dict:
    from .sharing import PARQUET_PATH

    return {"pretty_name": pretty_name, "tags": TAGS,
            "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": PARQUET_PATH}]}]}


def _values(rows: Sequence[dict], key: str) -> str:
    seen = []
    for r in rows:
        v = r.get(key)
        if v is not None and v not in seen:
            seen.append(v)
    return ", ".join(str(v) for v in seen) if seen else NOT_RECORDED


def render_dataset_card(rows: Sequence[dict], repo_id: str | None = None) -> str:
    """Markdown with a YAML header (see the module docstring)."""
    encoders = list(dict.fromkeys(r["encoder"] for r in rows if r["encoder"] != "prior"))
    title = "Robustness results: " + ", ".join(display_name(e) for e in encoders)
    header = yaml.safe_dump(card_metadata(title), sort_keys=False, allow_unicode=True)
    where = repo_id or "path/to/this/folder"
    attacked = [r for r in rows if r["attack"] != "none"]
    threat = sorted({(r["norm"], float(r["eps"])) for r in attacked})
    lines = [f"---\n{header}---\n", f"# {title}", "",
             "Adversarial-robustness results of self-supervised vision encoders, written by "
             "hf-ssl-robust (`hf-ssl-robust results push`): one row per measured number (encoder, task, dataset, "
             "attack, ε, metric), each with the full provenance of its run.", "",
             "## What was run", "", "| Encoder | Id | Fingerprint | Family | Card |", "|---|---|---|---|---|"]
    for enc in encoders:
        r = next(x for x in rows if x["encoder"] == enc)
        derived = " (derived when shared)" if r.get("identity_derived") else ""
        lines.append(f"| {display_name(enc)} | `{r['encoder_id']}` | `{r['encoder_fingerprint']}`{derived} "
                     f"| {r.get('encoder_family') or '–'} | {_link(r.get('encoder_card'))} |")
    lines += ["", "| Setting | Value |", "|---|---|",
              f"| Tasks | {_values(rows, 'task')} |",
              f"| Datasets (id, split) | " + ", ".join(sorted({f"{r['dataset']} ({r.get('dataset_id')}, {r.get('dataset_split')})" for r in rows})) + " |",
              "| Threat models | " + (", ".join(f"{n} ε = {format_eps(e)}" for n, e in threat) or "none (clean only)") + " |",
              f"| Attacks | {_values(attacked, 'attack')} |",
              f"| Steps, step size | {_values(attacked, 'steps')}; " + (", ".join(sorted({format_eps(float(r['step_size'])) for r in attacked if r.get('step_size') is not None})) or NOT_RECORDED) + " |",
              f"| Restarts | {_values(attacked, 'restarts')} |",
              f"| Evaluated images per cell | {_values(rows, 'num_samples')} |",
              f"| Image size | {_values(rows, 'image_size') if any(r.get('image_size') for r in rows) else 'the paper size per encoder family (hf_ssl_robust/sizes.py)'} |",
              f"| Seed | {_values(rows, 'seed')} |",
              f"| Flags | {', '.join(sorted({f for r in rows for f in r.get('flags') or []})) or 'none raised'} |",
              "", "## Provenance", "", "| | |", "|---|---|",
              f"| hf-ssl-robust | {_values(rows, 'package_version')} (git {_values(rows, 'git_revision')}) |",
              f"| torch, transformers | {_values(rows, 'torch_version')}; {_values(rows, 'transformers_version')} |",
              f"| Device, processes | {_values(rows, 'device')}; {_values(rows, 'num_processes')} |",
              f"| Mixed precision | {_values(rows, 'mixed_precision')} |",
              f"| Runs | {_values(rows, 'run')} |", "",
              "## Results", "", markdown_tables(rows).strip(), "",
              "## Use it", "", "```python", "from datasets import load_dataset", "",
              f'results = load_dataset("{where}", split="train")  # one row per number, with its provenance',
              "```", "", "Rank it against other results (run folders, local results datasets or Hub dataset ids):", "",
              "```bash", f"hf-ssl-robust leaderboard {where} other-user/their-results", "```", "",
              "## Reproduce", "", "```bash", *sorted({r['command'] for r in rows if r.get('command')}), "```", ""]  # fmt: skip
    return "\n".join(lines)


def _link(target: str | None) -> str:
    if not target:
        return "–"
    return f"[card]({target})"
