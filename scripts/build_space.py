"""Write a self-contained Hugging Face Space folder: the app, the package, pinned requirements, the header.

    python scripts/build_space.py OUT [--results FILE ...] [--leaderboard SOURCE ...] [--heads_dir DIR] [--overwrite]
    hf repos create <user>/<space> --repo-type space --space-sdk gradio   # once
    hf upload <user>/<space> OUT . --repo-type space

OUT then holds everything the Space runs, with nothing to install from this repository:

* ``app.py``: ``space/app.py`` as it is;
* ``hf_ssl_robust/``: the package (code, bundled encoders, `evaluate` modules and their cards,
  card templates), without caches; ``python app.py`` imports it from the folder it sits in;
* ``requirements.txt``: every distribution that the app and the package import or declare, pinned
  to the version installed here; torch as its CPU build (from PyTorch's CPU index), never
  torchvision; gradio is left to ``sdk_version``, which Spaces install themselves;
* ``README.md``: ``space/README.md`` with its YAML header set to this environment (``sdk: gradio``,
  ``sdk_version`` = the installed gradio, ``python_version``, ``app_file: app.py``);
* ``outputs/``: results files for the Results tab (default: the embedded default's committed run)
  and, with ``--heads_dir``, trained heads, so the Space does not train them on its first request;
* ``leaderboard/``: one results dataset (``hf-ssl-robust results push --to``) per source of the
  Leaderboard tab (default: the committed embedded-default and strength runs), validated and with
  the encoders' fingerprints derived here, where their weights are; the app reads them when
  ``SPACE_LEADERBOARD_SOURCES`` is unset.
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata as metadata
import shutil
import sys
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "hf_ssl_robust"
DEFAULT_RESULTS = [ROOT / "docs" / "embedded_default" / "results.json"]
DEFAULT_LEADERBOARD = [ROOT / "docs" / "embedded_default", ROOT / "docs" / "strength"]
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
NOT_PINNED = {"gradio": "pinned by sdk_version in README.md; Spaces install it themselves"}
FORBIDDEN = {"torchvision": "it has no CPU build here and breaks transformers' image processors"}
WRITTEN = ("app.py", "README.md", "requirements.txt", PACKAGE, "outputs", "leaderboard")


def third_party_imports(files: list[Path]) -> set[str]:
    """Top-level modules imported by ``files`` that are neither the standard library nor the package."""
    names = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != PACKAGE}


def declared_requirements() -> set[str]:
    """Distribution names the installed package declares: its dependencies and its ``space`` extra."""
    names = set()
    for spec in metadata.requires("hf_ssl_robust") or []:
        req = Requirement(spec)
        if req.marker is None or req.marker.evaluate({"extra": "space"}):
            names.add(req.name)
    return names


def pinned_requirements(files: list[Path]) -> list[str]:
    """``requirements.txt`` lines: every needed distribution at its installed version.

    Raises:
        ValueError: a needed distribution is not installed here, or is one the Space must not use.
    """
    owners = metadata.packages_distributions()
    dists = set(declared_requirements())
    for module in sorted(third_party_imports(files)):
        if module not in owners:
            raise ValueError(f"The app imports {module!r}, which no installed distribution provides: install it first.")
        dists.update(owners[module])
    pins, missing = {}, []
    for dist in dists:
        key = canonicalize_name(dist)
        if key in FORBIDDEN:
            raise ValueError(f"The Space must not depend on {dist} ({FORBIDDEN[key]}); remove the import.")
        if key in NOT_PINNED:
            continue
        try:
            pins[key] = (metadata.metadata(dist)["Name"], metadata.version(dist))
        except metadata.PackageNotFoundError:
            missing.append(dist)
    if missing:
        raise ValueError(f"Not installed here, so no version to pin: {sorted(missing)}. `pip install -e '.[space]'` first.")
    lines = []
    for key, (name, version) in sorted(pins.items()):
        if key == "torch":  # the CPU build: PyPI's default Linux wheel pulls gigabytes of CUDA
            version = version.split("+")[0] + "+cpu"
        lines.append(f"{name}=={version}")
    return lines


def space_readme(source: Path, gradio_version: str) -> str:
    """``source`` (a README with a YAML header) with the Space fields set for this environment."""
    text = source.read_text()
    if not text.startswith("---\n") or "\n---\n" not in text[4:]:
        raise ValueError(f"{source} must start with a YAML header between '---' lines (the Space config).")
    header, body = text[4:].split("\n---\n", 1)
    meta = yaml.safe_load(header) or {}
    meta.update(sdk="gradio", sdk_version=gradio_version, app_file="app.py",
                python_version=f"{sys.version_info.major}.{sys.version_info.minor}")
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n" + body


def build_space(out: Path, results: list[Path] = DEFAULT_RESULTS, heads_dir: Path | None = None,
                overwrite: bool = False, leaderboard: list = DEFAULT_LEADERBOARD) -> Path:
    """Write the Space folder ``out`` (see the module docstring) and return it."""
    from hf_ssl_robust.sharing import read_source, write_results_dataset

    out = Path(out)
    sources = [Path(p) for p in results]
    boards = [(str(s), read_source(s)) for s in leaderboard]  # validated before anything is written
    for path in sources + ([Path(heads_dir)] if heads_dir else []):
        if not path.exists():
            raise ValueError(f"{path} does not exist.")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ValueError(f"{out} is not empty; pass --overwrite to replace what this script writes there.")
        for name in WRITTEN:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / "space" / "app.py", out / "app.py")
    shutil.copytree(ROOT / PACKAGE, out / PACKAGE, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    code = [out / "app.py", *sorted((out / PACKAGE).rglob("*.py"))]
    lines = ["# Written by scripts/build_space.py from the environment it ran in.",
             f"# gradio is not listed: {NOT_PINNED['gradio']}.", f"--extra-index-url {TORCH_CPU_INDEX}",
             *pinned_requirements(code)]
    (out / "requirements.txt").write_text("\n".join(lines) + "\n")
    (out / "README.md").write_text(space_readme(ROOT / "space" / "README.md", metadata.version("gradio")))
    for i, path in enumerate(sources):  # the app lists outputs/**/results.json in its Results tab
        target = out / "outputs" / (path.parent.name if len(sources) == 1 else f"{i}-{path.parent.name}") / "results.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    for i, (source, rows) in enumerate(boards):  # the app's Leaderboard tab reads leaderboard/*
        name = f"{i}-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(source.rstrip("/")).name)
        write_results_dataset(rows, out / "leaderboard" / name)
    if heads_dir:  # where the app looks for heads before training its own
        shutil.copytree(heads_dir, out / "outputs" / "benchmark" / "heads", dirs_exist_ok=True)
    return out


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="folder to write (empty or new)")
    p.add_argument("--results", nargs="*", type=Path, default=DEFAULT_RESULTS,
                   help="results.json files for the Results tab (default: the embedded default's run; none: no files)")
    p.add_argument("--leaderboard", nargs="*", default=[str(p) for p in DEFAULT_LEADERBOARD],
                   help="run folders, results datasets or Hub dataset ids for the Leaderboard tab (default: the committed "
                        "embedded-default and strength runs; none: an empty tab unless SPACE_LEADERBOARD_SOURCES is set)")
    p.add_argument("--heads_dir", type=Path, default=None,
                   help="trained heads <encoder>-shapes-<task> (e.g. outputs/benchmark/heads) to ship with the Space")
    p.add_argument("--overwrite", action="store_true", help="replace the entries this script writes in a non-empty OUT")
    args = p.parse_args(argv)
    try:
        out = build_space(args.out, results=args.results, heads_dir=args.heads_dir, overwrite=args.overwrite,
                          leaderboard=args.leaderboard)
    except ValueError as err:
        p.error(str(err))
    print(f"Space folder written to {out}; upload it with `hf upload <user>/<space> {out} . --repo-type space`")
    return out


if __name__ == "__main__":
    main()
