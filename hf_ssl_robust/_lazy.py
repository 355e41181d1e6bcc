"""Lazy attributes for a package's `__init__` (PEP 562): names imported from their submodule on first use."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable


def lazy_getattr(package: str, lazy: dict[str, str]) -> Callable[[str], object]:
    """A module `__getattr__` for ``package``: ``lazy`` maps a public name to the relative module holding it;
    any other public name that is a submodule is imported as one (as an eager package would allow)."""

    def __getattr__(name: str):
        if name in lazy:
            value = getattr(importlib.import_module(lazy[name], package), name)
            setattr(sys.modules[package], name, value)  # later look-ups skip this hook
            return value
        if not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
            return importlib.import_module(f".{name}", package)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
