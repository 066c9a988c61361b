"""Clocks that time calls and nothing around them. On the CPU a `perf_counter_ns` pair around the
calls; on CUDA a pair of events recorded on the device's current stream around the calls, read after a
synchronize *of that device* (`torch.cuda.synchronize(device)`; torch.utils.benchmark's Timer waits on
the current device instead, and counts its two synchronizes as timer overhead, which on CUDA grows
its block until one block fills min_run_time: a single sample per row). Whatever `prepare` does (a
cache flush) runs before the start mark, so it is never timed. `sync` and the event class are
injectable, so the CUDA path is testable on a machine without a GPU."""
from __future__ import annotations

import time
from typing import Any, Callable, Optional

import torch


def synchronize(device: torch.device) -> None:
    """Wait for `device`'s queued work (that device, not the current one)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class CpuClock:
    """Host wall clock around the calls (also used for MPS, after a synchronize). `now` is the wall
    clock the sampling loop measures elapsed time with (a fake clock replaces both in tests)."""

    now = staticmethod(time.perf_counter)

    def __init__(self, device: torch.device = torch.device("cpu"),
                 sync: Callable[[torch.device], None] = synchronize) -> None:
        self.device, self.sync = device, sync

    def time(self, fn: Callable[[], Any], n: int = 1, prepare: Optional[Callable[[], Any]] = None) -> float:
        """Seconds per call of `n` back-to-back calls of `fn`."""
        if prepare is not None:
            prepare()
        self.sync(self.device)
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        self.sync(self.device)
        return (time.perf_counter_ns() - t0) * 1e-9 / n


class CudaClock:
    """CUDA events around the calls on the device's current stream; the synchronize that reads them
    is outside the measured interval, so its cost never enters a sample."""

    now = staticmethod(time.perf_counter)

    def __init__(self, device: torch.device, sync: Optional[Callable[[torch.device], None]] = None,
                 event: Optional[Callable[..., Any]] = None) -> None:
        self.device = device
        self.sync = sync or synchronize
        self.event = event or torch.cuda.Event

    def time(self, fn: Callable[[], Any], n: int = 1, prepare: Optional[Callable[[], Any]] = None) -> float:
        if prepare is not None:
            prepare()               # queued before the start event: not timed
        start, end = self.event(enable_timing=True), self.event(enable_timing=True)
        stream = torch.cuda.current_stream(self.device)
        start.record(stream)
        for _ in range(n):
            fn()
        end.record(stream)
        self.sync(self.device)
        return start.elapsed_time(end) * 1e-3 / n


def clock_for(device: torch.device, sync: Optional[Callable[[torch.device], None]] = None):
    if device.type == "cuda":
        return CudaClock(device, sync)
    return CpuClock(device, sync or synchronize)
