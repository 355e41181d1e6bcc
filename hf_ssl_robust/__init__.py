"""hf_ssl_robust: adversarial robustness of self-supervised vision encoders, across tasks.

The public names load on first use (PEP 562), so that `hf-ssl-robust --help`, `--version` and the
command line's input checks answer without importing torch. The head classes register with
`transformers`' Auto classes and pipelines as soon as both this package and transformers' Auto
classes are imported, in either order, so `import hf_ssl_robust` still makes `pipeline(...)` and
`AutoModelFor*.from_pretrained` take our heads (see `_registration.py`).
"""

from __future__ import annotations

from importlib import metadata

from ._lazy import lazy_getattr
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


__getattr__ = lazy_getattr(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


register_heads_with_transformers()
