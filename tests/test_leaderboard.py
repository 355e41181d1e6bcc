"""Leaderboards over shared results: the embedded default (8/255, 256 images), a tiny-encoder run
(4/255) and the committed strength run (128 images), each pushed `--to` a local folder, merged."""

import csv
import json

import pytest
from test_sharing import COMMITTED, EMBEDDED, STRENGTH, push_to, tiny_run  # noqa: F401 - the fixture

from hf_ssl_robust import leaderboard as lb
from hf_ssl_robust import sharing
from hf_ssl_robust.cli import main as cli_main
from hf_ssl_robust.identity import encoder_identity
from hf_ssl_robust.results import display_name


@pytest.fixture(scope="module")
def pushed(tiny_run, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("pushed")
    return {name: push_to(run, root / name) for name, run in (("embedded", EMBEDDED), ("tiny", tiny_run), ("strength", STRENGTH))}


@pytest.fixture(scope="module")
def boards(pushed):
    rows, errors = lb.load_sources([str(p) for p in pushed.values()])
    assert errors == []
    return lb.build_boards(rows)


def _board(boards, task, eps_255, num_samples):
    found = [b for b in boards if b.task == task and round(b.eps * 255) == eps_255 and b.protocol["num_samples"] == num_samples]
    assert len(found) == 1, [b.title for b in boards]
    return found[0]


def _expected_order(task, metric):
    """Encoders of the embedded default by their most damaging attack, from results.json itself."""
    records = json.loads((EMBEDDED / "results.json").read_text())
    worst = {}
    for r in records:
        if r["task"] == task and r["metric"] == metric and r["attack"] != "none":
            pick = min if metric != "rmse" else max
            worst[r["encoder"]] = pick(worst.get(r["encoder"], r["value"]), r["value"])
    return sorted(worst, key=lambda e: -worst[e] if metric != "rmse" else worst[e]), worst


@pytest.mark.parametrize("task, metric", [("classification", "accuracy"), ("segmentation", "mean_iou"), ("depth", "rmse")])
def test_build_boards__embedded_default_ranked_by_its_strongest_attack(boards, task, metric):
    board = _board(boards, task, 8, 256)
    order, worst = _expected_order(task, metric)
    assert [r["encoder"] for r in board.rows] == order and [r["rank"] for r in board.rows] == [1, 2]
    for row in board.rows:
        assert row["strongest"] == worst[row["encoder"]]
        assert row["evaluation"] == {"classification": "PGD", "segmentation": "SegPGD", "depth": "DepthPGD"}[task]
        assert set(row["attacks"]) == {"embed", {"classification": "pgd", "segmentation": "segpgd", "depth": "depth_pgd"}[task]}
        assert row["clean"] is not None and row["cost_seconds"] > 0 and row["card"].endswith("/README.md")
    assert board.higher_is_better == (metric != "rmse") and board.metric == metric


def test_build_boards__differing_protocols_never_ranked_together(boards):
    standard = encoder_identity("shapes-resnet-tiny").fingerprint
    for task in ("classification", "segmentation", "depth"):
        at_8 = [b for b in boards if b.task == task and round(b.eps * 255) == 8]
        assert sorted(b.protocol["num_samples"] for b in at_8) == [128, 256]  # strength vs embedded default
        for b in at_8:
            assert b.note and "Protocol" in b.note and "not ranked against each other" in b.note and b.protocols_for_threat == 2
            assert [r["fingerprint"] for r in b.rows].count(standard) == 1
    md = lb.boards_markdown(boards)
    # 3 x 8/255 (128 vs 256 images), and classification at 4/255 (the strength run vs the tiny run's 2 steps on 8 images)
    assert md.count("⚠ Protocol 1 of 2") == 4 and "Protocol: 20 steps of 2/255, 1 restart, 128 images" in md


def test_build_boards__worst_case_preferred_and_named(boards):
    data = json.loads((STRENGTH / "strength.json").read_text())
    for s in data["strength"]:
        board = _board(boards, s["task"], round(s["eps"] * 255), 128)
        row, prior = board.rows  # the encoder, ranked; the image-free prior of the same images, for scale
        assert row["evaluation"] == "Worst case" and row["strongest"] == s["worst"] and row["clean"] == s["clean"]
        assert (prior["fingerprint"], prior["rank"], prior["strongest"]) == ("prior", None, s["prior"])
        assert board.attacks[-1] == "worst"


def test_build_boards__tiny_run_is_ranked_apart_from_the_embedded_default(boards, tiny_run, tiny_dinov2_path):  # noqa: F811
    board = _board(boards, "classification", 4, 8)
    (row,) = board.rows
    assert row["fingerprint"] == encoder_identity(tiny_dinov2_path).fingerprint and row["encoder"] == display_name(tiny_dinov2_path)
    assert board.protocol == {"steps": 2, "step_size": pytest.approx(1 / 255), "restarts": 1, "num_samples": 8, "image_size": 32}
    assert board.threat == "L∞ ε = 4/255" and "Protocol" in board.note  # the strength run has 4/255 too, at 20 steps on 128 images
    assert [r["fingerprint"] for r in _board(boards, "classification", 4, 128).rows] == [encoder_identity("shapes-resnet-tiny").fingerprint, "prior"]
    records = json.loads((tiny_run / "results.json").read_text())
    assert row["strongest"] == min(r["value"] for r in records if r["attack"] != "none")
    assert not any(b.task != "classification" for b in boards if b.protocol["num_samples"] == 8)


def test_build_boards__same_result_shared_twice_is_listed_once(pushed):
    rows, _ = lb.load_sources([str(EMBEDDED), str(pushed["embedded"]), str(pushed["embedded"])])
    boards = lb.build_boards(rows)
    assert len(boards) == 3 and all(len(b.rows) == 2 for b in boards)
    assert all(r["runs"] == ["embedded_default"] for b in boards for r in b.rows)


def test_build_boards__same_name_other_weights_are_two_rows(tmp_path):
    rows = sharing.run_records(EMBEDDED)
    other = [dict(r, encoder_fingerprint="0123456789abcdef", run="other") for r in rows if r["encoder"] == "shapes-resnet-tiny"]
    board = lb.build_boards(rows + other)[0]
    names = sorted(r["encoder"] for r in board.rows)
    assert len(names) == 3 and "shapes-resnet-tiny (01234567)" in names


def test_build_boards__ties_share_a_rank_and_priors_stay_unranked():
    rows = sharing.run_records(EMBEDDED)
    twin = [dict(r, encoder_fingerprint="0" * 16, encoder="twin") for r in rows if r["encoder"] == "shapes-resnet-tiny"]
    prior = dict(rows[0], encoder="prior", encoder_id="prior", encoder_fingerprint="prior", value=0.25)
    board = lb.build_boards(rows + twin + [prior])[0]
    assert [r["rank"] for r in board.rows] == [1, 2, 2, None]
    assert board.rows[-1]["encoder"] == "prior (image-free)" and board.rows[-1]["clean"] == 0.25


def test_leaderboard_cli__prints_and_writes_markdown_csv_json(pushed, tmp_path, capsys):
    out = tmp_path / "board"
    assert cli_main(["leaderboard", *map(str, pushed.values()), "--output_dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "### classification · shapes · L∞ ε = 8/255" in printed and "13 boards from" in printed
    assert (out / "leaderboard.md").read_text().count("### ") == 13
    boards = json.loads((out / "leaderboard.json").read_text())
    assert len(boards) == 13 and {"protocol", "rows", "title", "note"} <= set(boards[0])
    with open(out / "leaderboard.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == sum(len(b["rows"]) for b in boards)
    deacl = [t for t in table if t["encoder"] == "shapes-resnet-tiny-deacl" and t["task"] == "classification"]
    assert deacl[0]["rank"] == "1" and deacl[0]["evaluation"] == "PGD" and deacl[0]["num_samples"] == "256"
    assert cli_main(["leaderboard", str(tmp_path / "missing")]) == 2


def test_filter_boards_and_sort(boards):
    assert {b.task for b in lb.filter_boards(boards, task="depth")} == {"depth"}
    at_4 = lb.filter_boards(boards, threat="L∞ ε = 4/255")
    assert {round(b.eps * 255, 6) for b in at_4} == {4} and len(at_4) == 4  # three strength boards + the tiny run
    assert lb.filter_boards(boards, family="DINOv2") == [b for b in at_4 if b.protocol["num_samples"] == 8]
    board = _board(boards, "depth", 8, 256)
    headers, rows = lb.board_table(board, sort_by="clean", descending=False)
    clean = [row[headers.index("clean")] for row in rows]
    assert clean == sorted(clean)
    headers, rows = lb.board_table(board, sort_by="encoder", descending=True)
    assert [row[1] for row in rows] == sorted((row[1] for row in rows), reverse=True)
    with pytest.raises(ValueError, match="Cannot sort by 'speed'; columns:"):
        lb.board_table(board, sort_by="speed")


def test_readme__leaderboard_excerpt_is_what_the_committed_runs_give():
    """README's 'Compare with others' table: the ε = 8/255 classification boards of the committed runs."""
    readme = (COMMITTED.parents[1] / "README.md").read_text()
    section = readme.split("## Compare with others")[1].split("\n## ")[0]
    lines = [line for line in section.splitlines() if line.startswith("| ") and ("shapes-resnet-tiny" in line or "prior" in line)]
    rows, _ = lb.load_sources([str(COMMITTED), str(STRENGTH)])
    boards = [b for b in lb.build_boards(rows) if b.task == "classification" and round(b.eps * 255) == 8]
    expected = []
    for b in sorted(boards, key=lambda b: -b.protocol["num_samples"]):
        for r in b.rows:
            name = r["encoder"] + (" (its own board)" if b.protocol["num_samples"] == 128 else "")
            cells = [r["rank"], name, r["strongest"], r["evaluation"], r["clean"], r["attacks"].get("embed"), r["attacks"].get("pgd"),
                     b.protocol["num_samples"]]  # fmt: skip
            expected.append("| " + " | ".join(lb._cell(round(v, 4) if isinstance(v, float) else v) for v in cells) + " |")
    assert lines == expected


def test_build_boards__strongest_interval_from_new_runs_none_from_old(boards, tiny_run):  # noqa: F811
    records = json.loads((tiny_run / "results.json").read_text())
    tiny = [b for b in boards if round(b.eps * 255) == 4 and b.protocol["num_samples"] == 8]
    assert tiny
    for b in tiny:
        headers, table = lb.board_table(b)
        for row, cells in zip(b.rows, table):
            if row["encoder_id"] == "prior":
                continue
            want = next(r["ci95"] for r in records if r["task"] == b.task and r["metric"] == b.metric and r["attack"] == row["evaluation_attack"])
            assert row["strongest_ci95"] == pytest.approx(want)  # through the Parquet `extra` column
            assert cells[headers.index(lb.INTERVAL_COLUMN)] == pytest.approx(round((want[1] - want[0]) / 2, 4))
    old = _board(boards, "classification", 8, 256)  # the committed embedded default predates intervals
    assert all(r["strongest_ci95"] is None for r in old.rows)
    headers, table = lb.board_table(old)
    assert all(cells[headers.index(lb.INTERVAL_COLUMN)] is None for cells in table)
