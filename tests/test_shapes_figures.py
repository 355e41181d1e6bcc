"""docs/shapesworld.png and docs/view_pairs.png show what today's renderer draws (their sidecars' digests)."""

import json
from pathlib import Path

import pytest
from PIL import Image

from hf_ssl_robust.shapes_figures import digest, main, scenes

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize("name", ["shapesworld", "view_pairs"])
def test_committed_shapes_figure__matches_the_current_renderer(name):
    """Fails when render_scenes changes and the figure is not regenerated (python scripts/make_shapes_figure.py)."""
    sidecar = json.loads((DOCS / f"{name}.json").read_text())
    batches = scenes(sidecar["num"], sidecar["image_size"], sidecar["seed"], sidecar["start"], sidecar["view_pairs"])
    assert digest(batches) == sidecar["digest"], f"docs/{name}.png is stale: regenerate it with scripts/make_shapes_figure.py"
    assert Image.open(DOCS / f"{name}.png").size[0] > 500


def test_shapes_figure_digest__changes_with_the_scenes():
    assert digest(scenes(2, 32, 0, 0)) != digest(scenes(2, 32, 0, 1))
    first, second = scenes(2, 32, 0, 0, view_pairs=True)
    assert digest([first]) != digest([second])  # the two renders differ in appearance...
    assert (first["mask"] == second["mask"]).all() and (first["depth"] == second["depth"]).all()  # ...not in geometry


def test_make_shapes_figure__writes_png_and_sidecar(tmp_path, capsys):
    out = main(["--view_pairs", "--num", "2", "--image_size", "32", "--output", str(tmp_path / "pairs.png")])
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["view_pairs"] and sidecar["num"] == 2 and out.stat().st_size > 1000
    assert sidecar["digest"] == digest(scenes(2, 32, sidecar["seed"], 10, view_pairs=True))
