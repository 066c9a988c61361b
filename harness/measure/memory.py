"""Peak memory of one call, above what was live before it.

CUDA has allocator statistics. The CPU allocator keeps none, so there the profiler's memory events
(every allocation and free, with its size and time) are replayed to find the high-water mark; frees of
blocks allocated before the call carry no size and are left out, which keeps "above what was live".
`peak_bytes` is the public entry point (the perf script imports it); `measure` also hands back the
call's result, so the correctness run doubles as the memory measurement."""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Callable

import torch
from torch.autograd.profiler import profile


@contextlib.contextmanager
def _quiet_stderr():
    """Kineto prints 'profiler_start/stop' lines to fd 2 on every session; they would shred the
    progress bar. Python-level exceptions are unaffected."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _peak_from_events(prof) -> int:
    events = [e for e in prof.kineto_results.events() if e.name() == "[memory]"
              and e.device_type() == torch.autograd.DeviceType.CPU]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()  # negative for frees
        peak = max(peak, live)
    return peak


def measure(fn: Callable[[], Any], device: torch.device | str) -> tuple[Any, int]:
    """Run `fn()` once; return (its result, peak bytes allocated during the call above the start)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        result = fn()
        torch.cuda.synchronize(device)
        return result, int(torch.cuda.max_memory_allocated(device) - before)
    if device.type == "cpu":
        # torch.autograd.profiler.profile, not torch.profiler.profile: it parses its events lazily,
        # and we read only the raw memory events (5x cheaper for many-op implementations).
        with _quiet_stderr(), profile(profile_memory=True) as prof:
            result = fn()
        return result, _peak_from_events(prof)
    if device.type == "mps":
        before = torch.mps.current_allocated_memory()
        result = fn()
        torch.mps.synchronize()
        # MPS keeps no peak statistic: what is still allocated after the call is a lower bound.
        return result, int(max(torch.mps.current_allocated_memory() - before, 0))
    raise ValueError(f"peak memory: unsupported device {device}")


def peak_bytes(fn: Callable[[], Any], device: torch.device | str) -> int:
    """Peak bytes allocated while `fn()` runs, above what was live before it."""
    return measure(fn, device)[1]
