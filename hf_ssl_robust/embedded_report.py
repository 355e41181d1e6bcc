"""README's account of the embedded default, written from the files of the run that made it.

`scripts/make_embedded_default.sh` leaves its evidence in `docs/embedded_default/`: the benchmark's
`results.json` / `run_info.json`, the random-weights control's `random_weights_results.json`, the
pretraining log and arguments, DeACL's log, the supervised ceiling and `logs/steps.jsonl` (every step's
git revision and wall seconds). Two README blocks are rendered from them, never typed:

- ``<!-- embedded-default-results -->``: the wall time, the paper-style tables (with the image-free
  prior rows and the random-weights control rows) and the comparison with those baselines;
- ``<!-- embedded-default-making -->``: the pretraining probes on validation scenes, and how long each
  step took.

    python scripts/readme_results.py            # rewrite both blocks in README.md
    python scripts/readme_results.py --check    # exit 1 if README disagrees with the files
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .results import TASK_TABLES, attack_title, load_records, markdown_tables

STANDARD, TWIN = "shapes-resnet-tiny", "shapes-resnet-tiny-deacl"
BLOCKS = {"results": "embedded-default-results", "making": "embedded-default-making"}
TASK_ATTACK = {"classification": "pgd", "segmentation": "segpgd", "depth": "depth_pgd"}


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {BLOCKS[name]} -->", f"<!-- /{BLOCKS[name]} -->"


def _json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def read_probes(path: str | Path) -> list[dict]:
    """The probe lines of a pretraining `training_log.jsonl` (loss lines skipped)."""
    return [r for r in _jsonl(Path(path)) if "probe_accuracy" in r]


def probe_table(probes: list[dict]) -> str:
    lines = ["| minutes | step | scene pairs | probe accuracy | patch mIoU | depth RMSE (m) |", "|---|---|---|---|---|---|"]
    for r in probes:
        lines.append(f"| {r['minutes']:.1f} | {r['step']} | {r['scenes']} | {r['probe_accuracy']:.3f} | "
                     f"{r['probe_miou']:.3f} | {r['probe_depth_rmse']:.3f} |")
    return "\n".join(lines)


def plot_probes(probes: list[dict], output: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    minutes = [r["minutes"] for r in probes]
    left.plot(minutes, [r["probe_accuracy"] for r in probes], "o-", label="linear probe accuracy")
    left.plot(minutes, [r["probe_miou"] for r in probes], "s-", label="patch mIoU")
    left.set(xlabel="pretraining minutes", ylim=(0, 1), title="frozen probes, 256 validation scenes")
    left.legend(loc="lower right")
    right.plot(minutes, [r["probe_depth_rmse"] for r in probes], "o-", color="tab:green")
    right.set(xlabel="pretraining minutes", ylabel="m", title="depth RMSE (lower is better)")
    fig.tight_layout()
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)


def _value(records, encoder: str, task: str, attack: str) -> float | None:
    match = [r for r in records if r["encoder"] == encoder and r["task"] == task and r["attack"] == attack
             and r["metric"] == TASK_TABLES[task][1]]
    return match[-1]["value"] if match else None


def _fmt(task: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f} m" if task == "depth" else f"{value:.2f}"


def baselines_paragraph(records: list[dict], random_records: list[dict]) -> str:
    """Every headline number next to the image-free prior (and random weights), generated."""
    from .priors import PRIOR_NAMES

    random_name = next((r["encoder"] for r in random_records if r["encoder"] != "prior"), None)
    lines = ["Against the baselines (the image-free prior of the training split; random weights with the same heads):", ""]
    for task in TASK_TABLES:
        if _value(records, STANDARD, task, "none") is None:
            continue
        prior = _value(records, "prior", task, "none")
        clean = _value(records, STANDARD, task, "none")
        parts = [f"standard clean {_fmt(task, clean)}"]
        if prior is not None:
            parts.append(f"{PRIOR_NAMES.get(task, 'prior')} {_fmt(task, prior)}")
        if random_name is not None:
            parts.append(f"random weights {_fmt(task, _value(random_records, random_name, task, 'none'))}")
        parts.append(f"under EmbedAttack standard {_fmt(task, _value(records, STANDARD, task, 'embed'))}, "
                     f"DeACL twin {_fmt(task, _value(records, TWIN, task, 'embed'))}")
        parts.append(f"under {attack_title(TASK_ATTACK[task])} standard {_fmt(task, _value(records, STANDARD, task, TASK_ATTACK[task]))}, "
                     f"twin {_fmt(task, _value(records, TWIN, task, TASK_ATTACK[task]))}")
        lines.append(f"- **{task}** ({TASK_TABLES[task][1]}): " + "; ".join(parts) + ".")
    return "\n".join(lines)


def render_results_block(results_dir: Path) -> str:
    """The results block: wall time, tables with prior and random-weights rows, the baselines."""
    begin, end = markers("results")
    records = load_records(results_dir / "results.json")
    random_path = results_dir / "random_weights_results.json"
    random_records = load_records(random_path) if random_path.is_file() else []
    info = _json(results_dir / "run_info.json") or {}
    lines = [begin, ""]
    seconds = info.get("wall_seconds")
    if seconds is not None:
        machine = info.get("machine", {})
        where = f" on {machine['cpu_count']} CPU cores" if machine.get("cpu_count") and info.get("device") == "cpu" else ""
        where = where or (f" on {info['device']}" if info.get("device") else "")
        revision = f", revision {info['git_revision'][:7]}" if info.get("git_revision") else ""
        lines += [f"Measured wall time of this run: **{_minutes(seconds)}**{where}{revision} "
                  f"(`docs/embedded_default/run_info.json`).", ""]
    quiet = _json(results_dir / "quiet_run_info.json")
    if quiet and quiet.get("wall_seconds") is not None:
        lines += [f"The same command again on the machine with nothing else running: **{_minutes(quiet['wall_seconds'])}** "
                  f"(`docs/embedded_default/quiet_run_info.json`, revision {str(quiet.get('git_revision'))[:7]}).", ""]
    controls = [r for r in random_records if r["encoder"] != "prior"]  # its prior rows repeat the run's
    lines += [markdown_tables(records + controls).rstrip(), ""]
    if controls:
        lines += ["`shapes-resnet-tiny-random`: the same architecture at its random initialisation, through the same "
                  "benchmark (`docs/embedded_default/random_weights_results.json`, with its own `run_info.json`).", ""]
    if any(r["encoder"] == STANDARD for r in records):
        lines += [baselines_paragraph(records, random_records), ""]
    return "\n".join(lines + [end])


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(round(seconds % 60))} s"


def render_making_block(results_dir: Path) -> str:
    """The making-of block: pretraining probes (validation scenes) and every step's wall time."""
    begin, end = markers("making")
    lines = [begin, ""]
    probes = read_probes(results_dir / "pretraining_log.jsonl")
    if probes:
        lines += ["Frozen probes during pretraining, on 256 validation scenes (`docs/embedded_default/pretraining_log.jsonl`):", "",
                  probe_table(probes), ""]
    args = _json(results_dir / "pretraining_args.json")
    steps = _jsonl(results_dir / "logs" / "steps.jsonl")
    first_pretraining = next((s for s in steps if s["step"] == "pretraining"), None)
    if args:
        sentence = (f"Pretraining: {args['steps_done']} steps of a {args['max_steps']}-step cosine schedule, "
                    f"{args['batch_size']} scene pairs per step from a pool of {args['pool_scenes']} pairs rendered once "
                    f"({args['scenes_seen']} pairs seen), {args['minutes']:.1f} min of training")
        if first_pretraining is not None:
            sentence += f", {_minutes(first_pretraining['seconds'])} for the whole step with the pool's rendering and the probes"
        lines += [sentence + " (`docs/embedded_default/pretraining_args.json`, `logs/steps.jsonl`).", ""]
    ceiling = _json(results_dir / "supervised_ceiling_resnet.json")
    if isinstance(ceiling, dict):
        lines += [f"Supervised ceiling: the same ResNet trained on labels for {ceiling['args']['steps']} steps of "
                  f"{ceiling['args']['batch_size']} scenes scores {ceiling['test_accuracy']:.3f} accuracy on the "
                  f"{ceiling['test_scenes']} test scenes (`docs/embedded_default/supervised_ceiling_resnet.json`).", ""]
    if steps:
        lines += [step_table(steps), ""]
    return "\n".join(lines + [end])


def step_table(steps: list[dict]) -> str:
    """Every step of the last run of `make_embedded_default.sh` (the revision of the last line), its wall
    time, and, for a step that run resumed as finished (pretraining, DeACL, the supervised ceiling),
    the earlier run that did the work."""
    final = steps[-1]["revision"]
    names = list(dict.fromkeys(s["step"] for s in steps))
    rows = ["| step | this run | done by an earlier run (resumed here) |", "|---|---|---|"]
    for name in names:
        here = [s for s in steps if s["step"] == name and s["revision"] == final]
        seconds = sum(s["seconds"] for s in here)
        earlier = max((s for s in steps if s["step"] == name and s["revision"] != final), key=lambda s: s["seconds"], default=None)
        resumed = earlier is not None and (not here or earlier["seconds"] > 10 * max(seconds, 1))
        rows.append(f"| {name} | {_minutes(seconds) if here else 'kept'} | "
                    + (f"{_minutes(earlier['seconds'])} at {earlier['revision'][:7]}, started {earlier['started']} |" if resumed else "|"))
    return (f"Every step of `scripts/make_embedded_default.sh` at revision {final[:7]} (wall times on this project's 2-core "
            "CPU machine, including whatever else shared it; `docs/embedded_default/logs/steps.jsonl` has every line):\n\n"
            + "\n".join(rows))


def block(readme: str, name: str) -> str:
    """The block as it is in README (markers included); ValueError if the markers are missing."""
    begin, end = markers(name)
    start, stop = readme.find(begin), readme.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"README.md lacks the {begin} ... {end} block about the embedded default.")
    return readme[start : stop + len(end)]


def rendered(results_dir: Path) -> dict[str, str]:
    return {"results": render_results_block(results_dir), "making": render_making_block(results_dir)}


def main(argv=None, readme: Path | None = None, results_dir: Path | None = None) -> int:
    p = argparse.ArgumentParser(description="Write README's embedded-default blocks from the committed run's files.")
    p.add_argument("--check", action="store_true", help="only compare; exit 1 when README differs")
    p.add_argument("--readme", default=str(readme or "README.md"))
    p.add_argument("--results_dir", default=str(results_dir or "docs/embedded_default"))
    args = p.parse_args(argv)
    path, text = Path(args.readme), Path(args.readme).read_text()
    wanted = rendered(Path(args.results_dir))
    current = {name: block(text, name) for name in wanted}
    if args.check:
        stale = [name for name in wanted if current[name] != wanted[name]]
        if stale:
            print(f"{path}: the {', '.join(stale)} block(s) differ from {args.results_dir}; run python scripts/readme_results.py",
                  file=sys.stderr)
            return 1
        print("README's embedded-default blocks match the committed results")
        return 0
    for name in wanted:
        text = text.replace(current[name], wanted[name])
    path.write_text(text)
    print(f"wrote the embedded-default blocks into {path}")
    return 0
