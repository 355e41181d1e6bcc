"""The Leaderboard tab's logic without gradio: where its sources come from, filters, sorting."""

import pytest
from test_sharing import COMMITTED, EMBEDDED, STRENGTH, push_to

from hf_ssl_robust import space_leaderboard as sl


def test_leaderboard_sources__env_then_shipped_then_checkout(tmp_path):
    env = {sl.ENV: "me/results, ./run-a  other/results\n"}
    assert sl.leaderboard_sources(tmp_path, env) == ["me/results", "./run-a", "other/results"]
    assert sl.leaderboard_sources(tmp_path, {}) == [str(COMMITTED), str(STRENGTH)]  # a checkout: the committed runs
    (tmp_path / "leaderboard" / "1-b").mkdir(parents=True)
    (tmp_path / "leaderboard" / "0-a").mkdir()
    assert sl.leaderboard_sources(tmp_path, {sl.ENV: " "}) == [str(tmp_path / "leaderboard" / n) for n in ("0-a", "1-b")]


def test_leaderboard_view__bad_source_left_out_and_named(tmp_path):
    good = push_to(EMBEDDED, tmp_path / "good")
    view = sl.LeaderboardView.from_sources([str(good), str(tmp_path / "nothing"), "someone/not-cached"])
    assert len(view.boards) == 3 and view.num_records == 72 and len(view.errors) == 2
    summary = view.summary()
    assert "**3 boards** from 72 records in 1 of 3 sources" in summary and "Sources left out" in summary
    assert "nothing' is neither a run folder" in summary and "Cannot read the Hub dataset 'someone/not-cached'" in summary


def test_leaderboard_view__choices_filters_and_sort():
    view = sl.LeaderboardView.from_sources([str(EMBEDDED), str(STRENGTH)])
    choices = view.choices()
    assert choices["task"] == ["all", "classification", "segmentation", "depth"] and choices["family"] == ["all", "ResNet"]
    assert choices["threat"] == ["all", "L∞ ε = 2/255", "L∞ ε = 4/255", "L∞ ε = 8/255"] and choices["dataset"] == ["all", "shapes"]
    tables = view.tables(task="segmentation", threat="L∞ ε = 8/255", sort_by="strongest", descending=True)
    assert [b.protocol["num_samples"] for b, _, _ in tables] == [128, 256]
    board, headers, rows = tables[1]
    values = [row[headers.index("mean_iou (strongest)")] for row in rows]
    assert values == sorted(values, reverse=True) and sl.board_heading(board).startswith("#### segmentation · shapes")
    assert "Protocol: 20 steps of 2/255, 1 restart, 256 images" in sl.board_heading(board)
    assert view.tables(family="DINOv2") == []
    js = view.as_json(task="depth", sort_by="rank")
    assert len(js) == 4 and all(set(b) >= {"headers", "table", "protocol", "protocol_text", "note", "title"} for b in js)
    with pytest.raises(ValueError, match=r"sort_by must be one of \['rank', 'strongest'"):
        view.tables(sort_by="speed")
