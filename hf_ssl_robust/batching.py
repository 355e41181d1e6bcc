"""Pick the largest batch size that fits in memory (`--batch_size auto`).

    >>> from hf_ssl_robust.batching import find_max_batch_size
    >>> batch = find_max_batch_size(lambda b: attack.perturb(model, pixels[:b], labels[:b]), start=256)

CUDA: run `fn(batch)` from `start` down, halving on `torch.cuda.OutOfMemoryError` (and on
CUDA "out of memory" `RuntimeError`s), and return the first batch size that runs.

CPU: an out-of-memory on Linux does not raise, the kernel kills the process, so trial and error
is not an option. Instead `fn(probe)` runs once at a small probe batch; the growth of the
process's peak resident memory (`VmHWM` in `/proc/self/status`, whose peak is reset through
`/proc/self/clear_refs` before the probe; `ru_maxrss` where that is not possible) divided by the
probe batch is the memory per sample. The budget is `fraction` × the memory available now
(`MemAvailable` in `/proc/meminfo`, or psutil), and the result is
`min(start, budget // per_sample)`, at least `min_batch`. Memory per sample is close to linear in
the batch for the attacks (activations dominate), so this errs slightly on the safe side.
"""

from __future__ import annotations

import resource
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = ["available_memory_bytes", "find_max_batch_size", "peak_rss_bytes", "reset_peak_rss"]


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (`VmHWM`) to its current RSS; False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Peak resident memory of this process since start or the last `reset_peak_rss()`."""
    kb = _status_kb("VmHWM")
    if kb is None:  # no /proc: ru_maxrss is in kB on Linux, bytes on macOS
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return maxrss if maxrss > 1 << 32 else maxrss * 1024
    return kb * 1024


def current_rss_bytes() -> int:
    kb = _status_kb("VmRSS")
    if kb is not None:
        return kb * 1024
    import psutil

    return psutil.Process().memory_info().rss


def available_memory_bytes() -> int:
    """Memory the system can still give (MemAvailable), in bytes."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import psutil

    return psutil.virtual_memory().available


def _is_oom(err: BaseException) -> bool:
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def find_max_batch_size(
    fn: Callable[[int], object],
    start: int,
    *,
    device: str | torch.device = "cpu",
    min_batch: int = 1,
    probe: int = 2,
    fraction: float = 0.7,
) -> int:
    """Largest batch size `b <= start` for which `fn(b)` fits in memory.

    Args:
        fn: runs the workload at batch size `b` (e.g. one attack step on `b` images).
        start: the largest batch size to consider.
        device: where `fn` allocates; "cuda" halves on OOM, anything else uses the CPU estimate.
        min_batch: never return less (CUDA: raise if even this does not fit).
        probe: CPU only: the batch size of the single measuring run.
        fraction: CPU only: share of the currently available memory that may be used.
    """
    if start < min_batch:
        raise ValueError(f"start={start} must be >= min_batch={min_batch}.")
    if torch.device(device).type == "cuda":
        batch = start
        while True:
            try:
                fn(batch)
                return batch
            except Exception as err:  # noqa: BLE001 - only OOM is handled, the rest re-raised
                if not _is_oom(err) or batch <= min_batch:
                    raise
            torch.cuda.empty_cache()
            batch = max(min_batch, batch // 2)
    probe = max(1, min(probe, start))
    before = current_rss_bytes()
    reset_peak_rss()
    fn(probe)
    per_sample = max(peak_rss_bytes() - before, 1) / probe
    budget = fraction * available_memory_bytes()
    return int(max(min_batch, min(start, budget // per_sample)))
