"""The Space's Leaderboard tab, without gradio: where its results come from, filters, tables.

Sources: `SPACE_LEADERBOARD_SOURCES` (comma- or space-separated run folders, results dataset folders
or Hub dataset ids); by default the results datasets that `scripts/build_space.py` ships next to the
app (`leaderboard/*`), else, in a checkout, the committed embedded-default and strength runs, so the
tab works offline. A source that fails validation is left out and named in the tab's summary.

    >>> view = LeaderboardView.from_sources(leaderboard_sources())
    >>> for board, headers, rows in view.tables(task="classification"):
    ...     print(board.title, board.protocol_text())
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .leaderboard import Board, board_table, boards_json, build_boards, filter_boards, load_sources

ENV = "SPACE_LEADERBOARD_SOURCES"
REPO_ROOT = Path(__file__).resolve().parents[1]
CHECKOUT_SOURCES = [REPO_ROOT / "docs" / "embedded_default", REPO_ROOT / "docs" / "strength"]
ALL = "all"
SORT_KEYS = ("rank", "strongest", "clean", "encoder", "family", "cost (s)")  # attack columns sort in the table itself
SUBMIT = """**Add your encoder.** Benchmark it, then share the run as a results dataset on the Hub:

```bash
hf-ssl-robust benchmark --encoders YOUR_ORG/YOUR_ENCODER --attacks strong --output_dir outputs/mine
hf-ssl-robust results push outputs/mine --repo_id YOUR_ORG/YOUR_ENCODER-robustness
```

Then ask for `YOUR_ORG/YOUR_ENCODER-robustness` to be added to this Space's `SPACE_LEADERBOARD_SOURCES`,
or rank it yourself against any other results: `hf-ssl-robust leaderboard YOUR_ORG/YOUR_ENCODER-robustness outputs/other-run`.
Each row keeps its full provenance (versions, git revision, encoder fingerprint, protocol), and results measured under
another protocol (steps, restarts, images, image size) land on their own board."""


def leaderboard_sources(app_dir: str | os.PathLike | None = None, environ: dict | None = None) -> list[str]:
    """The sources the tab reads (see the module docstring)."""
    environ = os.environ if environ is None else environ
    if environ.get(ENV, "").strip():
        return [s for s in re.split(r"[,\s]+", environ[ENV].strip()) if s]
    shipped = Path(app_dir) / "leaderboard" if app_dir else None
    if shipped is not None and shipped.is_dir():
        return [str(p) for p in sorted(shipped.iterdir()) if p.is_dir()]
    return [str(p) for p in CHECKOUT_SOURCES if p.exists()]


@dataclass
class LeaderboardView:
    """Boards built once from the sources; filtered and sorted per request."""

    sources: list[str]
    boards: list[Board]
    errors: list[str]
    num_records: int

    @classmethod
    def from_sources(cls, sources: list[str]) -> LeaderboardView:
        rows, errors = load_sources(sources, skip_errors=True)
        return cls(sources=list(sources), boards=build_boards(rows), errors=errors, num_records=len(rows))

    def choices(self) -> dict[str, list[str]]:
        """Filter values: every task, dataset, threat model and encoder family on some board."""
        def values(get):
            return [ALL] + list(dict.fromkeys(v for b in self.boards for v in get(b) if v))

        return {"task": values(lambda b: [b.task]), "dataset": values(lambda b: [b.dataset]),
                "threat": values(lambda b: [b.threat]), "family": values(lambda b: b.families)}  # fmt: skip

    def summary(self) -> str:
        text = (f"**{len(self.boards)} boards** from {self.num_records} records in {len(self.sources) - len(self.errors)} of "
                f"{len(self.sources)} sources: " + ", ".join(f"`{Path(s).name if Path(s).exists() else s}`" for s in self.sources)
                + ". One board per task × dataset × threat model × protocol; rows ranked by the strongest evaluation "
                "(the per-image worst case where measured, else the attack that hurt most, named in the row).")  # fmt: skip
        if self.errors:
            text += "\n\n**Sources left out:**\n" + "\n".join(f"- {e}" for e in self.errors)
        return text

    def select(self, task=None, dataset=None, threat=None, family=None) -> list[Board]:
        return filter_boards(self.boards, task=task, dataset=dataset, threat=threat, family=family)

    def tables(self, task=None, dataset=None, threat=None, family=None, sort_by: str = "rank",
               descending: bool = False) -> list[tuple[Board, list[str], list[list]]]:
        """(board, headers, rows) per selected board; `sort_by` is one of `SORT_KEYS`."""
        if sort_by not in SORT_KEYS:
            raise ValueError(f"sort_by must be one of {list(SORT_KEYS)}, got {sort_by!r}.")
        out = []
        for b in self.select(task, dataset, threat, family):
            column = f"{b.metric} (strongest)" if sort_by == "strongest" else sort_by
            headers, rows = board_table(b, sort_by=column, descending=descending)
            out.append((b, headers, rows))
        return out

    def as_json(self, task=None, dataset=None, threat=None, family=None, sort_by: str = "rank", descending: bool = False) -> list[dict]:
        """What the API returns: every selected board with its protocol, marker and sorted rows."""
        tables = self.tables(task, dataset, threat, family, sort_by, descending)
        return [dict(js, headers=headers, table=rows) for (_, headers, rows), js in zip(tables, boards_json([t[0] for t in tables]))]


def board_heading(board: Board) -> str:
    """Markdown shown above a board: title, protocol and, when protocols differ, the marker."""
    text = f"#### {board.title}\nProtocol: {board.protocol_text()}."
    return text + (f"\n\n**{board.note}**" if board.note else "")
