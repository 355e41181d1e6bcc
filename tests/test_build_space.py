"""scripts/build_space.py: the folder it writes is a complete Space, and the app runs from it alone.

The serving test starts ``python app.py`` in the built folder through
``tests/scripts/run_without_project.py``, which hides the editable install and any checkout on the
path, so the app can only import the package copied into the folder (the test checks where it came
from), then calls its API with ``gradio_client``.
"""

import importlib.metadata as metadata
import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
LAUNCHER = REPO / "tests" / "scripts" / "run_without_project.py"
STARTUP_S = 90  # importing gradio + torch + transformers on a loaded 2-core machine


def load_script():
    spec = importlib.util.spec_from_file_location("build_space", REPO / "scripts" / "build_space.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def build():
    return load_script()


@pytest.fixture(scope="module")
def built(build, tmp_path_factory):
    return build.build_space(tmp_path_factory.mktemp("space") / "out")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pins(folder: Path) -> dict[str, str]:
    lines = (folder / "requirements.txt").read_text().splitlines()
    entries = [line for line in lines if line and not line.startswith(("#", "--"))]
    return {canonicalize_name(e.split("==")[0]): e.split("==")[1] for e in entries}


def test_build_space__files_and_package(built):
    assert {p.name for p in built.iterdir()} == {"app.py", "README.md", "requirements.txt", "hf_ssl_robust", "outputs", "leaderboard"}
    assert (built / "app.py").read_bytes() == (REPO / "space" / "app.py").read_bytes()
    pkg = built / "hf_ssl_robust"
    for name in ("shapes-resnet-tiny", "shapes-resnet-tiny-deacl"):
        assert (pkg / "assets" / name / "model.safetensors").stat().st_size > 10_000
    for name in ("accuracy", "mean_iou", "depth"):
        assert (pkg / "metrics" / name / f"{name}.py").is_file() and (pkg / "metrics" / name / "README.md").is_file()
    templates = sorted(p.name for p in (REPO / "hf_ssl_robust" / "templates").iterdir())
    assert sorted(p.name for p in (pkg / "templates").iterdir()) == templates
    assert not list(pkg.rglob("__pycache__")) and not list(pkg.rglob("*.pyc"))
    assert (built / "outputs" / "embedded_default" / "results.json").read_bytes() == (
        REPO / "docs" / "embedded_default" / "results.json").read_bytes()
    from hf_ssl_robust.sharing import PARQUET_PATH, read_source, run_records

    shipped = sorted((built / "leaderboard").iterdir())
    assert [p.name for p in shipped] == ["0-embedded_default", "1-strength"]  # results datasets for the Leaderboard tab
    for folder, run in zip(shipped, ("embedded_default", "strength")):
        assert (folder / PARQUET_PATH).is_file() and (folder / "README.md").is_file()
        assert read_source(folder) == run_records(REPO / "docs" / run)


def test_build_space__requirements_pinned_to_this_environment(built, build):
    text = (built / "requirements.txt").read_text()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in text.splitlines()
    pinned = pins(built)
    assert pinned["torch"] == metadata.version("torch").split("+")[0] + "+cpu"
    for name, version in pinned.items():
        if name != "torch":
            assert version == metadata.version(name), name
    assert "torchvision" not in pinned and "gradio" not in pinned  # gradio comes from sdk_version
    # every third-party module the copied code imports is provided by a pinned distribution
    owners = metadata.packages_distributions()
    code = [built / "app.py", *(built / "hf_ssl_robust").rglob("*.py")]
    for module in build.third_party_imports(code):
        if module == "gradio":
            continue
        assert {canonicalize_name(d) for d in owners[module]} & set(pinned), module
    assert {"torch", "transformers", "evaluate", "datasets", "accelerate", "pandas", "matplotlib"} <= set(pinned)


def test_build_space__torch_is_pinned_to_its_cpu_build(build, monkeypatch):
    real = metadata.version
    monkeypatch.setattr(build.metadata, "version", lambda d: "2.99.1" if canonicalize_name(d) == "torch" else real(d))
    lines = build.pinned_requirements([REPO / "space" / "app.py"])
    assert "torch==2.99.1+cpu" in lines  # a plain build installed here still pins the CPU wheel


def test_build_space__readme_is_a_space_card(built):
    from huggingface_hub import SpaceCard

    card = SpaceCard.load(built / "README.md")
    assert card.data.sdk == "gradio" and card.data.sdk_version == metadata.version("gradio")
    assert card.data.app_file == "app.py" and card.data.title == "SSL Encoder Robustness"
    assert card.data.python_version == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert "# Adversarial robustness of self-supervised encoders" in card.text


def test_build_space__refusals(build, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(ValueError, match="is not empty; pass --overwrite"):
        build.build_space(out)
    build.build_space(out, results=[], leaderboard=[], overwrite=True)
    assert (out / "mine.txt").read_text() == "keep me" and not (out / "outputs").exists() and not (out / "leaderboard").exists()
    heads = tmp_path / "heads" / "shapes-resnet-tiny-shapes-depth"
    heads.mkdir(parents=True)
    (heads / "config.json").write_text("{}")
    build.build_space(out, results=[], leaderboard=[], heads_dir=heads.parent, overwrite=True)  # where the app looks first
    assert (out / "outputs" / "benchmark" / "heads" / heads.name / "config.json").is_file()
    with pytest.raises(ValueError, match="does not exist"):
        build.build_space(tmp_path / "other", results=[tmp_path / "missing.json"])
    with pytest.raises(ValueError, match="neither a run folder, a results dataset folder nor a Hub dataset id"):
        build.build_space(tmp_path / "other", results=[], leaderboard=[str(tmp_path / "no-such-run")])
    assert not (tmp_path / "other").exists()  # refused before anything was written
    monkeypatch.setattr(build.metadata, "packages_distributions", lambda: {"torchvision": ["torchvision"]})
    probe = tmp_path / "probe.py"
    probe.write_text("import torchvision\n")
    with pytest.raises(ValueError, match="must not depend on torchvision"):
        build.pinned_requirements([probe])


def wait_for_port(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the app exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the app did not listen on {port} within {STARTUP_S} s:\n{log.read_text()[-3000:]}")


def test_built_space__serves_from_its_folder_alone(built, tmp_path):
    gradio_client = pytest.importorskip("gradio_client", reason="the Space needs `pip install hf-ssl-robust[space]`")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    # Control: with the launcher's hiding, a folder without the package cannot import it at all.
    (tmp_path / "empty.py").write_text("")
    probe = subprocess.run([sys.executable, str(LAUNCHER), "empty.py"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=60)
    assert probe.stdout.splitlines()[0] == "hf_ssl_robust: not importable", probe.stderr
    port, cache, log = free_port(), tmp_path / "cache", tmp_path / "app.log"
    args = ["--port", str(port), "--cache_dir", str(cache), "--train_samples", "32", "--train_epochs", "1"]
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(LAUNCHER), "app.py", *args], cwd=built, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc, log)
        origin = log.read_text().splitlines()[0]
        assert origin == f"hf_ssl_robust: {built / 'hf_ssl_robust' / '__init__.py'}", origin
        client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
        summary, board, tables, _ = client.predict("outputs/embedded_default/results.json", None, api_name="/results")
        assert "shapes-resnet-tiny" in summary and "Table 1" in tables and board["data"]
        scene = gradio_client.handle_file(str(cache / "examples" / "shapesworld_0.png"))
        status, clean, adv, *_, metrics, _ = client.predict("shapes-resnet-tiny", "classification", "embed", 8, 2, 64,
                                                            scene, api_name="/attack")
        assert "shapes-resnet-tiny" in status and metrics["attack"] == "embed" and metrics["linf_255"] <= 8 + 1e-3
        assert len(clean["confidences"]) == 5 and adv["label"] == metrics["adv_top1"]
        boards = client.predict("all", "all", "all", "all", "rank", False, api_name="/leaderboard")  # from leaderboard/ alone
        assert len(boards) == 12 and {b["protocol"]["num_samples"] for b in boards} == {128, 256}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
