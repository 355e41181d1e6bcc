"""Every ```python block of README.md, of the card templates and of the committed bundled cards runs, offline.

A snippet names things this machine cannot download (Hub ids) or files a user would have (a photo, heads
trained by `hf-ssl-robust train-head`). Before a block runs, these names are replaced by local stand-ins;
this table is the whole substitution, and a test checks that every row is still used:

| in the snippet                                      | stand-in                                                 |
|-----------------------------------------------------|----------------------------------------------------------|
| `"dinov2-small"` (README, library)                  | `"shapes-resnet-tiny"`, the bundled encoder              |
| `torch.rand(4, 3, 224, 224)` (README, library)      | 64×64 pixels (the bundled encoder's size; seconds, not minutes) |
| `steps=20` (attacks in README and the cards)         | `steps=2`: the code path runs; attack strength is tested elsewhere |
| `"hf-ssl-robust/shapes-resnet-tiny[-deacl]"` (cards) | the bundled encoder's folder                             |
| `"me/tiny-<task>-head"` (head card rendered so)      | a tiny head on the bundled encoder, saved in tmp         |
| `photo.jpg`                                          | scikit-image's coffee photo, written in the working dir |
| `outputs/heads/shapes-resnet-tiny-shapes-<task>`     | untrained tiny heads saved there (no training needed)    |

Each block runs in a fresh namespace, from a temporary working directory. The metric cards' examples
are doctests, run by tests/test_metrics.py.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from hf_ssl_robust import hub
from hf_ssl_robust.encoders import bundled_encoders
from hf_ssl_robust.heads import HEADS

from conftest import one_thread

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)

REPO = Path(__file__).resolve().parents[1]
BUNDLED = "shapes-resnet-tiny"
SIDE = 64  # the bundled encoder's native size
LABELS = {0: "background", 1: "square", 2: "disc"}
HEAD_ID = "me/tiny-{task}-head"


def substitutions(tmp_path: Path) -> dict[str, str]:
    subs = {'"dinov2-small"': f'"{BUNDLED}"', "torch.rand(4, 3, 224, 224)": f"torch.rand(4, 3, {SIDE}, {SIDE})",
            "steps=20": "steps=2"}
    for name, folder in bundled_encoders().items():
        subs[f'"hf-ssl-robust/{name}"'] = json.dumps(str(folder))
    for task in HEADS:
        subs[f'"{HEAD_ID.format(task=task)}"'] = json.dumps(str(tmp_path / "hub" / task))
    return subs


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def run_block(block: str, subs: dict[str, str], name: str) -> dict:
    for old, new in subs.items():
        block = block.replace(old, new)
    namespace: dict = {"__name__": "__snippet__"}
    exec(compile(block, name, "exec"), namespace)  # noqa: S102  (our own documentation)
    return namespace


def save_head(task: str, folder: Path) -> Path:
    kwargs = {"num_labels": len(LABELS), "id2label": LABELS} if task != "depth" else {}
    HEADS[task].from_encoder(BUNDLED, image_size=SIDE, **kwargs).save_pretrained(folder)
    metric = {"classification": "accuracy", "segmentation": "mean_iou", "depth": "rmse"}[task]
    (folder / "train_metrics.json").write_text(json.dumps({"task": task, "dataset": "shapes", "encoder": BUNDLED,
                                                           "metrics": {metric: 0.5, "num_samples": 8}}))
    return folder


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    from PIL import Image
    from skimage import data as skimage_data  # sample photos (the dev extra)

    Image.fromarray(skimage_data.coffee()).save(tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_readme__every_python_block_runs(workdir):
    readme = (REPO / "README.md").read_text()
    blocks = python_blocks(readme)
    assert len(blocks) >= 3, "README's python blocks were not found"
    if any("outputs/heads/shapes-resnet-tiny-shapes" in b for b in blocks):
        for task in HEADS:  # what `hf-ssl-robust train-head --encoder shapes-resnet-tiny --task <task>` saves
            save_head(task, workdir / "outputs" / "heads" / f"{BUNDLED}-shapes-{task}")
    subs = substitutions(workdir)
    for i, block in enumerate(blocks):
        run_block(block, subs, f"README.md python block {i + 1}")


@pytest.mark.parametrize("name", sorted(bundled_encoders()))
def test_encoder_card_template__blocks_run_with_the_hub_id_substituted(name, workdir):
    card = str(hub.render_encoder_card(bundled_encoders()[name], repo_id=f"hf-ssl-robust/{name}", bundled_name=name))
    blocks = python_blocks(card)
    assert any(f'load_encoder("{name}")' in b for b in blocks), "the card must say how to load the bundled copy today"
    assert sum(f"hf-ssl-robust/{name}" in b for b in blocks) >= 3
    subs = substitutions(workdir)
    spaces = [run_block(b, subs, f"{name} card block {i + 1}") for i, b in enumerate(blocks)]
    assert any("adv" in ns and ns["adv"].shape[0] == 2 for ns in spaces)


@pytest.mark.parametrize("path", [*(f"hf_ssl_robust/assets/{n}/README.md" for n in sorted(bundled_encoders())),
                                  *(f"model_cards/{n}.md" for n in sorted(bundled_encoders()))])
def test_committed_cards__blocks_run(path, workdir):
    blocks = python_blocks((REPO / path).read_text())
    assert blocks, path
    subs = substitutions(workdir)
    for i, block in enumerate(blocks):
        run_block(block, subs, f"{path} block {i + 1}")


@pytest.mark.parametrize("task", sorted(HEADS))
def test_head_card_template__blocks_run_with_the_hub_id_substituted(task, workdir):
    folder = save_head(task, workdir / "hub" / task)
    card = str(hub.render_head_card(folder, repo_id=HEAD_ID.format(task=task)))
    blocks = python_blocks(card)
    assert len(blocks) >= 2 and all(HEAD_ID.format(task=task) in b for b in blocks)
    subs = substitutions(workdir)
    for i, block in enumerate(blocks):
        run_block(block, subs, f"{task} head card block {i + 1}")


def test_substitution_table__every_row_is_used():
    """A row that no snippet needs any more is stale: drop it from the table (and this list)."""
    readme = "".join(python_blocks((REPO / "README.md").read_text()))
    cards = "".join(python_blocks((REPO / "model_cards" / f"{BUNDLED}.md").read_text()))
    head_card = (REPO / "hf_ssl_robust" / "templates" / "head_card.md").read_text()
    assert '"dinov2-small"' in readme and "torch.rand(4, 3, 224, 224)" in readme and "outputs/heads/shapes-resnet-tiny-shapes" in readme
    assert "steps=20" in readme and "steps=20" in cards
    assert f'"hf-ssl-robust/{BUNDLED}"' in cards and "photo.jpg" in cards + readme
    assert 'model="{{ repo_id }}"' in head_card
