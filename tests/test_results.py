import json

import pytest

from hf_ssl_robust.results import (
    format_eps,
    load_records,
    markdown_tables,
    parse_eps,
    plot_robustness_curves,
    write_csv,
    write_json,
)


def _record(encoder, task, attack, eps, metric, value, dataset="shapes"):
    return dict(encoder=encoder, task=task, dataset=dataset, attack=attack, eps=eps, steps=0 if attack == "none" else 20,
                metric=metric, value=value, num_samples=8)


@pytest.mark.parametrize("text,value", [("8/255", 8 / 255), ("0", 0.0), ("0.5", 0.5), (" 2/255 ", 2 / 255), (0.25, 0.25)])
def test_parse_eps__fractions_and_numbers(text, value):
    assert parse_eps(text) == pytest.approx(value, abs=1e-12)


@pytest.mark.parametrize("bad,match", [("__import__('os')", "fraction like 8/255"), ("1/0", "fraction"), ("2", r"above 1"), (-0.1, "negative"),
                                       ("-8/255", "negative")])
def test_parse_eps__rejects_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        parse_eps(bad)


def test_parse_eps__l2_radii_may_exceed_one():
    assert parse_eps("3.0", norm="l2") == 3.0 and parse_eps("0.5", norm="l2") == 0.5
    with pytest.raises(ValueError, match="negative"):
        parse_eps("-1", norm="l2")


def test_format_eps__round_trips_multiples_of_1_255():
    assert format_eps(8 / 255) == "8/255" and format_eps(0) == "0" and format_eps(0.01) == "0.01"


def test_markdown_tables__paper_layout_with_missing_cells():
    records = [
        _record("x/std", "classification", "none", 0.0, "accuracy", 0.91),
        _record("x/std", "classification", "embed", 8 / 255, "accuracy", 0.01),
        _record("x/std", "classification", "pgd", 8 / 255, "accuracy", 0.0),
        _record("x/deacl", "classification", "none", 0.0, "accuracy", 0.88),
        _record("x/deacl", "classification", "embed", 8 / 255, "accuracy", 0.7),
        _record("x/std", "depth", "none", 0.0, "rmse", 0.4912),
    ]
    text = markdown_tables(records)
    assert "| Dataset | Encoder | Clean | EmbedAttack | PGD |" in text
    assert "| shapes | std | 0.91 | 0.01 | 0.00 |" in text
    assert "| shapes | deacl | 0.88 | 0.70 | – |" in text
    assert "| shapes | std | 0.491 |" in text
    assert text.index("Table 1") < text.index("Table 3")


def test_results_files_round_trip(tmp_path):
    records = [_record("e", "segmentation", "none", 0.0, "mean_iou", 0.5), _record("e", "segmentation", "segpgd", 2 / 255, "mean_iou", 0.1)]
    write_json(tmp_path / "results.json", records)
    assert load_records(tmp_path / "results.json") == json.loads((tmp_path / "results.json").read_text())
    write_csv(tmp_path / "results.csv", records)
    assert (tmp_path / "results.csv").read_text().splitlines()[0].startswith("encoder,task,dataset,attack,eps")
    assert plot_robustness_curves(records, tmp_path / "curves.png").stat().st_size > 1000


def test_load_records__rejects_foreign_json(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps([{"encoder": "e"}]))
    with pytest.raises(ValueError, match="lacks"):
        load_records(tmp_path / "r.json")


def test_markdown_tables__flags_marked_with_a_legend():
    from hf_ssl_robust.results import markdown_tables

    base = dict(encoder="enc", task="classification", dataset="shapes", steps=2, metric="accuracy", num_samples=8)
    records = [dict(base, attack="none", eps=0.0, value=0.9, flags=[]),
               dict(base, attack="pgd", eps=8 / 255, value=0.4, flags=["not_converged", "zero_gradient"])]
    md = markdown_tables(records)
    assert "| shapes | enc | 0.90 | 0.40 ⚠NZ |" in md
    assert "- ⚠Z `zero_gradient`: " in md and "- ⚠N `not_converged`: " in md and "randomized" not in md
    assert "⚠" not in markdown_tables([dict(r, flags=[]) for r in records])  # no flag, no legend
