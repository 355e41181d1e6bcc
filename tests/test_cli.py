"""The command line's papercuts: --version, fast --help, 'did you mean', scripts' errors, reuse line, defaults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import hf_ssl_robust
from hf_ssl_robust.cli import cells_reuse_line
from hf_ssl_robust.cli import main as cli_main
from hf_ssl_robust.suggestions import did_you_mean

REPO = Path(__file__).resolve().parents[1]


def _python(code: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, *(["-c", code] if code else []), *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=timeout)  # fmt: skip


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_cli__help_and_version_import_neither_torch_nor_transformers(flag):
    out = _python(f"import sys; from hf_ssl_robust.cli import main; rc = main([{flag!r}]); "
                  "print('LOADED', sorted(m for m in ('torch', 'transformers', 'datasets', 'evaluate') if m in sys.modules)); "
                  "sys.exit(rc)")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout, out.stdout


def test_cli__version_is_the_package_metadata(capsys):
    assert cli_main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"hf-ssl-robust {metadata.version('hf-ssl-robust')}"
    assert hf_ssl_robust.__version__ == metadata.version("hf-ssl-robust")


def test_cli__unknown_command_suggests_the_close_one(capsys):
    assert cli_main(["benchmrk"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'benchmrk' (did you mean 'benchmark'?)" in err and err.count("\n") == 1


def test_did_you_mean__close_names_only():
    assert did_you_mean("cifar1O", ["cifar10", "cifar100", "stl10"]) == " (did you mean 'cifar10' or 'cifar100'?)"
    assert did_you_mean("SEGPDG", ["embed", "segpgd"]) == " (did you mean 'segpgd'?)"  # case-insensitive
    assert did_you_mean("imagenet", ["cifar10", "shapes"]) == ""


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: __import__("hf_ssl_robust.data", fromlist=["x"]).get_dataset_spec("cifar1O"), r"Unknown dataset 'cifar1O' \(did you mean 'cifar10'"),
        (lambda: hf_ssl_robust.make_attack("segpdg"), r"Unknown attack 'segpdg' \(did you mean 'segpgd'\?\)"),
        (lambda: __import__("hf_ssl_robust.tasks", fromlist=["x"]).get_task("clasification"), r"did you mean 'classification'"),
        (lambda: __import__("hf_ssl_robust.metrics", fromlist=["x"]).load_metric("mean_iuo"), r"did you mean 'mean_iou'"),
        (lambda: __import__("hf_ssl_robust.defenses", fromlist=["x"]).DeACLConfig(dataset="shape"), r"did you mean 'shapes'"),
    ],
)
def test_registries__unknown_names_suggest_close_ones(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_cli__benchmark_typos_get_suggestions_in_one_report(tmp_path, capsys):
    argv = ["benchmark", "--datasets", "cifar1O", "--tasks", "depht", "--attacks", "emebd", "--output_dir", str(tmp_path / "o")]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "did you mean 'cifar10'" in err and "did you mean 'depth'" in err and "did you mean 'embed'" in err
    assert not (tmp_path / "o").exists()


def test_encoders__mistyped_preset_suggests_and_offline_hint_is_current():
    from hf_ssl_robust.encoders import EncoderNotFoundError
    from hf_ssl_robust.validation import describe_encoder

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    with pytest.raises(EncoderNotFoundError, match=r"'dinov2-smal' \(did you mean 'dinov2-small'") as err:
        hf_ssl_robust.load_encoder("dinov2-smal")
    assert "`hf download dinov2-smal`" in str(err.value) and "huggingface-cli" not in str(err.value)
    assert "set HF_HUB_OFFLINE=1" not in str(err.value)  # it is set: do not tell the user to set it
    with pytest.raises(ValueError, match=r"Did you mean 'shapes-resnet-tiny'"):
        describe_encoder("shapes-resnet-tin")


def test_encoders__offline_hint_suggests_fail_fast_when_online(monkeypatch):
    import hf_ssl_robust.encoders as encoders

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(encoders, "hub_reachable", lambda *a, **k: False)
    err = encoders._not_found_error("org/none", "org/none", OSError("not found"))
    assert "set HF_HUB_OFFLINE=1 to fail fast" in str(err) and "hf download org/none" in str(err)


@pytest.mark.parametrize("script", ["benchmark", "deacl"])  # scripts/train_head.py is the same two lines
def test_scripts__bad_input_is_one_line_and_exit_code_2(script):
    out = _python("", str(REPO / "scripts" / f"{script}.py"), "--datasets" if script == "benchmark" else "--dataset", "cifar1O")
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and "did you mean 'cifar10'" in out.stderr
    command = script.replace("_", "-")
    assert [line for line in out.stderr.splitlines() if line.startswith(f"hf-ssl-robust {command}: error:")]


def test_cli__train_head_without_encoder_is_a_usage_error(capsys):
    assert cli_main(["train-head"]) == 2
    assert "train-head needs --encoder" in capsys.readouterr().err


def test_cells_reuse_line__reads_run_info(tmp_path):
    info = tmp_path / "run_info.json"
    assert cells_reuse_line(info) is None
    info.write_text(json.dumps({"cells_reused": 6, "cells_computed": 0}))
    assert cells_reuse_line(info) == f"6 cell(s) reused from {tmp_path / 'cells'}, 0 computed (nothing new: every cell was already done)"
    info.write_text(json.dumps({"cells_reused": 1, "cells_computed": 2}))
    assert cells_reuse_line(info).startswith("1 cell(s) reused") and cells_reuse_line(info).endswith("2 computed")
    info.write_text(json.dumps({"encoders": []}))  # written by a version that did not count
    assert cells_reuse_line(info) is None


def test_defaults__deacl_and_benchmark_start_from_the_same_bundled_encoder():
    from hf_ssl_robust.benchmark import BenchmarkConfig
    from hf_ssl_robust.defenses import DeACLConfig

    assert DeACLConfig().encoder == BenchmarkConfig().resolved_encoders()[0] == "shapes-resnet-tiny"


def test_deacl_options__choices_and_help_on_every_option():
    from transformers import HfArgumentParser

    from hf_ssl_robust.defenses import DeACLConfig

    parser = HfArgumentParser(DeACLConfig)
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    assert all(a.help for a in actions.values()), [d for d, a in actions.items() if not a.help]
    assert actions["attack_on"].choices == ["student", "teacher"] and actions["objective"].choices == ["cls", "dense"]
    assert actions["mixed_precision"].choices == ["no", "bf16", "fp16"]
    with pytest.raises(SystemExit):
        parser.parse_args_into_dataclasses(args=["--objective", "patch"])


def test_package__heads_register_in_either_import_order():
    """`import hf_ssl_robust` stays cheap, and AutoConfig knows the heads once transformers is imported too."""
    check = ("from transformers import AutoConfig; from transformers.models.auto.configuration_auto import CONFIG_MAPPING; "
             "print('REGISTERED', all(t in CONFIG_MAPPING for t in ('ssl_linear_classifier', 'ssl_linear_segmenter', 'ssl_linear_depth')))")  # fmt: skip
    for first in ("import hf_ssl_robust, sys; from transformers import HfArgumentParser; print('TORCH', 'torch' in sys.modules)",
                  "import transformers, hf_ssl_robust",
                  "import hf_ssl_robust.encoders"):  # our own module imports transformers: registered once it is done
        out = _python(f"{first}; {check}")
        assert "REGISTERED True" in out.stdout, (first, out.stderr[-2000:])
        if "TORCH" in out.stdout:
            assert "TORCH False" in out.stdout


def test_close_process_group__a_finished_command_destroys_the_group(tmp_path):
    """Under `accelerate launch` every command ends by destroying the process group (after a barrier), so no
    process is left to abort in the group's teardown at exit; without a group nothing happens."""
    import torch.distributed as dist

    from hf_ssl_robust import cli

    cli.close_process_group()  # no group: a no-op
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    assert dist.is_initialized()
    assert cli.main(["info"]) == 0  # a command that returns normally
    assert not dist.is_initialized()
