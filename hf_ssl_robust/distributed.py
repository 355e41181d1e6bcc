"""Training that gives the same head on 1 or N processes.

Accelerate's default gives each process a full batch, so N processes would train with an N-times
larger batch and N-times fewer steps. Head training instead splits each **global** batch:

* `GlobalBatchSampler` draws the same shuffled order on every process (one seeded generator that
  advances once per epoch exactly as `DataLoader(shuffle=True, generator=...)` advances it, so one
  process reproduces a plain shuffled loader bit for bit) and gives process `r` the `r`-th contiguous chunk
  of every global batch.
* `global_mean_weight` rescales each process's mean loss by `local / (global / N)`, so that DDP's
  gradient average equals the gradient of the global batch's mean loss (chunks may differ by one).
* `synced_batchnorm` makes every `BatchNorm` compute its batch statistics over the global batch
  (a differentiable all-reduce of sums; `torch.nn.SyncBatchNorm` refuses CPU tensors), and update
  its running statistics as one process would.

    >>> sampler = GlobalBatchSampler(len(data), 16, seed=0, world=2, rank=accelerator.process_index, drop_last=True)
    >>> with synced_batchnorm(model, accelerator.num_processes):
    ...     loss = model(...).loss * global_mean_weight(len(chunk), 16, 2)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.utils.data import Sampler

__all__ = ["GlobalBatchSampler", "global_mean_weight", "min_across_processes", "synced_batchnorm"]


def _chunk(batch: list[int], world: int, rank: int) -> list[int]:
    size, extra = divmod(len(batch), world)
    start = rank * size + min(rank, extra)
    return batch[start : start + size + (rank < extra)]


class GlobalBatchSampler(Sampler[list[int]]):
    """This process's share of each shuffled global batch (see the module docstring).

    Args:
        n: dataset length.
        batch_size: the global batch size (the paper's 16 / 128), whatever the number of processes.
        seed: the shuffling seed; the order is the same on every process.
        world, rank: number of processes and this one's index.
        drop_last: drop a last, incomplete global batch.
        shuffle: draw a new order every epoch (False: dataset order).
    """

    def __init__(self, n: int, batch_size: int, *, seed: int, world: int = 1, rank: int = 0, drop_last: bool = False,
                 shuffle: bool = True):
        if batch_size < world:
            raise ValueError(f"The global batch size {batch_size} is smaller than the {world} processes: "
                             f"use a batch size of at least {world} or fewer processes.")
        self.n, self.batch_size, self.world, self.rank = n, batch_size, world, rank
        self.drop_last, self.shuffle = drop_last, shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def global_batches(self) -> Iterator[list[int]]:
        order = list(range(self.n))
        if self.shuffle:
            # The draws of a seeded `DataLoader(shuffle=True, generator=g)`, in its order: an int64 for the
            # workers' base seed, the permutation, and the empty tail permutation its RandomSampler draws
            # when exhausted. So one process trains exactly the heads that loader trained.
            torch.empty((), dtype=torch.int64).random_(generator=self.generator)
            order = torch.randperm(self.n, generator=self.generator).tolist()
            torch.randperm(self.n, generator=self.generator)
        for start in range(0, self.n, self.batch_size):
            batch = order[start : start + self.batch_size]
            if len(batch) < self.batch_size and self.drop_last:
                return
            if len(batch) < self.world:  # a tail too small to give every process an image: dropped on all
                return
            yield batch

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches():
            yield _chunk(batch, self.world, self.rank)

    def __len__(self) -> int:
        full, tail = divmod(self.n, self.batch_size)
        return full + (0 < tail and not self.drop_last and tail >= self.world)


def global_mean_weight(local: int, global_size: int, world: int) -> float:
    """Factor turning a process's mean loss into its share of the global mean under DDP's average."""
    return local * world / global_size


def min_across_processes(value: int, accelerator) -> int:
    """The smallest `value` over all processes (every process gets the same answer)."""
    if accelerator is None or accelerator.num_processes == 1:
        return int(value)
    t = torch.tensor([int(value)], device=accelerator.device)
    return int(accelerator.gather(t).min())


def _global_batchnorm(bn: nn.modules.batchnorm._BatchNorm, x: Tensor) -> Tensor:
    """`bn` in training mode with statistics over every process's batch."""
    from torch.distributed.nn.functional import all_reduce

    dims = [0, *range(2, x.ndim)]
    count = torch.tensor([x.numel() / x.shape[1]], device=x.device, dtype=torch.float64)
    stats = torch.cat([x.sum(dims).double(), (x.double() ** 2).sum(dims), count])
    stats = all_reduce(stats)  # differentiable: gradients flow back through every process's share
    c = x.shape[1]
    total = stats[-1]
    mean = stats[:c] / total
    var = (stats[c : 2 * c] / total - mean**2).clamp_min(0)
    if bn.track_running_stats and bn.running_mean is not None:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            unbiased = var * total / (total - 1).clamp_min(1)
            bn.running_mean.mul_(1 - m).add_(m * mean.to(bn.running_mean.dtype))
            bn.running_var.mul_(1 - m).add_(m * unbiased.to(bn.running_var.dtype))
    shape = [1, c] + [1] * (x.ndim - 2)
    y = (x - mean.to(x.dtype).view(shape)) / torch.sqrt(var.to(x.dtype).view(shape) + bn.eps)
    if bn.affine:
        y = y * bn.weight.view(shape) + bn.bias.view(shape)
    return y


@contextlib.contextmanager
def synced_batchnorm(model: nn.Module, world: int):
    """Inside the block, every BatchNorm of `model` in training mode uses global-batch statistics
    (no-op for one process, or when torch.distributed is not initialised)."""
    if world <= 1 or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        yield
        return
    patched = []
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            original = module.forward

            def forward(x, bn=module, original=original):
                return _global_batchnorm(bn, x) if bn.training else original(x)

            module.forward = forward
            patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward  # back to the class's forward

