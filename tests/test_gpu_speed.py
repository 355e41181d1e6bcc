"""scripts/gpu_speed.sh --dry_run: every section of the GPU run, at tiny sizes on CPU, so the
script is ready for the next GPU. Timings are never asserted, only that each section ran and
reported what the GPU table needs."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_speed__dry_run_runs_every_section_on_cpu(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, OUT="")
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu_speed.sh"), "--dry_run", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    status = (tmp_path / "status.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in status] == ["env", "tests", "vits14_518", "vitb16_224", "vits14_518_compile", "vitb16_224_compile"]
    assert all("rc=0," in line for line in status)
    assert "test_precision.py" in (tmp_path / "tests.log").read_text()  # the test selection exists

    eager = json.loads((tmp_path / "vitb16_224.json").read_text())
    variants = [(r["attack"], r["amp"], r["compile"]) for r in eager["attacks"]]
    assert variants == [("embed", "none", False), ("pgd", "none", False), ("embed", "bf16", False), ("pgd", "bf16", False)]
    for row in eager["attacks"]:
        assert row["ms_per_image"] > 0 and row["ratio"] > 0 and row["tflops_ours"] > 0
        assert row["check_ours"] == {"dtype": "torch.float32", "within_eps": True, "in_unit_box": True, "finite": True}
    assert set(eager["auto_batch_size"]) == {"none", "bf16"} and all(b >= 1 for b in eager["auto_batch_size"].values())
    assert set(eager["profile"]) == {"fp32", "bf16"} and "aten::" in eager["profile"]["bf16"]
    assert [d["amp"] for d in eager["deacl"]] == ["none", "bf16"] and all(d["step_ms"] > 0 for d in eager["deacl"])
    compiled = json.loads((tmp_path / "vits14_518_compile.json").read_text())
    assert {(r["amp"], r["compile"]) for r in compiled["attacks"]} == {("bf16", True)}

    table = (tmp_path / "gpu_table.md").read_text()
    assert table.count("### tiny") == 2 and "| pgd | bf16 + compile |" in table and "DeACL step" in table
