"""Is data loading the bottleneck of head training? Share of an epoch spent waiting for batches.

One segmentation-head training epoch (the paper's recipe: short-side resize, random crop, flip,
batch 16) on a frozen tiny encoder, reading a VOC-like local dataset of JPEG images (375x500 and
500x375, palette PNG masks; or your own `--data_dir` copy of a registered dataset), once with the
data loaded in the main process and once with `num_workers` worker processes. For each it reports
the epoch time and the share of it spent waiting for the next batch.

    nice -n 10 python scripts/bench_data_loading.py --num_images 96 --image_size 224 --workers 0 auto \
        --output outputs/bench/data_loading.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import Dinov2Config, Dinov2Model  # noqa: E402

from hf_ssl_robust.data import collate, make_dataset, train_transform  # noqa: E402
from hf_ssl_robust.data.loaders import resolve_num_workers  # noqa: E402
from hf_ssl_robust.heads import SSLForSemanticSegmentation  # noqa: E402
from hf_ssl_robust.results import write_json  # noqa: E402


def write_voc_like(root: Path, n: int, seed: int = 0) -> str:
    """`n` JPEG photos-sized images (landscape and portrait) with palette masks, as save_to_disk."""
    import datasets

    rng = np.random.default_rng(seed)
    images, masks = [], []
    for i in range(n):
        h, w = (375, 500) if i % 2 == 0 else (500, 375)
        smooth = rng.random((h // 25 + 1, w // 25 + 1, 3))  # low-frequency content compresses like a photo
        img = np.kron(smooth, np.ones((25, 25, 1)))[:h, :w] * 255
        images.append(Image.fromarray(img.astype(np.uint8)))
        mask = Image.fromarray(rng.integers(0, 21, (h // 25 + 1, w // 25 + 1)).repeat(25, 0).repeat(25, 1)[:h, :w].astype(np.uint8), mode="P")
        mask.putpalette([v for k in range(256) for v in (k, 255 - k, (7 * k) % 256)])
        masks.append(mask)
    buf = []
    for img in images:  # store as JPEG bytes, as the Hub copy does
        path = root / f"img{len(buf)}.jpg"
        img.save(path, quality=90)
        buf.append(str(path))
    features = datasets.Features({"image": datasets.Image(), "mask": datasets.Image()})
    ds = datasets.Dataset.from_dict({"image": buf, "mask": masks}, features=features)
    datasets.DatasetDict({"train": ds, "val": ds.select(range(2))}).save_to_disk(str(root / "voc"))
    return str(root / "voc")


def epoch(model, dataset, workers: int, batch_size: int) -> dict:
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=collate, num_workers=workers,
                                         generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(model.head_parameters(), lr=1e-4)
    model.train()
    wait = compute = 0.0
    start = time.perf_counter()
    it = iter(loader)
    while True:
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            break
        t1 = time.perf_counter()
        out = model(pixel_values=batch["pixel_values"], labels=batch["mask"])
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        wait, compute = wait + (t1 - t0), compute + (time.perf_counter() - t1)
    total = time.perf_counter() - start
    return {"workers": workers, "epoch_s": round(total, 3), "wait_s": round(wait, 3), "compute_s": round(compute, 3),
            "wait_fraction": round(wait / total, 4)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=None, help="A local copy of voc2012 (default: write a VOC-like one).")
    parser.add_argument("--num_images", type=int, default=96)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--workers", nargs="+", default=["0", "auto"])
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    backbone = Dinov2Model(Dinov2Config(hidden_size=128, num_hidden_layers=4, num_attention_heads=2, patch_size=8, mlp_ratio=4)).eval()
    model = SSLForSemanticSegmentation.from_encoder(backbone, num_labels=21, image_size=args.image_size)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or write_voc_like(Path(tmp), args.num_images)
        dataset = make_dataset("voc2012", "train", data_dir=data_dir, num_samples=args.num_images,
                               transform=train_transform("segmentation", args.image_size, seed=0))
        results = [epoch(model, dataset, resolve_num_workers(w, dataset), args.batch_size) for w in args.workers]
    report = {"images": len(dataset), "image_size": args.image_size, "batch_size": args.batch_size, "cpus": os.cpu_count(),
              "torch_threads": torch.get_num_threads(), "machine": platform.machine(), "runs": results}
    print(json.dumps(report, indent=2))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        write_json(args.output, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
