"""Run a script as ``python SCRIPT ARGS`` would, with every development install of hf_ssl_robust hidden.

    python tests/scripts/run_without_project.py SCRIPT [ARGS ...]

Hidden: the finder that an editable install (``pip install -e .``) appends to ``sys.meta_path``,
its path hook entry, and any ``sys.path`` entry (``PYTHONPATH``, a checkout) holding an
``hf_ssl_robust`` folder other than the script's own folder. So ``import hf_ssl_robust`` can only
find a package next to SCRIPT, as on a Space. The first line printed says where it came from:
``hf_ssl_robust: <path of __init__.py>`` or ``hf_ssl_robust: not importable``.
"""

import runpy
import sys
from pathlib import Path

script = Path(sys.argv[1]).resolve()
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
sys.path[:] = [str(script.parent)] + [
    p for p in sys.path[1:] if "__editable__" not in p and not (Path(p or ".") / "hf_ssl_robust").is_dir()
]
try:
    import hf_ssl_robust

    print(f"hf_ssl_robust: {hf_ssl_robust.__file__}", flush=True)
except ModuleNotFoundError:
    print("hf_ssl_robust: not importable", flush=True)
sys.argv = [str(script), *sys.argv[2:]]
runpy.run_path(str(script), run_name="__main__")
