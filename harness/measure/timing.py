"""Timing with torch.utils.benchmark (it synchronises CUDA around each block and sets the thread
count), after explicit warm-up calls so lazy initialisation and cuDNN autotuning are not measured.

`deadline` enforces a case's time budget with SIGALRM: the handler raises in the main thread, which
interrupts pure-Python hangs (`while True: pass`) too. A single long native call is interrupted as
soon as it returns to Python."""
from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch.utils.benchmark import Timer

from harness.config import Method, Timing


class CaseTimeout(BaseException):
    """The case ran past its budget. A BaseException, so an implementation's `except Exception`
    cannot swallow it."""


@contextlib.contextmanager
def deadline(seconds: Optional[float]):
    """Raise CaseTimeout in this (main) thread once `seconds` have passed; no-op for None/<=0."""
    usable = seconds and seconds > 0 and hasattr(signal, "setitimer") \
        and threading.current_thread() is threading.main_thread()
    if not usable:
        if seconds:
            warnings.warn("budget_s cannot be enforced outside the main thread (or without SIGALRM)")
        yield
        return
    start = time.monotonic()

    def on_alarm(signum, frame):
        raise CaseTimeout(f"ran past the budget of {seconds:g} s (budget_s)")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield lambda: seconds - (time.monotonic() - start)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass(frozen=True)
class TimingResult:
    """Raw per-call times in, statistics derived, as torch.utils.benchmark's Measurement: the samples
    are the record (compare's significance tests read them), every figure is computed from them."""
    samples: tuple[float, ...]

    @property
    def n_runs(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return float(np.median(self.samples))

    @property
    def iqr(self) -> float:
        q1, q3 = np.percentile(self.samples, [25, 75])
        return float(q3 - q1)

    @property
    def samples_json(self) -> str:
        return json.dumps([float(f"{t:.6g}") for t in self.samples])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def time_call(fn: Callable[[], Any], timing: Timing, device: torch.device,
              threads: Optional[int] = None) -> TimingResult:
    """Median/IQR of `fn()` after `timing.warmup` untimed calls."""
    for _ in range(timing.warmup):
        fn()
    _sync(device)
    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads or torch.get_num_threads())
    if timing.method == Method.adaptive:
        m = timer.adaptive_autorange(threshold=timing.threshold, min_run_time=timing.min_run_time,
                                     max_run_time=timing.max_run_time)
    else:
        m = timer.blocked_autorange(min_run_time=timing.min_run_time)
    return TimingResult(tuple(m.times))
