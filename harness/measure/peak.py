"""The practical ceiling of a device: measured GFLOP/s of a large square matmul, per device, dtype,
thread count and TF32 setting, cached for the process (the basic launcher runs every job in one
process, so a sweep pays for it once). Achieved GFLOP/s divided by this is the roofline fraction the
report shows. The job calls it inside its TF32 settings and with its CUDA device current: a float32
peak measured without TF32 under convolutions run with it would put the roofline above 100%."""
from __future__ import annotations

import functools
import math

import torch
from torch.utils.benchmark import Timer

from .devices import on_device


def matmul_size(device_type: str, dtype: torch.dtype) -> int:
    """Big enough to be compute-bound: 2048 fills a CPU; an H100's tensor cores need 8192 in 16-bit
    and TF32 (2048 leaves it launch- and tail-bound, under half its peak); CPUs emulate 16-bit slowly."""
    if device_type == "cuda":
        return 4096 if dtype == torch.float64 else 8192
    if device_type == "cpu" and dtype not in (torch.float32, torch.float64):
        return 512
    return 2048


def peak_gflops(device: str, dtype: torch.dtype, threads: int | None = None, size: int | None = None,
                min_run_time: float = 0.3, allow_tf32: bool | None = None) -> float:
    """GFLOP/s of `size`x`size` @ `size`x`size` (2*size^3 FLOPs) with the job's thread count and TF32
    setting (default: torch's current one); NaN if the device cannot do it."""
    if allow_tf32 is None:
        allow_tf32 = torch.backends.cuda.matmul.allow_tf32
    return _peak(device, dtype, threads, size, min_run_time, bool(allow_tf32))


@functools.lru_cache(maxsize=None)
def _peak(device: str, dtype: torch.dtype, threads: int | None, size: int | None, min_run_time: float,
          allow_tf32: bool) -> float:
    dev = torch.device(device)
    size = size or matmul_size(dev.type, dtype)
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    try:
        with on_device(dev):  # Timer synchronizes the *current* CUDA device: make it this one
            a = torch.rand(size, size, device=dev).to(dtype)  # values do not matter; made on the device
            b = torch.rand(size, size, device=dev).to(dtype)
            a @ b  # warm-up
            m = Timer("a @ b", globals={"a": a, "b": b}, num_threads=threads or torch.get_num_threads()
                      ).blocked_autorange(min_run_time=min_run_time)
    except (RuntimeError, TypeError, AssertionError):  # CPU-only builds assert on a CUDA device
        return math.nan
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    return 2 * size ** 3 / m.median / 1e9
