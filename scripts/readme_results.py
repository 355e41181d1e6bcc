"""Write README's embedded-default tables from the committed results of the run that made them.

    python scripts/readme_results.py            # rewrite the block in README.md
    python scripts/readme_results.py --check    # exit 1 if README disagrees with the results

The block sits between `<!-- embedded-default-results -->` and `<!-- /embedded-default-results -->`
and holds the tables `hf-ssl-robust benchmark` printed (`results.md`), rendered again from
`docs/embedded_default/results.json` with the run's wall time and machine from `run_info.json`.
`scripts/make_embedded_default.sh` copies both files there after its benchmark step. README's
numbers are never typed: `tests/test_readme.py` fails when they differ from the committed files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hf_ssl_robust.results import load_records, markdown_tables

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "docs" / "embedded_default"
BEGIN, END = "<!-- embedded-default-results -->", "<!-- /embedded-default-results -->"


def render_block(results_dir: Path = RESULTS_DIR) -> str:
    """The README block: the run's measured wall time, then its tables."""
    records = load_records(results_dir / "results.json")
    info_path = results_dir / "run_info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    lines = [BEGIN, ""]
    seconds = info.get("wall_seconds")
    if seconds is not None:
        machine = info.get("machine", {})
        where = f" on {machine['cpu_count']} CPU cores" if machine.get("cpu_count") and info.get("device") == "cpu" else ""
        where = where or (f" on {info['device']}" if info.get("device") else "")
        lines += [f"Measured wall time of this run: **{int(seconds // 60)} min {int(round(seconds % 60))} s**{where} "
                  f"(`docs/embedded_default/run_info.json`).", ""]
    lines += [markdown_tables(records).rstrip(), "", END]
    return "\n".join(lines)


def readme_block(readme: str) -> str:
    """The block as it is in README (markers included); ValueError if the markers are missing."""
    start, stop = readme.find(BEGIN), readme.find(END)
    if start < 0 or stop < start:
        raise ValueError(f"README.md lacks the {BEGIN} ... {END} block that holds the embedded default's tables.")
    return readme[start : stop + len(END)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only compare; exit 1 when README differs")
    p.add_argument("--readme", default=str(REPO / "README.md"))
    p.add_argument("--results_dir", default=str(RESULTS_DIR))
    args = p.parse_args(argv)
    path = Path(args.readme)
    readme = path.read_text()
    current, wanted = readme_block(readme), render_block(Path(args.results_dir))
    if args.check:
        if current != wanted:
            print(f"{path}: the embedded-default tables differ from {args.results_dir}; run python scripts/readme_results.py",
                  file=sys.stderr)
            return 1
        print("README's embedded-default tables match the committed results")
        return 0
    path.write_text(readme.replace(current, wanted))
    print(f"wrote the embedded-default tables into {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
