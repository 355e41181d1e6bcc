"""`COMMAND --help` and input errors answer without torch: torch-free configs, our own dataclass parser.

The parser must stay option-for-option what `transformers.HfArgumentParser` made (compared here on
every option and on parsed argv lists), and the torch-free name copies must equal the registries.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hf_ssl_robust.arguments import config_parser, parse_into
from hf_ssl_robust.configs import BenchmarkConfig, DeACLConfig, TrainHeadConfig

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"benchmark": BenchmarkConfig, "train-head": TrainHeadConfig, "deacl": DeACLConfig}
HEAVY = ("torch", "transformers", "accelerate", "datasets", "evaluate")


def test_configs__old_homes_re_export_the_same_classes():
    from hf_ssl_robust import precision, results
    from hf_ssl_robust.benchmark import BenchmarkConfig as B
    from hf_ssl_robust.configs import check_mixed_precision, parse_eps
    from hf_ssl_robust.defenses import DeACLConfig as D
    from hf_ssl_robust.training import TrainHeadConfig as T

    assert (B, T, D) == (BenchmarkConfig, TrainHeadConfig, DeACLConfig)
    assert results.parse_eps is parse_eps and precision.check_mixed_precision is check_mixed_precision


def test_names__torch_free_copies_equal_the_registries():
    from hf_ssl_robust import names
    from hf_ssl_robust.attacks import ATTACKS
    from hf_ssl_robust.attacks.base import NORMS
    from hf_ssl_robust.attacks.objectives import DEFAULT_LOSS, LOSSES
    from hf_ssl_robust.data.registry import TASKS
    from hf_ssl_robust.tasks import TASKS as TASK_OBJECTS

    assert list(names.ATTACK_KINDS.items()) == [(n, (a.surface, a.task)) for n, a in ATTACKS.items()]
    assert {t: list(ls) for t, ls in names.LOSS_NAMES.items()} == {t: list(ls) for t, ls in LOSSES.items()}
    assert list(names.LOSS_NAMES) == list(LOSSES)
    assert names.DEFAULT_LOSS == DEFAULT_LOSS and names.NORMS == NORMS and TASKS == tuple(TASK_OBJECTS)


def test_names__loss_task_matches_the_objectives():
    from hf_ssl_robust.attacks import objectives
    from hf_ssl_robust.names import loss_task

    assert all(loss_task(n) == objectives.loss_task(n) for ls in objectives.LOSSES.values() for n in ls)
    with pytest.raises(ValueError, match="Unknown attack loss 'cee'") as ours:
        loss_task("cee")
    with pytest.raises(ValueError) as theirs:
        objectives.loss_task("cee")
    assert str(ours.value) == str(theirs.value)


def _hf_parser(config_class, prog):
    from transformers import HfArgumentParser

    return HfArgumentParser(config_class, prog=prog)


def _describe(action) -> dict:
    kind = getattr(action.type, "__name__", action.type)
    return dict(options=action.option_strings, dest=action.dest, nargs=action.nargs, const=action.const, default=action.default,
                type=kind, choices=action.choices, required=action.required, help=action.help, action=type(action).__name__)


@pytest.mark.parametrize("command", CONFIGS)
def test_config_parser__same_options_and_help_as_hf_argument_parser(command):
    ours, theirs = config_parser(CONFIGS[command], command), _hf_parser(CONFIGS[command], command)
    assert [_describe(a) for a in ours._actions] == [_describe(a) for a in theirs._actions]
    assert ours.format_help() == theirs.format_help()


ARGVS = {
    "benchmark": [
        [],
        ["--encoders", "a", "b", "--tasks", "depth", "--eps", "2/255", "8/255", "--steps", "3", "--track_best"],
        ["--track_best", "false", "--worst_case", "yes", "--attacks", "embed", "pgd", "--tasks", "classification", "--max_eval_samples", "5", "--image_size", "32"],
        ["--head_lr", "0.1", "--head_epochs", "2", "--priors", "yes", "--mixed_precision", "bf16", "--max-eval-samples", "7"],
        ["--dry_run", "--encoders", "org/enc", "--revision", "main", "--batch_size", "auto", "--norm", "l2", "--eps", "0.5", "--embed_encoder", "t"],
    ],
    "train-head": [
        [],
        ["--no_augment", "--lr_candidates", "0.1", "0.01", "--task", "depth", "--optimizer", "sgd", "--lr", "0.5"],
        ["--augment", "false", "--cache_features", "no", "--val_fraction", "0.2", "--num_train_samples", "9"],
        ["--no-augment", "--evaluate_test", "0", "--embed_encoder", "--weight_decay", "0.01", "--data_dir", "x"],
        ["--augment", "--evaluate-test", "True", "--batch_size", "4", "--epochs", "1"],
    ],
    "deacl": [
        [],
        ["--eps", "8/255", "--attack_step_size", "1/255", "--objective", "dense", "--no_augment", "--resume"],
        ["--eval_tasks", "depth", "classification", "--max_steps", "3", "--warmup_ratio", "0.1", "--attack_on", "teacher"],
        ["--augment", "no", "--resume", "false", "--image_size", "32", "--push_to_hub", "me/x", "--gamma", "1.5"],
    ],
}


@pytest.mark.parametrize("command,argv", [(c, a) for c, argvs in ARGVS.items() for a in argvs])
def test_config_parser__parses_like_hf_argument_parser(command, argv):
    config_class = CONFIGS[command]
    ours = parse_into(config_parser(config_class, command), config_class, argv)
    theirs, = _hf_parser(config_class, command).parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    assert dataclasses.asdict(ours) == dataclasses.asdict(theirs)
    assert vars(ours) == vars(theirs)  # derived attributes too (attack plan, parsed ε)


BAD = [("benchmark", ["--priors", "maybe"]), ("benchmark", ["--steps", "x"]), ("benchmark", ["--track_best", "perhaps"]),
       ("benchmark", ["--eps"]), ("train-head", ["--task", "segg"]), ("train-head", ["--lr_candidates", "a"]),
       ("deacl", ["--objective", "patch"]), ("deacl", ["--batch_size", "1.5"])]


@pytest.mark.parametrize("command,argv", BAD)
def test_config_parser__usage_errors_like_hf_argument_parser(command, argv, capsys):
    config_class = CONFIGS[command]
    with pytest.raises(SystemExit) as ours:
        parse_into(config_parser(config_class, command), config_class, argv)
    ours_err = capsys.readouterr().err
    with pytest.raises(SystemExit) as theirs:
        _hf_parser(config_class, command).parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    assert ours.value.code == theirs.value.code == 2
    assert ours_err == capsys.readouterr().err and "error: argument" in ours_err


def test_parse_into__unknown_option_is_one_error_after_the_config_checks():
    parser = config_parser(BenchmarkConfig, "benchmark")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['--bogus'\]; `benchmark --help` lists the options"):
        parse_into(parser, BenchmarkConfig, ["--bogus"])
    with pytest.raises(ValueError, match="Cannot read eps"):  # as before: the config's own check comes first
        parse_into(parser, BenchmarkConfig, ["--bogus", "--eps", "8/2x5"])


def test_config_parser__refuses_a_union_it_cannot_parse():
    @dataclasses.dataclass
    class Odd:
        x: int | str = 0

    with pytest.raises(TypeError, match="field 'x': only `X | None`"):
        config_parser(Odd)


# (argv, exit code, what stderr/stdout must say): every one answered without torch, transformers or datasets
FAST = [
    (["benchmark", "--help"], 0, "--dataset_name DATASET_NAME"),
    (["train-head", "--help"], 0, "--no_augment"),
    (["deacl", "--help"], 0, "--attack_on {student,teacher}"),
    (["benchmark", "--bogus"], 2, "unknown option(s) ['--bogus']"),
    (["benchmark", "--encodrs", "x"], 2, "unknown option(s) ['--encodrs'] (did you mean '--encoders'"),
    (["benchmark", "--priors", "maybe"], 2, "invalid choice: 'maybe'"),
    (["benchmark", "--eps", "8/2x5"], 2, "--eps: Cannot read eps '8/2x5'"),
    (["benchmark", "--eps", "-8/255"], 2, "is negative"),
    (["benchmark", "--attacks", "pgdd"], 2, "Unknown attack(s) ['pgdd'] (did you mean 'pgd'"),
    (["benchmark", "--attacks", "apgd:cee"], 2, "Unknown attack loss 'cee'"),
    (["benchmark", "--tasks", "segmentatoin"], 2, "(did you mean 'segmentation'?)"),
    (["benchmark", "--datasets", "cifar1O"], 2, "did you mean 'cifar10'"),
    (["benchmark", "--norm", "l3"], 2, "Unknown norm 'l3'"),
    (["benchmark", "--label_column", "lab"], 2, "--label_column only apply with --dataset_name"),
    (["benchmark", "--mixed_precision", "fp8"], 2, "invalid choice: 'fp8'"),
    (["benchmark", "--worst_case", "--attacks", "pgd"], 2, "--worst_case takes"),
    (["train-head", "--task", "segg"], 2, "invalid choice: 'segg'"),
    (["train-head", "--val_fraction", "2"], 2, "val_fraction must be in (0, 1)"),
    (["train-head", "--num_workers", "-1"], 2, "num_workers must be 'auto' or an integer >= 0"),
    (["train-head"], 2, "train-head needs --encoder"),
    (["deacl", "--dataset", "shapez"], 2, "Unknown dataset 'shapez' (did you mean 'shapes'?)"),
    (["deacl", "--eps", "abc"], 2, "eps: Cannot read eps 'abc'"),
    (["deacl", "--eval_tasks", "dept"], 2, "eval_tasks: Unknown task 'dept' (did you mean 'depth'?)"),
]


def test_cli__help_and_input_errors_import_no_torch():
    """One fresh interpreter runs every case in turn and reports what got imported after each."""
    code = f"""
import contextlib, io, json, sys
from hf_ssl_robust.cli import main
out = []
for argv in {json.dumps([argv for argv, _, _ in FAST])}:
    err, std = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
        try:
            rc = main(argv)
        except SystemExit as stop:
            rc = stop.code
    out.append([rc, err.getvalue() + std.getvalue(), sorted(m for m in {HEAVY!r} if m in sys.modules)])
print(json.dumps(out))
"""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.splitlines()[-1])
    for (argv, code_expected, says), (rc, text, loaded) in zip(FAST, results):
        assert (rc, loaded) == (code_expected, []), (argv, rc, loaded, text[-500:])
        assert says in text, (argv, text[-800:])
