"""'Did you mean ...?' for names the user mistyped (encoders, presets, attacks, datasets, tasks, commands)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def close_matches(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """The known names closest to `name` (case-insensitive), best first; [] when none is close."""
    choices = [str(c) for c in choices]
    lowered = {c.lower(): c for c in choices}
    found = difflib.get_close_matches(str(name).lower(), list(lowered), n=n, cutoff=0.6)
    return [lowered[f] for f in found]


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' or ' (did you mean 'x' or 'y'?)', or '' when nothing is close.

    Example:
        >>> f"Unknown dataset 'cifar1O'{did_you_mean('cifar1O', ['cifar10', 'cifar100'])}"
        "Unknown dataset 'cifar1O' (did you mean 'cifar10' or 'cifar100'?)"
    """
    found = close_matches(name, choices)
    if not found:
        return ""
    return " (did you mean " + " or ".join(repr(f) for f in found) + "?)"
