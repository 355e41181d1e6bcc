"""hf_ssl_robust: adversarial robustness of self-supervised vision encoders, across tasks.

The public names load on first use (PEP 562), so that `hf-ssl-robust --help`, `--version` and the
command line's input checks answer without importing torch. The head classes register with
`transformers`' Auto classes and pipelines as soon as both this package and transformers' Auto
classes are imported, in either order, so `import hf_ssl_robust` still makes `pipeline(...)` and
`AutoModelFor*.from_pretrained` take our heads (see `_registration.py`).
"""

from __future__ import annotations

import importlib
import importlib.util
from importlib import metadata

from ._registration import register_heads_with_transformers


def _package_version() -> str:
    """The installed distribution's version (pyproject.toml is its single source)."""
    try:
        return metadata.version("hf-ssl-robust")
    except metadata.PackageNotFoundError:  # a copied package folder (the Space build) or a bare checkout
        return "0+unknown"


__version__ = _package_version()

_LAZY = {
    "ATTACKS": ".attacks",
    "Attack": ".attacks",
    "AttackResult": ".attacks",
    "make_attack": ".attacks",
    "EncoderNotFoundError": ".encoders",
    "EncoderOutput": ".encoders",
    "PixelEncoder": ".encoders",
    "load_encoder": ".encoders",
    "HEADS": ".heads",
    "SSLForDepthEstimation": ".heads",
    "SSLForImageClassification": ".heads",
    "SSLForSemanticSegmentation": ".heads",
}

__all__ = sorted([*_LAZY, "__version__"])


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # later look-ups skip this hook
        return value
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f".{name}", __name__)  # `hf_ssl_robust.heads` as the eager package allowed
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


register_heads_with_transformers()
