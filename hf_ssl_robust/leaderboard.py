"""Leaderboards: results from many runs, ranked per task × dataset × threat model, protocols kept apart.

    >>> rows, errors = load_sources(["outputs/benchmark", "me/dino-robustness"])
    >>> boards = build_boards(rows)
    >>> print(boards_markdown(boards))
    >>> write_leaderboard(boards, "outputs/leaderboard")   # leaderboard.md, .csv, .json

A board holds the primary metric (accuracy, mIoU, RMSE) of one task, dataset, norm and ε, measured
under one protocol (steps, step size, restarts, evaluated images, image size). Numbers of the same
threat model measured under different protocols go to separate boards that say so: they are never
ranked together. Encoders are ranked by the strongest evaluation they have: the per-image worst
case over all attacks when the run made one, else the single attack that hurt most, named in the
row. One row per encoder *weights* (fingerprint): the same result shared twice is listed once.
Image-free priors, where runs have them, sit on every board of their task and dataset, unranked.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .results import _attack_order, attack_title, display_name, format_eps
from .uncertainty import half_width, record_interval
from .sharing import HIGHER_IS_BETTER, PRIMARY_METRIC, dedupe, protocol_of, read_source

TASK_ORDER = {"classification": 0, "segmentation": 1, "depth": 2}
TEXT_COLUMNS = ("encoder", "family", "evaluation", "flags", "card", "runs")  # every other column of a board is a number
PROTOCOL_KEYS = ("steps", "step_size", "restarts", "num_samples", "image_size")
INTERVAL_COLUMN = "± (95 %)"  # half-width of the strongest value's bootstrap interval over images (`uncertainty.py`)


@dataclass
class Board:
    """One ranking: a task, dataset, metric and threat model (norm, ε) under one protocol."""

    task: str
    dataset: str
    metric: str
    norm: str
    eps: float
    protocol: dict
    attacks: list[str]
    rows: list[dict]
    higher_is_better: bool
    note: str | None = None  # the visible marker when this threat model was measured under several protocols
    protocols_for_threat: int = 1
    families: list[str] = field(default_factory=list)

    @property
    def threat(self) -> str:
        return f"{'L∞' if self.norm == 'linf' else 'L2'} ε = {format_eps(self.eps)}"

    @property
    def title(self) -> str:
        return f"{self.task} · {self.dataset} · {self.threat} · {self.metric} ({'higher' if self.higher_is_better else 'lower'} is better)"

    def protocol_text(self) -> str:
        p = self.protocol
        size = f"{p['image_size']} px" if p.get("image_size") else "paper image size per family"
        step = f"{p['step_size'] * 255:.3g}/255" if p.get("step_size") is not None else "?"
        return (f"{p['steps']} steps of {step}, {p['restarts']} restart{'s' if p['restarts'] != 1 else ''}, "
                f"{p['num_samples']} images, {size}")  # fmt: skip


# --- reading ---------------------------------------------------------------------------------------
def load_sources(sources: Iterable[str], skip_errors: bool = False) -> tuple[list[dict], list[str]]:
    """Validated rows from every source (run folder, results dataset folder, Hub dataset id).

    With `skip_errors`, a source that fails is reported in the returned list of messages instead of
    raising (the Space shows the others); otherwise the first failure raises its ValueError.
    """
    rows, errors = [], []
    for source in sources:
        try:
            rows += read_source(source)
        except ValueError as err:
            if not skip_errors:
                raise
            errors.append(f"{source}: {err}")
    return rows, errors


# --- boards -----------------------------------------------------------------------------------------
def _strongest(attacks: dict[str, float | None], higher_is_better: bool) -> tuple[str | None, float | None]:
    """The per-image worst case when present, else the attack that hurt most."""
    if attacks.get("worst") is not None:
        return "worst", attacks["worst"]
    measured = [(a, v) for a, v in attacks.items() if v is not None and not math.isnan(v)]
    if not measured:
        return None, None
    return (min if higher_is_better else max)(measured, key=lambda av: av[1])


def _names(rows: Sequence[dict]) -> dict[str, str]:
    """Display name per fingerprint; weights that share a name get their fingerprint's first digits."""
    by_fp = {r["encoder_fingerprint"]: display_name(r["encoder"]) for r in rows}
    counts: dict[str, int] = {}
    for name in by_fp.values():
        counts[name] = counts.get(name, 0) + 1
    return {fp: name if counts[name] == 1 else f"{name} ({fp[:8]})" for fp, name in by_fp.items()}


def build_boards(rows: Sequence[dict]) -> list[Board]:
    """Rows (from `load_sources`) merged into ranked boards (see the module docstring)."""
    rows = dedupe(list(rows))
    primary = [r for r in rows if PRIMARY_METRIC.get(r["task"]) == r["metric"]]
    names = _names([r for r in primary if r["encoder"] != "prior"])
    attacked = [r for r in primary if r["attack"] != "none" and r["encoder"] != "prior"]
    groups: dict[tuple, dict[tuple, list[dict]]] = {}
    for r in attacked:
        threat = (r["task"], r["dataset"], r["metric"], r["norm"], round(float(r["eps"]), 9))
        groups.setdefault(threat, {}).setdefault(protocol_of(r), []).append(r)
    boards = []
    for (task, dataset, metric, norm, eps), by_protocol in groups.items():
        higher = HIGHER_IS_BETTER[metric]
        for i, (protocol, members) in enumerate(sorted(by_protocol.items(), key=lambda kv: _protocol_order(kv[0]))):
            clean = [r for r in primary if r["attack"] == "none" and (r["task"], r["dataset"], r["metric"]) == (task, dataset, metric)]
            board_rows = _board_rows(members, clean, higher, names)
            # A prior scored on other images (another subset size) is not the floor of this board.
            board_rows += _prior_rows([c for c in clean if c["num_samples"] == dict(zip(PROTOCOL_KEYS, protocol))["num_samples"]])
            attacks = sorted({r["attack"] for r in members}, key=_attack_order)
            board = Board(task=task, dataset=dataset, metric=metric, norm=norm, eps=float(members[0]["eps"]),
                          protocol=dict(zip(PROTOCOL_KEYS, protocol)), attacks=attacks, rows=board_rows, higher_is_better=higher,
                          protocols_for_threat=len(by_protocol),
                          families=sorted({r["family"] for r in board_rows if r.get("family")}))  # fmt: skip
            if len(by_protocol) > 1:
                board.note = (f"⚠ Protocol {i + 1} of {len(by_protocol)} measured for this threat model: the boards of "
                              "different protocols are not ranked against each other.")  # fmt: skip
            boards.append(board)
    boards.sort(key=lambda b: (TASK_ORDER.get(b.task, 9), b.task, b.dataset, b.norm, b.eps, _protocol_order(b.protocol.values())))
    return boards


def _protocol_order(protocol) -> tuple:
    return tuple((v is None, v or 0) for v in protocol)


def _board_rows(members: list[dict], clean: list[dict], higher: bool, names: dict[str, str]) -> list[dict]:
    by_fp: dict[str, list[dict]] = {}
    for r in members:
        by_fp.setdefault(r["encoder_fingerprint"], []).append(r)
    out = []
    for fp, mine in by_fp.items():
        first = mine[0]
        attacks = {r["attack"]: r["value"] for r in mine}
        # The clean number measured on the same images: same weights, evaluated images and image size.
        same = [c for c in clean if c["encoder_fingerprint"] == fp and (c["num_samples"], c.get("image_size"))
                == (first["num_samples"], first.get("image_size"))]  # fmt: skip
        same.sort(key=lambda c: c.get("run") != first.get("run"))
        name, value = _strongest(attacks, higher)
        interval = next((record_interval(r) for r in mine if r["attack"] == name), None)
        seconds = [r["seconds"] for r in mine if r.get("seconds") is not None]
        out.append(dict(
            rank=None, encoder=names.get(fp, display_name(first["encoder"])), encoder_id=first["encoder_id"], fingerprint=fp,
            family=first.get("encoder_family"), strongest=value, evaluation=attack_title(name) if name else None,
            evaluation_attack=name, clean=same[0]["value"] if same else None, attacks=attacks, strongest_ci95=interval,
            flags=sorted({f for r in mine + same[:1] for f in r.get("flags") or []}), cost_seconds=max(seconds) if seconds else None,
            card=first.get("encoder_card"), runs=sorted({x for r in mine for x in str(r.get("run") or "").split(", ") if x}),
            identity_derived=bool(first.get("identity_derived")),
        ))  # fmt: skip
    ranked = sorted(out, key=lambda r: _sort_key(r["strongest"], higher))
    previous, rank = object(), 0
    for i, row in enumerate(ranked, 1):
        if row["strongest"] is None:
            continue
        if row["strongest"] != previous:
            rank, previous = i, row["strongest"]
        row["rank"] = rank  # ties share a rank
    return ranked


def _prior_rows(clean: list[dict]) -> list[dict]:
    """Image-free priors: no pixels, so no attack changes them; shown for scale, never ranked."""
    return [dict(rank=None, encoder="prior (image-free)", encoder_id="prior", fingerprint="prior", family=None,
                 strongest=r["value"], evaluation="no attack applies", evaluation_attack=None, clean=r["value"], attacks={},
                 strongest_ci95=record_interval(r), flags=[], cost_seconds=None, card=None, runs=[r.get("run")], identity_derived=False)
            for r in dedupe([c for c in clean if c["encoder"] == "prior"])]  # fmt: skip


def _sort_key(value: float | None, higher: bool) -> tuple:
    if value is None or math.isnan(value):
        return (1, 0.0)
    return (0, -value if higher else value)


# --- filtering and tables (the CLI and the Space) ---------------------------------------------------
def filter_boards(boards: Sequence[Board], task: str | None = None, dataset: str | None = None, threat: str | None = None,
                  family: str | None = None) -> list[Board]:
    """Boards matching every given filter (None or "all" = any); `family` keeps that family's rows."""
    out = []
    for b in boards:
        if any(v not in (None, "", "all") and v != got for v, got in ((task, b.task), (dataset, b.dataset), (threat, b.threat))):
            continue
        if family not in (None, "", "all"):
            rows = [r for r in b.rows if r.get("family") == family]
            if not any(r["encoder_id"] != "prior" for r in rows):
                continue
            b = Board(**{**asdict(b), "rows": rows})
        out.append(b)
    return out


def board_columns(board: Board) -> list[str]:
    return (["rank", "encoder", "family", f"{board.metric} (strongest)", "evaluation", "clean"]
            + [attack_title(a) for a in board.attacks] + [INTERVAL_COLUMN, "flags", "cost (s)", "card", "runs"])  # fmt: skip


def board_table(board: Board, sort_by: str | None = None, descending: bool | None = None) -> tuple[list[str], list[list]]:
    """Headers and rows of one board, ranked, or sorted by the column `sort_by` (missing values last)."""
    headers = board_columns(board)
    rows = []
    for r in board.rows:
        rows.append([r["rank"], r["encoder"], r.get("family") or "–", _round(r["strongest"]),
                     r["evaluation"] or "–", _round(r["clean"]), *[_round(r["attacks"].get(a)) for a in board.attacks],
                     _round(half_width(r.get("strongest_ci95"))), ", ".join(r["flags"]) or "", _round(r["cost_seconds"]), r.get("card") or "", ", ".join(r["runs"])])  # fmt: skip
    if sort_by:
        if sort_by not in headers:
            raise ValueError(f"Cannot sort by {sort_by!r}; columns: {headers}")
        k = headers.index(sort_by)
        present = [row for row in rows if row[k] not in (None, "–", "")]
        absent = [row for row in rows if row[k] in (None, "–", "")]
        rev = bool(descending) if descending is not None else False
        present.sort(key=lambda row: (isinstance(row[k], str), row[k]), reverse=rev)
        rows = present + absent
    return headers, rows


def _round(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 4)


def _cell(v) -> str:
    if v is None:
        return "–"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def boards_markdown(boards: Sequence[Board]) -> str:
    """Every board as a Markdown section: title, protocol, marker, ranked table."""
    if not boards:
        return "No board: no attacked primary-metric result among the sources.\n"
    blocks = []
    for b in boards:
        headers, rows = board_table(b)
        card = headers.index("card")
        lines = [f"### {b.title}", "", f"Protocol: {b.protocol_text()}.", ""]
        if b.note:
            lines += [f"**{b.note}**", ""]
        lines += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        for row in rows:
            row = list(row)
            row[card] = f"[card]({row[card]})" if row[card] else "–"
            lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def boards_json(boards: Sequence[Board]) -> list[dict]:
    return [dict(asdict(b), title=b.title, threat=b.threat, protocol_text=b.protocol_text()) for b in boards]


def write_leaderboard(boards: Sequence[Board], out: str | os.PathLike) -> list[Path]:
    """`leaderboard.md`, `leaderboard.csv` (one line per board row) and `leaderboard.json` in `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md, table, js = out / "leaderboard.md", out / "leaderboard.csv", out / "leaderboard.json"
    md.write_text("# Robustness leaderboard\n\n" + boards_markdown(boards))
    js.write_text(json.dumps(boards_json(boards), indent=2, default=str) + "\n")
    attacks = sorted({a for b in boards for a in b.attacks}, key=_attack_order)
    fields = ["task", "dataset", "metric", "norm", "eps", *PROTOCOL_KEYS, "protocols_for_threat", "rank", "encoder", "encoder_id",
              "fingerprint", "family", "strongest", "strongest_ci95", "evaluation", "clean", *[f"attack:{a}" for a in attacks], "flags",
              "cost_seconds", "card", "runs"]  # fmt: skip
    with open(table, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for b in boards:
            for r in b.rows:
                writer.writerow({"task": b.task, "dataset": b.dataset, "metric": b.metric, "norm": b.norm, "eps": b.eps,
                                 **b.protocol, "protocols_for_threat": b.protocols_for_threat,
                                 **{k: r[k] for k in ("rank", "encoder", "encoder_id", "fingerprint", "family", "strongest",
                                                      "evaluation", "clean", "cost_seconds", "card")},
                                 "strongest_ci95": ";".join(f"{v:.6g}" for v in r.get("strongest_ci95") or []),
                                 **{f"attack:{a}": r["attacks"].get(a) for a in b.attacks},
                                 "flags": ";".join(r["flags"]), "runs": ";".join(str(x) for x in r["runs"])})  # fmt: skip
    return [md, table, js]
