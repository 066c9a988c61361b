"""The practical ceiling of a device: measured GFLOP/s of a large square matmul, per device and
dtype, cached for the process (the basic launcher runs every job in one process, so a sweep pays for
it once). Achieved GFLOP/s divided by this is the roofline fraction the report shows."""
from __future__ import annotations

import functools
import math

import torch
from torch.utils.benchmark import Timer


@functools.lru_cache(maxsize=None)
def peak_gflops(device: str, dtype: torch.dtype, threads: int | None = None, size: int | None = None,
                min_run_time: float = 0.3) -> float:
    """GFLOP/s of `size`x`size` @ `size`x`size` (2*size^3 FLOPs) with the job's thread count; NaN if
    the device cannot do it."""
    dev = torch.device(device)
    if size is None:  # big enough to be compute-bound; CPUs emulate 16-bit types slowly
        size = 2048 if dev.type != "cpu" or dtype in (torch.float32, torch.float64) else 512
    try:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(size, size, generator=gen).to(dev, dtype)
        b = torch.randn(size, size, generator=gen).to(dev, dtype)
        a @ b  # warm-up
        m = Timer("a @ b", globals={"a": a, "b": b}, num_threads=threads or torch.get_num_threads()
                  ).blocked_autorange(min_run_time=min_run_time)
    except (RuntimeError, TypeError):
        return math.nan
    return 2 * size ** 3 / m.median / 1e9
