"""Wall time per named phase of a run, for `run_info.json` ("where did the minutes go").

    >>> timer = PhaseTimer()
    >>> with timer("data/shapes eval"):
    ...     dataset = make_dataset(...)
    >>> with timer("head training/classification/shapes"):
    ...     train_head(...)
    >>> timer.as_dict()        # {"data/shapes eval": 0.41, "head training/classification/shapes": 12.3}

A phase entered again adds to its total (and counts the entries); phases may nest, each keeping its
own total, so nested totals are not meant to be summed with their parent. On a GPU pass
`synchronize=torch.cuda.synchronize` so that queued kernels are charged to the phase that launched them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

__all__ = ["PhaseTimer"]


class PhaseTimer:
    """Accumulates wall seconds per phase name (insertion order kept)."""

    def __init__(self, synchronize: Callable[[], None] | None = None, clock: Callable[[], float] = time.perf_counter):
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._sync = synchronize or (lambda: None)
        self._clock = clock

    @contextlib.contextmanager
    def __call__(self, name: str):
        if not name:
            raise ValueError("a phase needs a name, e.g. timer('head training/depth/nyu_depth_v2')")
        self._sync()
        start = self._clock()
        try:
            yield self
        finally:  # an interrupted phase still shows what it cost
            self._sync()
            self.seconds[name] = self.seconds.get(name, 0.0) + self._clock() - start
            self.calls[name] = self.calls.get(name, 0) + 1

    def as_dict(self, digits: int = 2) -> dict[str, float]:
        """`{phase: seconds}` rounded, for JSON."""
        return {name: round(value, digits) for name, value in self.seconds.items()}

    def summary(self) -> str:
        """One line per phase, longest first, with its share of the top-level phases (names without '/')."""
        top = sum(v for k, v in self.seconds.items() if "/" not in k) or sum(self.seconds.values()) or 1.0
        rows = sorted(self.seconds.items(), key=lambda kv: -kv[1])
        return "\n".join(f"{v:8.1f} s {100 * v / top:5.1f} %  {k}" + (f" (×{self.calls[k]})" if self.calls[k] > 1 else "") for k, v in rows)
