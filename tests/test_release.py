"""The package as released: a wheel built from the sources installs into a fresh virtual environment and
runs from there, with its bundled encoders, card templates and metric scripts.

How: `pip wheel --no-deps` (no build isolation when this environment's setuptools builds wheels itself,
so no registry is needed) on a copy of what the sdist holds; `python -m venv` (with its own pip), the
wheel installed there with `--no-deps --no-index`. The dependencies (torch, transformers, ...) are not
reinstalled: a path file in the new environment lists this environment's site-packages as plain paths,
which makes them importable without running their `.pth` files, so the development install of
hf_ssl_robust (an editable finder) stays invisible and every import below comes from the wheel (checked).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SDIST_PARTS = ("pyproject.toml", "README.md", "CHANGELOG.md", "hf_ssl_robust")


def _run(cmd: list[str], env: dict | None = None, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def _setuptools_builds_wheels() -> bool:
    try:
        version = tuple(int(p) for p in metadata.version("setuptools").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return False
    return version >= (70, 1)  # bdist_wheel built in; pyproject asks for >= 69 (+ wheel)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("release")
    project = root / "project"  # not "src": setuptools would read that as a src-layout folder
    project.mkdir()
    for part in SDIST_PARTS:
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, project / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, project / part)
    isolation = ["--no-build-isolation"] if _setuptools_builds_wheels() else []  # else pip fetches setuptools from the registry
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *isolation, "-w", str(root / "dist"), str(project)])
    (built,) = (root / "dist").glob("hf_ssl_robust-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> tuple[Path, dict]:
    prefix = tmp_path_factory.mktemp("venv") / "env"
    _run([sys.executable, "-m", "venv", str(prefix)])
    python = prefix / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_deps_from_the_test_environment.pth").write_text("".join(f"{p}\n" for p in sorted(here)))
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)])
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", MPLBACKEND="Agg", PATH=f"{prefix / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    return prefix, env


def test_wheel__metadata_has_urls_readme_and_the_package_data(wheel):
    import zipfile

    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        meta = whl.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "Project-URL: Repository, https://" in meta and "Description-Content-Type: text/markdown" in meta
    for name in ("templates/encoder_card.md", "templates/head_card.md", "metrics/accuracy/accuracy.py", "metrics/mean_iou/README.md",
                 "assets/shapes-resnet-tiny/model.safetensors", "assets/shapes-resnet-tiny-deacl/README.md"):  # fmt: skip
        assert f"hf_ssl_robust/{name}" in names, name


def test_wheel__installs_in_a_fresh_venv_and_runs_from_there(venv, tmp_path):
    prefix, env = venv
    version = _run([str(prefix / "bin" / "hf-ssl-robust"), "--version"], env=env, cwd=tmp_path).stdout.strip()
    assert version == f"hf-ssl-robust {metadata.version('hf-ssl-robust')}"
    info = _run([str(prefix / "bin" / "hf-ssl-robust"), "info"], env=env, cwd=tmp_path).stdout
    assert "shapes-resnet-tiny" in info and str(prefix) in info  # the bundled encoders, from the installed copy

    check = f"""
import json, torch, hf_ssl_robust
from hf_ssl_robust import hub, load_encoder
from hf_ssl_robust.encoders import bundled_encoders
from hf_ssl_robust.metrics import load_metric
assert hf_ssl_robust.__file__.startswith({str(prefix)!r}), hf_ssl_robust.__file__
out = load_encoder("shapes-resnet-tiny")(torch.rand(1, 3, 64, 64))
card = str(hub.render_encoder_card(bundled_encoders()["shapes-resnet-tiny"], repo_id="hf-ssl-robust/shapes-resnet-tiny",
                                   bundled_name="shapes-resnet-tiny"))
print(json.dumps({{"cls": list(out.cls.shape), "card": 'load_encoder("shapes-resnet-tiny")' in card,
                  "accuracy": load_metric("accuracy").compute(predictions=[0, 1], references=[0, 0])["accuracy"]}}))
"""
    result = json.loads(_run([str(prefix / "bin" / "python"), "-c", check], env=env, cwd=tmp_path).stdout.strip().splitlines()[-1])
    assert result == {"cls": [1, 128], "card": True, "accuracy": 0.5}


def test_wheel__a_real_benchmark_runs_from_the_installed_command(venv, tmp_path):
    """README's first command at toy size (one task, one attack, one step, a few scenes)."""
    prefix, env = venv
    out = _run([str(prefix / "bin" / "hf-ssl-robust"), "benchmark", "--encoders", "shapes-resnet-tiny", "--tasks", "classification",
                "--attacks", "embed", "--steps", "1", "--num_train_samples", "32", "--max_eval_samples", "8", "--head_epochs", "1",
                "--num_examples", "0", "--output_dir", str(tmp_path / "run")], env=dict(env, OMP_NUM_THREADS="1"), cwd=tmp_path)  # fmt: skip
    records = json.loads((tmp_path / "run" / "results.json").read_text())
    assert {r["attack"] for r in records if r["encoder"] != "prior"} >= {"none", "embed"}
    assert "Table 1" in out.stdout or "accuracy" in out.stdout


def test_wheel__twine_check_passes(wheel):
    twine = shutil.which("twine")
    if twine is None:
        pytest.skip("twine is not installed here (pip install twine): the metadata check did not run")
    out = _run([twine, "check", "--strict", str(wheel)])
    assert "PASSED" in out.stdout
