"""Run the three metric meters under `accelerate launch` and write their state as JSON.

Used by tests/test_metrics_distributed.py:

    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --num_machines 1 \
        --mixed_precision no --dynamo_backend no tests/scripts/metrics_ddp.py --out result.json

The dataset size (NUM_SAMPLES) is not a multiple of processes × batch size, so the distributed
sampler pads the last step with duplicated samples, which `gather_for_metrics` must drop.
`meter_state(run_meters(loader))` on one process, without gather, is the reference.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch.utils.data import DataLoader, Dataset

from hf_ssl_robust.metrics.functional import AccuracyMeter, DepthMeter, MeanIoUMeter

NUM_SAMPLES = 13  # 2 processes x batch 3 = 6 per step: 13 leaves a remainder of 1
BATCH_SIZE = 3
NUM_LABELS = 5
SIZE = 8


class ToyDataset(Dataset):
    """Deterministic random samples carrying all three tasks' predictions and references."""

    def __init__(self, n: int = NUM_SAMPLES, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.logits = torch.randn(n, NUM_LABELS, generator=g)
        self.labels = torch.randint(0, NUM_LABELS, (n,), generator=g)
        self.seg_pred = torch.randint(0, NUM_LABELS, (n, SIZE, SIZE), generator=g)
        self.seg_ref = torch.randint(0, NUM_LABELS, (n, SIZE, SIZE), generator=g)
        self.seg_ref[torch.rand(n, SIZE, SIZE, generator=g) < 0.2] = 255
        self.depth_ref = torch.rand(n, SIZE, SIZE, generator=g) * 12  # some above max_depth=10
        self.depth_ref[torch.rand(n, SIZE, SIZE, generator=g) < 0.1] = 0.0  # holes
        self.depth_ref[n - 1] = 0.0  # the last image (a padding candidate) has no valid pixel
        self.depth_pred = (self.depth_ref + torch.randn(n, SIZE, SIZE, generator=g)).abs() + 0.01

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {
            "logits": self.logits[i],
            "label": self.labels[i],
            "seg_pred": self.seg_pred[i],
            "seg_ref": self.seg_ref[i],
            "depth_pred": self.depth_pred[i],
            "depth_ref": self.depth_ref[i],
        }


def get_dataloader() -> DataLoader:
    return DataLoader(ToyDataset(), batch_size=BATCH_SIZE, shuffle=False)


def run_meters(loader, gather=None):
    """Feed every batch to the three meters; ``gather`` is e.g. ``accelerator.gather_for_metrics``."""
    meters = (AccuracyMeter(), MeanIoUMeter(NUM_LABELS, ignore_index=255), DepthMeter(max_depth=10.0))
    for batch in loader:
        meters[0].update(batch["logits"], batch["label"], gather=gather)
        meters[1].update(batch["seg_pred"], batch["seg_ref"], gather=gather)
        meters[2].update(batch["depth_pred"], batch["depth_ref"], gather=gather)
    return meters


def meter_state(meters) -> dict:
    """Everything worth comparing, JSON-ready: exact counts and float results."""
    from hf_ssl_robust.uncertainty import bootstrap_interval

    acc, miou, depth = meters
    return {
        "accuracy": {"correct": acc.correct, "num_samples": acc.num_samples, **acc.compute()},
        "mean_iou": {
            "num_samples": miou.num_samples,
            **{key: value.tolist() for key, value in miou.totals.items()},
            **miou.compute(),
        },
        "depth": {"num_samples": depth.num_samples, "num_scored": depth.num_scored, **depth.compute()},
        "intervals": {metric: list(bootstrap_interval(meter.per_image(), metric, num_resamples=200, seed=0))
                      for meter, metric in ((acc, "accuracy"), (miou, "mean_iou"), (depth, "rmse"))},
        "per_image_rows": [len(next(iter(m.per_image().values()))) for m in meters],
    }


def main() -> None:
    from accelerate import Accelerator

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True, help="JSON file written by the main process")
    args = parser.parse_args()

    accelerator = Accelerator()
    loader = accelerator.prepare(get_dataloader())
    state = meter_state(run_meters(loader, gather=accelerator.gather_for_metrics))
    state["num_processes"] = accelerator.num_processes
    if accelerator.is_main_process:
        with open(args.out, "w") as f:
            json.dump(state, f, indent=1)
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main()
