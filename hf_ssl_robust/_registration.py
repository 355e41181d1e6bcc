"""Register the head classes with `transformers` without importing torch at `import hf_ssl_robust`.

`import hf_ssl_robust` followed by `pipeline(..., model=head_folder)` or `AutoModelFor*.from_pretrained`
must work (the heads' model types are ours). Registering needs torch and transformers, which cost
seconds to import; the command line's `--help` and input checks need neither. So registration runs
when both packages are imported: at once if `transformers` already is, else right after
`transformers` finishes importing (a one-shot import hook that wraps its loader).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

_TARGET = "transformers"


def _register() -> None:
    importlib.import_module("hf_ssl_robust.heads")  # its import registers the configs and models


class _RegisterAfterTransformers(importlib.abc.MetaPathFinder):
    """Finds nothing itself; when `transformers` is about to load, wraps its loader to register afterwards."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _TARGET:
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)  # one shot, and the real finders locate transformers
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader, exec_module = spec.loader, spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            _register()

        loader.exec_module = exec_then_register  # the loader instance belongs to this one module
        return spec


def register_heads_with_transformers(package) -> None:
    if getattr(package, "_heads_hook_installed", False):
        return
    package._heads_hook_installed = True
    if _TARGET in sys.modules:
        _register()
    elif not any(isinstance(f, _RegisterAfterTransformers) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterTransformers())
