"""A fresh state for an implementation's first call (`first_call_s`): clear the caches it keeps that
the harness can reach, so the first call on a case pays what a new process would pay.

Reset: every `functools.lru_cache` at module level in the implementation's own module (the built-in
`fft` keeps its padded sizes and twiddle/plan-like tables there), and on CUDA torch's cuFFT plan cache
(`torch.backends.cuda.cufft_plan_cache[device]`). Not resettable: cuDNN's autotuning results (kept
per process by shape), the plan caches inside ATen's CPU FFT back-ends (pocketfft / MKL), the CUDA
caching allocator's pool, and caches an implementation keeps anywhere else (closures, class
attributes, other modules). Process-wide library loading is done once per job beforehand
(`warm_libraries`), so it is in no row."""
from __future__ import annotations

import sys
from typing import Callable

import torch
import torch.nn.functional as F

from .allocator import steady_heap
from .evict import line_flusher


def reset(fn: Callable, device: torch.device) -> list[str]:
    """Clear what can be cleared; return what was, by name."""
    done = []
    name = getattr(fn, "__module__", "") or ""
    # torch's own caches (F.conv2d's module is `torch`) are torch's, not the implementation's
    module = None if name == "torch" or name.startswith("torch.") else sys.modules.get(name)
    for name, obj in sorted(vars(module).items()) if module is not None else ():
        if callable(getattr(obj, "cache_clear", None)) and callable(getattr(obj, "cache_info", None)):
            obj.cache_clear()
            done.append(f"{module.__name__}.{name}")
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        torch.backends.cuda.cufft_plan_cache[index].clear()
        done.append("cufft_plan_cache")
    return done


def warm_libraries(device: torch.device, dtype: torch.dtype) -> None:
    """Load what every implementation shares (BLAS, the FFT back-end, cuDNN/cuBLAS handles) on a tiny
    problem, once per job and outside every budget, so no case pays for library loading; and put the
    C allocator in its steady state (harness.measure.allocator), so no timing depends on what the
    process allocated before."""
    steady_heap()
    if device.type == "cpu":
        line_flusher()  # the cold samples' eviction routine, mapped once (harness.measure.evict)
    try:
        x = torch.randn(1, 2, 8, 8, device=device).to(dtype).requires_grad_()
        w = torch.randn(2, 2, 3, 3, device=device).to(dtype).requires_grad_()
        F.conv2d(x, w, padding=1).sum().backward()
        (x.detach().flatten(1) @ x.detach().flatten(1).T).sum()
        torch.fft.irfft2(torch.fft.rfft2(x.detach().float())).sum()
    except (RuntimeError, TypeError, NotImplementedError):
        pass  # a device or dtype without some of these: the cases will say so themselves
