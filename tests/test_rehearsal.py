"""The pipeline rehearsal (`python -m hf_ssl_robust.rehearsal`, `scripts/gpu_check.sh`): the whole run at
toy sizes on CPU, so the script that a lent GPU runs is known to work before the GPU is there."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest import one_thread  # noqa: E402

from hf_ssl_robust.rehearsal import SMOKE, Rehearsal, main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STEPS = ["env", "benchmark", "resume", "heads_dir", "batch_size_auto", "worst_case", "bf16", "deacl_evolution", "launch_2proc", "calibrate"]
_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


def test_rehearsal__smoke_runs_every_step_on_cpu(tmp_path, capsys):
    out = tmp_path / "rehearsal"
    rc = main(["--smoke", "--out", str(out)])
    printed = capsys.readouterr().out
    report = json.loads((out / "rehearsal.json").read_text())
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == STEPS
    assert rc == 0 and report["failed"] == [], json.dumps(report["steps"], indent=1)
    assert all(steps[n]["status"] == "ok" for n in STEPS[:8])
    assert steps["launch_2proc"]["status"] == "skipped" and "CPU" in steps["launch_2proc"]["detail"]
    assert steps["calibrate"]["status"] in ("ok", "skipped")
    assert "reused 2/2 cells and 2/2 heads" in steps["resume"]["detail"]
    assert "no head trained (2 loaded)" in steps["heads_dir"]["detail"] and "picked batch [" in steps["batch_size_auto"]["detail"]
    assert steps["benchmark"]["command"].startswith("hf-ssl-robust benchmark --encoders shapes-resnet-tiny")
    assert "$OUT/bench" in steps["benchmark"]["command"] and str(out) not in printed.split("| step |")[-1]
    for name in STEPS[1:8]:  # each CLI step kept its log
        assert (out / steps[name]["log"]).read_text()
    table = (out / "rehearsal.md").read_text()
    assert table.count("\n| ") == len(STEPS) + 1 and "| resume | `hf-ssl-robust benchmark" in table and table in printed


def test_rehearsal__a_failing_step_is_reported_and_fails_the_run(tmp_path, capsys):
    r = Rehearsal(tmp_path, SMOKE, inprocess=True)
    step = r.run("benchmark", ["benchmark", "--encoders", str(tmp_path / "no-such-encoder"), "--tasks", "classification"],
                 check=lambda log: "unreachable")
    assert step.status == "FAIL" and step.detail.startswith("exit 2: ") and "$OUT/no-such-encoder" in step.detail
    assert "hf-ssl-robust benchmark: error:" in (tmp_path / step.log).read_text()
    r.run("resume", ["info"], check=lambda log: "listed " + str(log.count("Datasets:")))
    assert [s.status for s in r.steps] == ["FAIL", "ok"] and r.steps[1].detail == "listed 1"
    assert r.write("test") == 1
    assert json.loads((tmp_path / "rehearsal.json").read_text())["failed"] == ["benchmark"]
    assert "| benchmark | `hf-ssl-robust benchmark --encoders $OUT/no-such-encoder" in capsys.readouterr().out


def test_rehearsal__refuses_a_used_output_folder(tmp_path):
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(SystemExit, match="is not empty; the rehearsal must start fresh"):
        main(["--smoke", "--out", str(tmp_path)])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_rehearsal__full_run_needs_cuda(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "r")]) == 2
    assert "no CUDA device; use --smoke" in capsys.readouterr().err


def test_gpu_check__script_is_a_shim_over_the_rehearsal(tmp_path):
    (tmp_path / "old.txt").write_text("x")
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--smoke", "--out", str(tmp_path)], capture_output=True,
                          text=True, env=dict(os.environ, PYTHON=sys.executable), timeout=120)
    assert done.returncode != 0 and "is not empty; the rehearsal must start fresh" in done.stderr
