"""Attack sanity checks: planted adversarial examples (`attack_checks.py`, `hf-ssl-robust check-attacks`)."""

import pytest
import torch

from conftest import one_thread
from hf_ssl_robust.attack_checks import THRESHOLDS, PlantedModel, check_attacks, planted_point
from hf_ssl_robust.cli import main as cli_main
from hf_ssl_robust.encoders import load_encoder

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)
ATTACKS = ["embed", "pgd", "segpgd", "depth_pgd", "apgd"]  # the paper's attacks and each task's default APGD


@pytest.fixture(scope="module")
def bundled():
    return load_encoder("shapes-resnet-tiny")


def test_planted_model__right_at_x_wrong_at_planted_point(bundled):
    pixels = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    planted = planted_point(pixels, 8 / 255, seed=0)
    assert (planted - pixels).abs().max() <= 8 / 255 and planted.min() >= 0 and planted.max() <= 1
    depth = torch.full((2, 64, 64), 3.0)
    for task, target in [("classification", torch.zeros(2, dtype=torch.long)),
                         ("segmentation", torch.zeros(2, 64, 64, dtype=torch.long)), ("depth", depth)]:
        model = PlantedModel(bundled, task, pixels, planted, target=depth)
        assert model.found(pixels, target).tolist() == [0.0, 0.0], task
        assert model.found(planted, target).tolist() == [1.0, 1.0], task


def test_check_attacks__every_attack_finds_the_planted_examples(bundled):
    rows = check_attacks(bundled, attacks=ATTACKS, num_images=4)
    assert [(r["task"], r["attack"]) for r in rows] == [
        ("classification", "embed"), ("classification", "pgd"), ("classification", "apgd:ce"),
        ("segmentation", "embed"), ("segmentation", "segpgd"), ("segmentation", "apgd:masked_ce"),
        ("depth", "embed"), ("depth", "depth_pgd"), ("depth", "apgd:depth")]
    for r in rows:
        assert r["clean_wrong"] == 0 and r["planted"] == 1
        assert r["passed"] and r["found"] >= THRESHOLDS.get(r["attack"], THRESHOLDS["default"]), r


@pytest.mark.parametrize("weakening", [{"steps": 0}, {"step_size": 0.0}])
def test_check_attacks__weakened_attacks_fail(weakening, bundled):
    attacks = ["pgd", "segpgd", "depth_pgd"] + (["embed", "apgd"] if "steps" in weakening else [])  # APGD sets its own step
    rows = check_attacks(bundled, attacks=attacks, num_images=4, steps=5, overrides=weakening)
    assert rows and all(not r["passed"] and r["found"] < 0.5 for r in rows), rows


@pytest.mark.parametrize("kwargs,match", [
    (dict(tasks=["classificaton"]), r"Unknown task 'classificaton'"),
    (dict(attacks=["pgdd"]), r"Unknown attack 'pgdd'"),
    (dict(num_images=0), r"num_images >= 1"),
])
def test_check_attacks__bad_input_before_loading(kwargs, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        check_attacks(str(tmp_path / "missing"), **kwargs)  # the encoder is never loaded


def test_cli__check_attacks_prints_the_table(capsys):
    assert cli_main(["check-attacks", "--tasks", "classification", "--attacks", "pgd", "--num_images", "2", "--steps", "5"]) == 0
    out = capsys.readouterr().out
    assert "| classification | PGD | 1.00 | 0.90 | ok |" in out and "share wrong at x / at the planted x'" in out
    assert cli_main(["check-attacks", "--tasks", "nope"]) == 2 and "Unknown task 'nope'" in capsys.readouterr().err


def test_check_attacks__scale_invariant_logit_losses_see_the_planted_head(bundled):
    """SEA's spherical loss (the correct logit over the logits' norm) is flat when the correct logit is
    exactly 0: the planted head shifts every logit by the same constant (no softmax changes) so that
    this loss too has a gradient. Before the shift APGD-mSph found 0.00 of the planted examples."""
    rows = check_attacks(bundled, tasks=["segmentation"], attacks=["apgd:masked_spherical"], num_images=4)
    (row,) = rows
    assert row["clean_wrong"] == 0 and row["planted"] == 1 and row["passed"], row
