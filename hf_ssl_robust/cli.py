"""`hf-ssl-robust` command line: thin entry points over importable functions.

    hf-ssl-robust benchmark [--encoders ..] [--tasks ..] [--datasets ..] [--attacks ..] [--eps 8/255 ..]
    hf-ssl-robust train-head --task segmentation --encoder ./enc --dataset shapes
    hf-ssl-robust deacl --encoder ./enc --dataset shapes --max_steps 200
    hf-ssl-robust push FOLDER REPO_ID [--results results.json] [--dry_run]
    hf-ssl-robust results push RUN_DIR (--repo_id USER/NAME [--private] | --to PATH)
    hf-ssl-robust leaderboard SOURCE... [--output_dir DIR]
    hf-ssl-robust plan ENCODER [--attacks paper|strong] [--gpu h100] [--num_processes N] [--mixed_precision bf16] [--deacl]
    hf-ssl-robust plan --calibrate OUT.json      (time real passes on this device, per family and precision)
    hf-ssl-robust info
    hf-ssl-robust check-attacks [--encoder shapes-resnet-tiny] [--tasks ..] [--attacks strong] [--eps 8/255] [--steps 20]
    hf-ssl-robust --version

`hf-ssl-robust COMMAND --help` lists a command's options. Bad input gets one line on stderr and exit
code 2 (set HF_SSL_ROBUST_TRACEBACK=1 for the full traceback). torch and transformers are imported only
once a command runs, so this help and `--version` answer at once.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

COMMANDS = ("benchmark", "train-head", "deacl", "push", "results", "leaderboard", "plan", "check-attacks", "info")


def benchmark_main(argv: list[str] | None = None) -> int:
    from .configs import BenchmarkConfig

    device_flags, argv = _dry_run_device_flags(argv)
    cfg = parse_config(BenchmarkConfig, argv, "hf-ssl-robust benchmark")  # torch-free: --help and bad input answer at once
    if cfg.dry_run:
        from .planning import estimate_time, format_plan, plan_benchmark
        from .validation import cells

        rows = estimate_time(plan_benchmark(cfg), device_flags.gpu, device_flags.num_processes, device_flags.calibration)
        print(format_plan(rows, cells(cfg)[1]), end="")
        return 0
    if device_flags.given:
        raise ValueError("--gpu, --num_processes and --calibration only apply to --dry_run (the time estimate); "
                         "a real run uses the devices `accelerate launch` gives it.")
    from .benchmark import run_benchmark
    from .precision import make_accelerator
    from .results import markdown_tables

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
        reuse = cells_reuse_line(out / "run_info.json")
        if reuse:
            print(reuse)
        print(f"Wrote {out / 'results.json'}, results.csv, results.md, robustness_curves.png and example figures to {out}/")
    return 0


def cells_reuse_line(run_info: Path) -> str | None:
    """"N cell(s) reused from an earlier run, M computed" from `run_info.json` (None if it does not say)."""
    import json

    try:
        info = json.loads(run_info.read_text())
    except (OSError, ValueError):
        return None
    if "cells_reused" not in info or "cells_computed" not in info:
        return None
    return (f"{info['cells_reused']} cell(s) reused from {run_info.parent / 'cells'}, {info['cells_computed']} computed"
            + (" (nothing new: every cell was already done)" if not info["cells_computed"] else ""))


def train_head_main(argv: list[str] | None = None) -> int:
    from .configs import TrainHeadConfig

    cfg = parse_config(TrainHeadConfig, argv, "hf-ssl-robust train-head")
    if not cfg.encoder:
        raise ValueError("train-head needs --encoder (a preset, Hub id, bundled name or local folder; see `hf-ssl-robust info`).")
    from .results import display_name
    from .training import train_head

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
    from .configs import DeACLConfig

    cfg = parse_config(DeACLConfig, argv, "hf-ssl-robust deacl")
    from accelerate import DistributedDataParallelKwargs

    from .defenses import train_deacl
    from .precision import make_accelerator

    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)  # DINOv2's mask token gets no gradient
    accelerator = make_accelerator(cfg.mixed_precision, kwargs_handlers=[ddp])
    eval_fn = None
    if cfg.eval_every:
        from .evolution import make_evolution_eval

        eval_fn = make_evolution_eval(tasks=cfg.eval_tasks, num_train_samples=cfg.eval_train_samples, max_eval_samples=cfg.eval_samples,
                                      seed=cfg.seed)  # a small ShapesWorld benchmark on each evaluated step
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
    parser.add_argument("--private", action="store_true", help="Create the Hub repository as private.")
    parser.add_argument("--results_dataset", default=None, help="Hub dataset of these results (`results push`), linked from the card.")
    parser.add_argument("--keep_card", action="store_true", help="Keep an existing README.md instead of rendering one.")
    parser.add_argument("--dry_run", action="store_true", help="Only write README.md next to the weights.")
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    if args.dry_run:
        print(f"Wrote {write_card(folder, args.results, repo_id=args.repo_id, results_dataset=args.results_dataset)}")
        return 0
    push = push_head if (folder / "train_metrics.json").is_file() else push_encoder
    print(f"Pushed to {push(folder, args.repo_id, records=args.results, private=args.private, overwrite_card=not args.keep_card, results_dataset=args.results_dataset)}")
    return 0


def results_main(argv: list[str] | None = None) -> int:
    import argparse

    from .sharing import push_results, run_records, write_results_dataset

    parser = argparse.ArgumentParser(prog="hf-ssl-robust results", description="Share a benchmark run as a results dataset.")
    sub = parser.add_subparsers(dest="action", required=True)
    push = sub.add_parser("push", help="Parquet records with provenance + a dataset card, to the Hub or a local folder.")
    push.add_argument("run_dir", help="A benchmark output_dir (results.json + run_info.json) or a bench_strength.py one.")
    where = push.add_mutually_exclusive_group(required=True)
    where.add_argument("--repo_id", help="Hub dataset repository, e.g. me/dino-robustness (created if needed).")
    where.add_argument("--to", help="Write the dataset folder here instead (offline).")
    push.add_argument("--private", action="store_true", help="Create the Hub repository as private.")
    args = parser.parse_args(argv)
    if args.to:
        rows = run_records(args.run_dir)
        out = write_results_dataset(rows, args.to)
        print(f"Wrote {len(rows)} records to {out}/data/results.parquet and the card {out}/README.md "
              f"(read back with datasets.load_dataset({str(out)!r}))")
        return 0
    print(f"Pushed to {push_results(args.run_dir, args.repo_id, private=args.private)}")
    return 0


def leaderboard_main(argv: list[str] | None = None) -> int:
    import argparse

    from .leaderboard import boards_markdown, build_boards, load_sources, write_leaderboard

    parser = argparse.ArgumentParser(prog="hf-ssl-robust leaderboard",
                                     description="Rank encoders per task x dataset x threat model over many results.")
    parser.add_argument("sources", nargs="+", help="Run folders, results dataset folders (results push --to) or Hub dataset ids.")
    parser.add_argument("--output_dir", default="outputs/leaderboard", help="Where leaderboard.md, .csv and .json go.")
    args = parser.parse_args(argv)
    rows, _ = load_sources(args.sources)
    boards = build_boards(rows)
    print(boards_markdown(boards), end="")
    written = write_leaderboard(boards, args.output_dir)
    print(f"{len(boards)} boards from {len(rows)} records; wrote " + ", ".join(str(p) for p in written))
    return 0


def _device_options(parser) -> None:
    parser.add_argument("--gpu", default="h100", help="Device to estimate the time on: h100, h100-pcie, h200, a100, l4 or cpu.")
    parser.add_argument("--num_processes", type=int, default=1, help="Processes (devices) the run is split over.")
    parser.add_argument("--calibration", nargs="*", default=[], help="Calibration JSON files (from `plan --calibrate`) "
                        "besides the committed ones in hf_ssl_robust/calibration/.")


def _dry_run_device_flags(argv: list[str] | None):
    """`--gpu`, `--num_processes` and `--calibration` of `benchmark --dry_run` (not run settings: kept out of the config).

    Returns the flags (defaults filled in, `.given` says whether any was passed) and the other arguments."""
    import argparse

    parser = argparse.ArgumentParser(add_help=False)
    _device_options(parser)
    parser.set_defaults(gpu=None, num_processes=None, calibration=None)
    flags, rest = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    flags.given = any(v is not None for v in (flags.gpu, flags.num_processes, flags.calibration))
    flags.gpu, flags.num_processes, flags.calibration = flags.gpu or "h100", flags.num_processes or 1, flags.calibration or []
    return flags, rest


def plan_main(argv: list[str] | None = None) -> int:
    """`hf-ssl-robust plan`: the paper's grid for an encoder with its cost, or `--calibrate` a device."""
    import argparse
    import json
    import time

    parser = argparse.ArgumentParser(prog="hf-ssl-robust plan", description="What the paper's grid (3 tasks, 7 datasets, "
                                     "ε 2/255 4/255 8/255) costs for an encoder, in FLOPs and device-hours.")
    parser.add_argument("encoder", nargs="?", help="Preset, Hub id (cached) or folder.")
    parser.add_argument("--attacks", default="paper", help="paper (EmbedAttack + each task's PGD) or strong (+ APGD, worst case).")
    parser.add_argument("--mixed_precision", default="no", choices=["no", "bf16", "fp16"], help="Precision the run would use.")
    parser.add_argument("--batch_size", default=None, help="Evaluation / attack batch (memory column; default 32); "
                        "with --calibrate the timed batch (default 32 on a GPU, 2 on a CPU).")
    _device_options(parser)
    parser.add_argument("--deacl", action="store_true", help="Also cost the paper's DeACL run of this encoder (ImageNet-1k, 100 epochs, 224²).")
    parser.add_argument("--calibrate", metavar="OUT", help="Instead: time real passes on this device and write a calibration JSON.")
    parser.add_argument("--encoders", nargs="*", default=None, help="--calibrate: encoders to time (default one preset per family).")
    parser.add_argument("--precisions", nargs="*", default=None, help="--calibrate: no and/or bf16 (default both on a GPU).")
    parser.add_argument("--max_side", type=int, default=None, help="--calibrate: cap on the input side (default 224 on a CPU).")
    parser.add_argument("--repeats", type=int, default=3, help="--calibrate: timed repetitions per pass (median).")
    parser.add_argument("--cpu_time", action="store_true", help="--calibrate on a CPU: time CPU seconds, not wall seconds "
                        "(on a shared machine; with OMP_NUM_THREADS=1 it is the wall time of a quiet core).")
    args = parser.parse_args(argv)
    if args.calibrate:
        from .throughput import calibrate

        out = Path(args.calibrate)
        result = calibrate(args.encoders, args.precisions, batch_size=int(args.batch_size) if args.batch_size else None,
                           max_side=args.max_side, repeats=args.repeats, log=print,
                           clock=time.process_time if args.cpu_time else time.perf_counter)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"Wrote {out} ({result['device']}, {len(result['measurements'])} measurements); commit it to "
              "hf_ssl_robust/calibration/ or pass it with --calibration.")
        return 0
    if not args.encoder:
        raise ValueError("plan needs an ENCODER (e.g. `hf-ssl-robust plan dinov2-small`) or --calibrate OUT.")
    from .planning import device_hours_at, estimate_time, format_grid_plan, plan_paper_grid
    from .throughput import precision_key

    rows = estimate_time(plan_paper_grid(args.encoder, args.attacks, args.mixed_precision, args.batch_size or "32"), args.gpu,
                         args.num_processes, args.calibration)
    print(format_grid_plan(rows), end="")
    if rows[0]["gpu"] != "cpu":
        other = "fp32" if precision_key(args.mixed_precision) == "bf16" else "bf16"
        hours, _ = device_hours_at(rows, other, args.calibration)
        flag = "--mixed_precision no" if other == "fp32" else "--mixed_precision bf16"
        print(f"With {flag}: ≈ {hours:.1f} {rows[0]['gpu'].upper()}-hours ({other} peak).")
    if args.deacl:
        from .planning import format_deacl_plan, plan_deacl

        print(format_deacl_plan(plan_deacl(args.encoder, mixed_precision=args.mixed_precision), args.gpu, args.num_processes,
                                args.calibration), end="")
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

    from .arguments import config_parser, parse_into

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, rest = pre.parse_known_args(argv)
    parser = config_parser(config_class, prog)  # HfArgumentParser's options, without importing transformers
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
    return parse_into(parser, config_class, rest)


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


def version() -> str:
    from . import __version__

    return f"hf-ssl-robust {__version__}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        print(version())
        return 0
    command, rest = argv[0], argv[1:]
    if os.environ.get("HF_SSL_ROBUST_LOG_LEVEL"):  # e.g. INFO: show the library's progress lines (heads loaded, batch size...)
        import logging

        logging.basicConfig(level=os.environ["HF_SSL_ROBUST_LOG_LEVEL"].upper(), format="%(levelname)s %(name)s: %(message)s")
    handlers = {"benchmark": benchmark_main, "train-head": train_head_main, "deacl": deacl_main, "push": push_main, "results": results_main,
                "leaderboard": leaderboard_main, "plan": plan_main, "check-attacks": check_attacks_main,
                "info": info_main}
    if command not in handlers:
        from .suggestions import did_you_mean

        print(f"hf-ssl-robust: error: unknown command {command!r}{did_you_mean(command, COMMANDS)}; "
              f"available: {', '.join(COMMANDS)} (see `hf-ssl-robust --help`).", file=sys.stderr)
        return 2
    try:
        code = handlers[command](rest)
        close_process_group()
        return code
    except (ValueError, OSError) as err:  # bad input / unavailable model or data: the message says what to do
        if os.environ.get("HF_SSL_ROBUST_TRACEBACK"):
            raise
        print(f"hf-ssl-robust {command}: error: {err}", file=sys.stderr)
        return 2


def close_process_group() -> None:
    """End a multi-process run (`accelerate launch`) cleanly: wait until every process is done, then
    destroy the process group. Left to interpreter exit, the group's threads can abort a finished process
    ("terminate called without an active exception", exit code -6), which fails the whole launch.
    Nothing happens in a single-process run, and torch is never imported here."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return
    dist.barrier()
    dist.destroy_process_group()


def run_script(command: str) -> None:
    """Entry of `scripts/<command>.py` (e.g. under `accelerate launch`): the same errors and exit codes as the CLI."""
    sys.exit(main([command, *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
