"""The pretraining curve of an encoder made by `scripts/pretrain_tiny.py --arch resnet`.

Reads its `training_log.jsonl` (probe lines: minutes, step, scenes, frozen-probe accuracy, patch mIoU and
depth RMSE), prints them as a Markdown table and plots them:

    python scripts/plot_pretraining.py outputs/embedded/shapes-resnet-tiny/training_log.jsonl \
        --output docs/embedded_default_pretraining.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_probes(path: str | Path) -> list[dict]:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [r for r in rows if "probe_accuracy" in r]


def markdown(probes: list[dict]) -> str:
    lines = ["| minutes | step | scene pairs | probe accuracy | patch mIoU | depth RMSE (m) |", "|---|---|---|---|---|---|"]
    for r in probes:
        lines.append(f"| {r['minutes']:.1f} | {r['step']} | {r['scenes']} | {r['probe_accuracy']:.3f} | "
                     f"{r['probe_miou']:.3f} | {r['probe_depth_rmse']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("log", help="training_log.jsonl of scripts/pretrain_tiny.py")
    p.add_argument("--output", default=None, help="PNG to write")
    args = p.parse_args(argv)
    probes = read_probes(args.log)
    if not probes:
        raise SystemExit(f"{args.log} has no probe lines; run pretrain_tiny.py with --probe_every_minutes > 0.")
    print(markdown(probes))
    if args.output:
        import matplotlib.pyplot as plt

        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
        minutes = [r["minutes"] for r in probes]
        left.plot(minutes, [r["probe_accuracy"] for r in probes], "o-", label="linear probe accuracy")
        left.plot(minutes, [r["probe_miou"] for r in probes], "s-", label="patch mIoU")
        left.set(xlabel="pretraining minutes (2 CPU cores)", ylim=(0, 1), title="frozen probes, 256 test scenes")
        left.legend(loc="lower right")
        right.plot(minutes, [r["probe_depth_rmse"] for r in probes], "o-", color="tab:green")
        right.set(xlabel="pretraining minutes (2 CPU cores)", ylabel="m", title="depth RMSE (lower is better)")
        fig.tight_layout()
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.output, dpi=110)
    return probes


if __name__ == "__main__":
    main()
