"""pyproject.toml: the declared torch floor is one the code and its dependencies really run on."""

import importlib.metadata
import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _torch_floor(requirements) -> Version | None:
    floors = [Version(spec.version) for r in requirements if (req := Requirement(r)).name == "torch"
              for spec in req.specifier if spec.operator == ">="]
    return max(floors) if floors else None


def test_pyproject__torch_floor_covers_code_and_dependencies():
    deps = re.search(r"^dependencies = \[(.*?)^\]", PYPROJECT.read_text(), re.S | re.M).group(1)
    declared = _torch_floor(re.findall(r'"([^"]+)"', deps))
    # the code: torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype (precision.py) are torch >= 2.4
    needed = {"hf_ssl_robust": Version("2.4")}
    for dist in ("transformers", "accelerate"):  # transformers 5 turns torch off below its floor (2.6)
        floor = _torch_floor(importlib.metadata.requires(dist) or [])
        if floor is not None:
            needed[dist] = floor
    assert declared is not None and declared >= max(needed.values()), (declared, needed)
    space = [line.strip() for line in (PYPROJECT.parent / "space" / "requirements.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert _torch_floor(space) == declared  # the Space's ranges follow the package's
