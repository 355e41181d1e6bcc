"""Register the head classes with `transformers` without importing torch at `import hf_ssl_robust`.

`import hf_ssl_robust` followed by `pipeline(..., model=head_folder)` or `AutoModelFor*.from_pretrained`
must work (the heads' model types are ours). Registering needs torch and transformers, which cost
seconds to import; the command line's `--help` and input checks need neither. So registration runs
as soon as this package and transformers' Auto machinery (`transformers.models.auto.configuration_auto`,
which `AutoConfig`, `AutoModelFor*` and `pipeline` all import, and which imports torch anyway) are both
imported, in either order; `from transformers import HfArgumentParser` alone does not trigger it:

* right after that module finishes importing (an import hook wraps its loader), unless one of our own
  modules is the one importing it (registering then would re-enter that half-initialised module), in
  which case
* right after the outermost of our submodules finishes importing (a hook on `hf_ssl_robust.*`).
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys

_PACKAGE = "hf_ssl_robust"
_TARGET = "transformers.models.auto.configuration_auto"
_state = {"registered": False, "busy": False}


def _initializing(name: str) -> bool:
    module = sys.modules.get(name)
    return module is not None and bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def _try_register(transformers_ready: bool = False, finishing: str | None = None) -> None:
    """Import the heads if transformers is loaded and none of our modules is mid-import.

    `finishing`: the module whose loader calls this as its last step (still flagged as initialising)."""
    if _state["registered"] or _state["busy"]:
        return
    if not transformers_ready and (_TARGET not in sys.modules or _initializing(_TARGET)):
        return
    if any(_initializing(name) for name in list(sys.modules) if name.startswith(_PACKAGE + ".") and name != finishing):
        return  # one of ours is importing transformers: register once it is done
    _state["busy"] = True
    try:
        importlib.import_module(f"{_PACKAGE}.heads")  # its import registers the configs and models
        _state["registered"] = True
    finally:
        _state["busy"] = False


def _wrap(spec, after) -> None:
    loader = spec.loader
    if loader is None or not hasattr(loader, "exec_module"):
        return
    exec_module = loader.exec_module

    def exec_then(module):
        exec_module(module)
        after()

    loader.exec_module = exec_then  # the loader instance belongs to this one module


class _RegistrationHook(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loaders of `_TARGET` and of our submodules (see the module doc)."""

    def find_spec(self, fullname, path=None, target=None):
        if _state["registered"]:
            return None
        if fullname == _TARGET:
            after = lambda: _try_register(transformers_ready=True)  # noqa: E731
        elif fullname.startswith(_PACKAGE + "."):
            after = lambda: _try_register(finishing=fullname)  # noqa: E731
        else:
            return None
        spec = self._real_spec(fullname, path, target)
        if spec is not None:
            _wrap(spec, after)
        return spec

    def _real_spec(self, fullname, path, target):
        """The spec the finders after this one give (editable installs have finders of their own)."""
        finders = list(sys.meta_path)
        for finder in finders[finders.index(self) + 1:] if self in finders else finders:
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec else None
            if spec is not None:
                return spec
        return None


def register_heads_with_transformers() -> None:
    """Called by `hf_ssl_robust/__init__.py`: register now if transformers is loaded, else when it is."""
    if not any(isinstance(f, _RegistrationHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegistrationHook())
    _try_register()
