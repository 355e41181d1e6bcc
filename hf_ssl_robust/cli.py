"""`hf-ssl-robust` command line: thin entry points over importable functions.

    hf-ssl-robust benchmark [--encoders ..] [--tasks ..] [--datasets ..] [--attacks ..] [--eps 8/255 ..]
    hf-ssl-robust train-head --task segmentation --encoder ./enc --dataset shapes
    hf-ssl-robust deacl --encoder ./enc --dataset shapes --max_steps 200
    hf-ssl-robust push FOLDER REPO_ID [--results results.json] [--dry_run]
    hf-ssl-robust info
    hf-ssl-robust check-attacks [--encoder shapes-resnet-tiny] [--tasks ..] [--attacks strong] [--eps 8/255] [--steps 20]
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

COMMANDS = ("benchmark", "train-head", "deacl", "push", "info", "check-attacks")


def benchmark_main(argv: list[str] | None = None) -> int:
    from .benchmark import BenchmarkConfig, run_benchmark
    from .results import markdown_tables

    cfg = parse_config(BenchmarkConfig, argv, "hf-ssl-robust benchmark")
    if cfg.dry_run:
        from .planning import format_plan, plan_benchmark
        from .validation import cells

        print(format_plan(plan_benchmark(cfg), cells(cfg)[1]), end="")
        return 0
    from .precision import make_accelerator

    # The accelerator first: a bare `PartialState()` made before it would fix the process state without
    # reading ACCELERATE_USE_CPU, and every process of a CPU `accelerate launch` would then run alone.
    accelerator = make_accelerator(cfg.mixed_precision)
    if accelerator.is_main_process:  # what `strong`, `apgd` and the task filters expand to
        print("Attacks per task" + (" (+ per-image worst case)" if cfg.worst_case else "") + ": "
              + "; ".join(f"{task}: {' '.join(names)}" for task, names in cfg.attack_plan.items()))
    records = run_benchmark(cfg, accelerator)

    if accelerator.is_main_process:
        out = Path(cfg.output_dir)
        print(markdown_tables(records))
        print(f"Wrote {out / 'results.json'}, results.csv, results.md, robustness_curves.png and example figures to {out}/")
    return 0


def train_head_main(argv: list[str] | None = None) -> int:
    from .results import display_name
    from .training import TrainHeadConfig, train_head

    cfg = parse_config(TrainHeadConfig, argv, "hf-ssl-robust train-head")
    if not cfg.encoder:
        raise SystemExit("train-head needs --encoder (a preset, Hub id, bundled name or local folder).")
    if cfg.output_dir is None:
        cfg.output_dir = f"outputs/heads/{display_name(cfg.encoder)}-{cfg.dataset}-{cfg.task}"
    _, info = train_head(cfg)
    from accelerate import PartialState

    if PartialState().is_main_process:
        metrics = ", ".join(f"{k}={v:.4f}" for k, v in info["metrics"].items() if k != "num_samples")
        print(f"{cfg.task} head on {cfg.encoder} / {cfg.dataset} ({info['metrics']['num_samples']} {info['eval_split']} images): {metrics}")
        print(f"lr {info['hyperparameters']['lr']:g}, best epoch {info['best_epoch'] + 1}/{info['hyperparameters']['epochs']}, "
              f"feature cache {'on' if info['feature_cache'] else 'off'}, {sum(info['timings'].values()):.1f} s")
        print(f"Saved to {cfg.output_dir} (load with {type(_).__name__}.from_pretrained)")
    return 0


def deacl_main(argv: list[str] | None = None) -> int:
    from accelerate import DistributedDataParallelKwargs

    from .defenses import DeACLConfig, train_deacl
    from .precision import make_accelerator

    cfg = parse_config(DeACLConfig, argv, "hf-ssl-robust deacl")
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)  # DINOv2's mask token gets no gradient
    accelerator = make_accelerator(cfg.mixed_precision, kwargs_handlers=[ddp])
    eval_fn = None
    if cfg.eval_every:
        from .evolution import make_evolution_eval

        eval_fn = make_evolution_eval(seed=cfg.seed)  # a small ShapesWorld benchmark on each evaluated step
    path = train_deacl(cfg, accelerator, eval_fn=eval_fn)
    if cfg.eval_every and accelerator.is_main_process and (path / "evolution.jsonl").is_file():
        from .evolution import plot_evolution

        plot_evolution(path / "evolution.jsonl", path / "evolution.png")
        accelerator.print(f"Robustness evolution: {path / 'evolution.png'}")
    if cfg.stop_after_steps is not None and not (path / "config.json").is_file():
        accelerator.print(f"Stopped at step {cfg.stop_after_steps}; resume with --resume --output_dir {path}")
        return 0
    accelerator.print(f"Robust encoder saved to {path} (load with hf_ssl_robust.load_encoder or AutoModel).")
    if cfg.push_to_hub and accelerator.is_main_process:
        from .hub import push_encoder

        url = push_encoder(path, cfg.push_to_hub)
        accelerator.print(f"Pushed to {url}")
    return 0


def push_main(argv: list[str] | None = None) -> int:
    import argparse

    from .hub import push_encoder, push_head, write_card

    parser = argparse.ArgumentParser(prog="hf-ssl-robust push", description="Render a model card and upload an encoder or head folder.")
    parser.add_argument("folder", help="An encoder (config.json + model.safetensors) or head folder (with train_metrics.json).")
    parser.add_argument("repo_id", help="Hub repository, e.g. me/dino-vitb16-deacl.")
    parser.add_argument("--results", default=None, help="results.json of a benchmark to put in the card.")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--keep_card", action="store_true", help="Keep an existing README.md instead of rendering one.")
    parser.add_argument("--dry_run", action="store_true", help="Only write README.md next to the weights.")
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    if args.dry_run:
        print(f"Wrote {write_card(folder, args.results, repo_id=args.repo_id)}")
        return 0
    push = push_head if (folder / "train_metrics.json").is_file() else push_encoder
    print(f"Pushed to {push(folder, args.repo_id, records=args.results, private=args.private, overwrite_card=not args.keep_card)}")
    return 0


def info_main(argv: list[str] | None = None) -> int:
    from .attacks import ATTACKS
    from .data import DATASETS
    from .encoders import PRESETS, bundled_encoders

    print("Encoder presets:")
    for name, hub_id in sorted(PRESETS.items()):
        print(f"  {name:<22} {hub_id}")
    bundled = bundled_encoders()
    print("Bundled encoders:" + ("" if bundled else " (none)"))
    for name, path in bundled.items():
        print(f"  {name:<20} {path}")
    print("Datasets:")
    for name, spec in sorted(DATASETS.items()):
        print(f"  {name:<14} {spec.description}")
    print("Attacks: " + ", ".join(sorted(ATTACKS)))
    from .sizes import sizes_table

    print("Paper input sizes per encoder family (hf_ssl_robust/sizes.py; --image_size overrides):")
    print(sizes_table(), end="")
    return 0


def check_attacks_main(argv: list[str] | None = None) -> int:
    """Planted-example sanity checks (`attack_checks.py`); exit 1 when an attack finds too few."""
    import argparse

    from .attack_checks import check_attacks, format_checks
    from .results import parse_eps

    p = argparse.ArgumentParser(prog="hf-ssl-robust check-attacks", description=check_attacks.__doc__.split("\n")[0])
    p.add_argument("--encoder", default="shapes-resnet-tiny", help="Frozen encoder the planted heads read (default: the bundled one).")
    p.add_argument("--tasks", nargs="+", default=["classification", "segmentation", "depth"])
    p.add_argument("--attacks", nargs="+", default=["strong"], help="As for `benchmark` (names, apgd:LOSS, strong).")
    p.add_argument("--eps", default="8/255")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--num_images", type=int, default=16)
    p.add_argument("--image_size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    rows = check_attacks(a.encoder, tasks=a.tasks, attacks=a.attacks, eps=parse_eps(a.eps), steps=a.steps,
                         num_images=a.num_images, image_size=a.image_size, seed=a.seed)
    print(format_checks(rows), end="")
    return 0 if all(r["passed"] for r in rows) else 1


def parse_config(config_class, argv: list[str] | None, prog: str):
    """A config dataclass from flags and an optional `--config FILE` (YAML or JSON; flags win)."""
    import argparse
    import json

    from transformers import HfArgumentParser

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, rest = pre.parse_known_args(argv)
    parser = HfArgumentParser(config_class, prog=prog)
    # `--eps -8/255` is a (bad) value, not an option: let the config say what is wrong with it.
    parser._negative_number_matcher = re.compile(r"^-\d+(/\d+)?$|^-\d*\.\d+$")
    rest = _merge_repeated(rest, {f"--{a.dest}" for a in parser._actions if a.nargs in ("+", "*")})
    parser.add_argument("--config", default=None, help="YAML or JSON file of these fields; flags override it.")
    if known.config:
        path = Path(known.config)
        if not path.is_file():
            raise ValueError(f"--config {str(path)!r} does not exist.")
        if path.suffix in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(path.read_text()) or {}
        else:
            values = json.loads(path.read_text())
        unknown = sorted(set(values) - {a.dest for a in parser._actions})
        if unknown:
            raise ValueError(f"Unknown field(s) {unknown} in {str(path)!r}; see `{prog} --help`.")
        parser.set_defaults(**values)
    cfg, *_ = parser.parse_args_into_dataclasses(args=rest, look_for_args_file=False)
    return cfg


def _merge_repeated(argv: list[str], list_flags: set[str]) -> list[str]:
    """`--data_dir a=1 --data_dir b=2` -> `--data_dir a=1 b=2` for list options (argparse keeps the last)."""
    merged: dict[str, list[str]] = {}
    out: list[str] = []
    flag = None
    for token in argv:
        if token in list_flags:
            flag = token
            if flag not in merged:
                merged[flag] = []
                out.append(flag)
            continue
        if token.startswith("--"):
            flag = None
        if flag is not None:
            merged[flag].append(token)
        else:
            out.append(token)
    result: list[str] = []
    for token in out:
        result.append(token)
        if token in merged:
            result.extend(merged[token])
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    handlers = {"benchmark": benchmark_main, "train-head": train_head_main, "deacl": deacl_main, "push": push_main, "info": info_main,
                "check-attacks": check_attacks_main}
    if command not in handlers:
        print(f"Unknown command {command!r}; available: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        return handlers[command](rest)
    except (ValueError, OSError) as err:  # bad input / unavailable model or data: the message says what to do
        if os.environ.get("HF_SSL_ROBUST_TRACEBACK"):
            raise
        print(f"hf-ssl-robust {command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
