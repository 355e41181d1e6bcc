"""DataLoader helpers: per-image indices (for per-image attack seeds) and the number of workers.

    >>> loader = DataLoader(IndexedDataset(ds), batch_size=8, collate_fn=collate, num_workers=resolve_num_workers("auto", ds))
"""

from __future__ import annotations

import os

import torch

from .loading import ShapesTensorDataset, UnifiedDataset

__all__ = ["IndexedDataset", "resolve_num_workers"]


class IndexedDataset(torch.utils.data.Dataset):
    """Adds each sample's position (``index``) to it, so that per-image seeds do not depend on batching."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.spec = getattr(dataset, "spec", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {**self.dataset[index], "index": torch.tensor(int(index), dtype=torch.int64)}


def resolve_num_workers(value: int | str, dataset=None) -> int:
    """DataLoader workers for ``value`` (an int or ``"auto"``). ``auto``: 0 for data already in memory
    (ShapesWorld tensors, cached features: workers would only add start-up time), otherwise one
    worker per free core (one core left for the model, split between local processes), at most 8.

    Raises:
        ValueError: neither ``"auto"`` nor an integer >= 0.
    """
    if str(value) != "auto":
        from ..configs import check_num_workers

        return check_num_workers(value)
    inner = dataset
    while hasattr(inner, "dataset") and not isinstance(inner, UnifiedDataset):  # Subset, IndexedDataset
        inner = inner.dataset
    if isinstance(inner, ShapesTensorDataset) or getattr(inner, "in_memory", False):
        return 0
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(0, min(8, ((os.cpu_count() or 1) - 1) // max(local, 1)))
