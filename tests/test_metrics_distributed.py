"""The meters under 2 CPU processes (`accelerate launch`) equal one process.

The dataset size is not a multiple of processes x batch size, so the last step carries padded
duplicates that `accelerator.gather_for_metrics` must drop before the meters see them.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "scripts" / "metrics_ddp.py"


def load_script():
    spec = importlib.util.spec_from_file_location("metrics_ddp", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_toy_dataset__needs_padding():
    script = load_script()
    assert script.NUM_SAMPLES % (2 * script.BATCH_SIZE) != 0


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="needs the accelerate CLI")
def test_meters__two_processes_equal_one(tmp_path):
    script = load_script()
    out = tmp_path / "result.json"
    offline = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env = {**os.environ, **offline, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    cmd = [
        "accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", str(SCRIPT), "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dist = json.loads(out.read_text())
    single = script.meter_state(script.run_meters(script.get_dataloader()))
    assert dist.pop("num_processes") == 2

    assert dist["accuracy"] == single["accuracy"]  # integers and the same division
    for key in ("num_samples", "intersection", "pred_area", "label_area"):
        assert dist["mean_iou"][key] == single["mean_iou"][key], key
    for key in ("mean_iou", "mean_accuracy", "overall_accuracy"):
        assert dist["mean_iou"][key] == pytest.approx(single["mean_iou"][key], rel=1e-12), key
    assert dist["depth"]["num_samples"] == single["depth"]["num_samples"] == script.NUM_SAMPLES
    assert dist["depth"]["num_scored"] == single["depth"]["num_scored"] == script.NUM_SAMPLES - 1
    assert dist["depth"] == pytest.approx(single["depth"], rel=1e-12)
    # per-image statistics gathered in the same image order: the same bootstrap intervals (uncertainty.py)
    assert dist["per_image_rows"] == single["per_image_rows"] == [script.NUM_SAMPLES] * 3
    assert dist["intervals"].keys() == single["intervals"].keys()
    for key, interval in single["intervals"].items():
        assert dist["intervals"][key] == pytest.approx(interval, rel=1e-12), key


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
