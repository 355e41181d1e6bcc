"""Images of different sizes never share a padded canvas; EmbedAttack reads what each head reads."""

import pytest
import torch
from torch.utils.data import DataLoader

from hf_ssl_robust.attacks import make_attack
from hf_ssl_robust.data import IndexedDataset, collate, get_dataset_spec
from hf_ssl_robust.evaluation import evaluate
from hf_ssl_robust.heads import SSLForDepthEstimation, SSLForSemanticSegmentation
from hf_ssl_robust.tasks import get_task

SIZES = [(24, 40), (32, 32), (40, 24), (24, 40), (30, 30)]


class _Mixed(torch.utils.data.Dataset):
    """Unified samples of several sizes (what eval_transform makes of ADE20k / VOC)."""

    def __init__(self, task: str):
        self.task = task
        gen = torch.Generator().manual_seed(0)
        self.items = []
        for h, w in SIZES:
            x = torch.rand(3, h, w, generator=gen) * 0.6 + 0.2
            if task == "segmentation":
                target = {"mask": torch.randint(0, 7, (h, w), generator=gen)}
            else:
                target = {"depth": torch.rand(h, w, generator=gen) * 9 + 0.5}
            self.items.append({"pixel_values": x, **target})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _head(task, encoder):
    torch.manual_seed(0)
    if task == "segmentation":
        return SSLForSemanticSegmentation.from_encoder(encoder, num_labels=7, image_size=24).eval()
    return SSLForDepthEstimation.from_encoder(encoder, image_size=24).eval()


@pytest.mark.parametrize("task_name", ["segmentation", "depth"])
def test_evaluate__mixed_sizes_independent_of_batch_size(task_name, tiny_encoder):
    """Clean and attacked metrics and per-image predictions are the same for batch 1 and batch 5."""
    task, spec = get_task(task_name), get_dataset_spec("shapes", task=task_name)
    model, data = _head(task_name, tiny_encoder), _Mixed(task_name)
    attacks = {name: make_attack(name, eps=8 / 255, step_size=2 / 255, steps=1, seed=0, **task.attack_kwargs(name, spec))
               for name in ("embed", task.task_attack)}
    runs = {}
    for bs in (1, len(data)):
        preds = []
        loader = DataLoader(IndexedDataset(data), batch_size=bs, collate_fn=collate)
        keep = lambda batch, p: preds.extend(p["none"][i] for i in range(p["none"].shape[0]))  # noqa: E731
        runs[bs] = (evaluate(model, loader, task, spec, attacks=attacks, on_batch=keep), preds)
    (alone, alone_preds), (batched, batched_preds) = runs[1], runs[len(data)]
    for i, (h, w) in enumerate(SIZES):  # each image's clean prediction, alone or next to larger ones
        assert torch.allclose(alone_preds[i], batched_preds[i][:h, :w], atol=1e-5)
    for name in ["none", *attacks]:  # the same numbers up to summation order across batches
        for metric, value in alone[name].items():
            assert batched[name][metric] == pytest.approx(value, rel=1e-6, abs=1e-9), (name, metric)


@pytest.mark.parametrize("task_name,size", [("depth", (30, 38)), ("segmentation", (30, 60))])
def test_embed_attack__perturbs_every_pixel_the_head_reads(task_name, size, tiny_encoder):
    """Sides that are not multiples of the patch (8) and a non-square image: one sign step from the
    random start moves EVERY pixel by the full step, i.e. each pixel gets gradient from the head's tokens."""
    model = _head(task_name, tiny_encoder) if task_name == "depth" else SSLForSemanticSegmentation.from_encoder(
        tiny_encoder, num_labels=7, image_size=30).eval()
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.25
    eps = 8 / 255
    start = make_attack("embed", eps=eps, steps=0, seed=3).perturb(model, x).pixels  # the random start alone
    adv = make_attack("embed", eps=eps, step_size=1.0, steps=1, seed=3).perturb(model, x).pixels
    moved = (adv - start).abs() > 1e-7
    assert bool(moved.all()), f"{int((~moved).sum())} pixels never moved"


def test_embed_attack__targets_the_window_tokens(tiny_encoder):
    """Segmentation on a 32x64 image with 32-px windows at stride 16: 3 windows of 4x4 tokens are attacked."""
    from hf_ssl_robust.attacks.embed import EmbedAttack

    model = SSLForSemanticSegmentation.from_encoder(tiny_encoder, num_labels=7, image_size=32, window_stride=16).eval()
    tokens = EmbedAttack().forward(model, torch.rand(2, 3, 32, 64))
    assert tokens.shape == (2, 3 * 4 * 4 * tiny_encoder.hidden_size)


def test_embed_attack__depth_targets_cls_and_patch_tokens(tiny_encoder):
    """The depth head reads the pre-LN CLS token next to every patch token: EmbedAttack targets both."""
    from hf_ssl_robust.attacks.embed import EmbedAttack

    model, x = _head("depth", tiny_encoder), torch.rand(2, 3, 30, 38)
    tokens = EmbedAttack().forward(model, x)
    d = tiny_encoder.hidden_size
    assert tokens.shape == (2, (1 + 4 * 5) * d)  # 30x38 centre-padded to 32x40: 4x5 patches, plus CLS
    with torch.no_grad():
        cls = model.encode_features(x)[:, d:, 0, 0]  # the CLS half of what the head reads
    torch.testing.assert_close(tokens[:, :d], cls)
