"""`hf-ssl-robust` command line: thin entry points over importable functions."""

from __future__ import annotations

import argparse
import sys


def _info(args: argparse.Namespace) -> int:
    from .encoders import PRESETS, bundled_encoders

    print("Encoder presets:")
    for name, hub_id in sorted(PRESETS.items()):
        print(f"  {name:<20} {hub_id}")
    bundled = bundled_encoders()
    print("Bundled encoders:" + ("" if bundled else " (none)"))
    for name, path in bundled.items():
        print(f"  {name:<20} {path}")
    try:
        from .data import DATASETS
    except ImportError:
        DATASETS = {}
    if DATASETS:
        print("Datasets:")
        for name, spec in sorted(DATASETS.items()):
            print(f"  {name:<20} {getattr(spec, 'description', '')}")
    try:
        from .attacks import ATTACKS
    except ImportError:
        ATTACKS = {}
    if ATTACKS:
        print("Attacks: " + ", ".join(sorted(ATTACKS)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-ssl-robust", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="List encoder presets, bundled encoders, datasets and attacks.")
    info.set_defaults(func=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
