"""Timing: warm-up calls, then samples from a clock that times the calls only (harness.measure.clocks:
perf_counter_ns on the CPU, CUDA events on the device's stream), until a stopping rule
(harness.measure.stopping) is met or capped. Warm samples are back-to-back calls; cold ones follow an
eviction of the case's cache lines each (harness.measure.flush, harness.measure.evict). Own loop rather than torch.utils.benchmark's autorange: that
gives one sample per row on CUDA, cannot flush between calls, and has no interval-based stopping;
`make bench-timer` keeps checking this loop against torch.utils.benchmark.Timer and a bare clock.

`deadline` enforces a case's time budget with SIGALRM: the handler raises in the main thread, which
interrupts pure-Python hangs (`while True: pass`) too. A single long native call is interrupted as
soon as it returns to Python. The sampling loop reads elapsed time from its clock (`clock.now`), so
tests drive it with a fake clock."""
from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import statistics
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from harness.config import Timing

from .clocks import clock_for, synchronize
from .flush import Flusher
from .stats import MIN_SAMPLES, TimingResult, step_ratios
from .stopping import Stopping, stopping_for

__all__ = ["Budget", "CaseTimeout", "Rounds", "TimingResult", "deadline", "sample", "time_call", "time_cold",
           "time_rounds", "warm_up"]


monotonic = time.monotonic  # the budget's clock; tests replace it (and signal.setitimer) with a fake one


class CaseTimeout(BaseException):
    """The case ran past its budget. A BaseException, so an implementation's `except Exception`
    cannot swallow it."""


class Budget:
    """The time left of a running `deadline`. `overhead(call_s, slowdown)` wraps harness work around
    one call (the CPU memory profiler's): the alarm waits up to `slowdown` x the call's plain time
    longer, and only `call_s` is charged, so the budget pays for the implementation's calls only."""

    def __init__(self, seconds: float) -> None:
        self.end = monotonic() + seconds

    def __call__(self) -> float:
        return self.end - monotonic()

    def _arm(self, end: float) -> None:
        signal.setitimer(signal.ITIMER_REAL, max(end - monotonic(), 1e-6))

    @contextlib.contextmanager
    def overhead(self, call_s: float, slowdown: float):
        end = self.end
        self._arm(end + slowdown * call_s)
        t0 = monotonic()
        try:
            yield
        finally:
            self.end = end + max(monotonic() - t0 - call_s, 0.0)
            self._arm(self.end)


@contextlib.contextmanager
def deadline(seconds: Optional[float]):
    """Raise CaseTimeout in this (main) thread once `seconds` have passed; no-op for None/<=0.
    Yields the `Budget` (None when not enforced). On exit the previous SIGALRM handler and interval
    timer are restored, with the time that passed meanwhile taken off (pytest-timeout's alarm, say,
    still fires), so an enclosing alarm is never switched off."""
    usable = seconds and seconds > 0 and hasattr(signal, "setitimer") \
        and threading.current_thread() is threading.main_thread()
    if not usable:
        if seconds:
            warnings.warn("budget_s cannot be enforced outside the main thread (or without SIGALRM)")
        yield None
        return

    def on_alarm(signum, frame):
        raise CaseTimeout(f"ran past the budget of {seconds:g} s (budget_s)")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    budget = Budget(seconds)
    started = monotonic()
    outer, outer_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield budget
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer > 0:  # an enclosing timer was running: re-arm what is left of it (at least a tick)
            signal.setitimer(signal.ITIMER_REAL, max(outer - (monotonic() - started), 1e-6), outer_interval)


BLOCK_S = 1e-4  # a warm sample lasts at least this long: calls shorter than that are timed in blocks
                # (perf_counter_ns and CUDA events then add < 0.5%), reported per call. Short samples
                # matter on a shared machine: the longer a sample, the likelier a preemption lands in
                # it, and 1 ms blocks read ~9% slower than single calls at load 7 on 2 cores.


def block_size(fn: Callable[[], Any], clock, stopping: Stopping, min_samples: int = MIN_SAMPLES,
               once: Optional[float] = None) -> int:
    """Calls per warm sample: enough for BLOCK_S, few enough that min_samples blocks fit the cap.
    `once`: a call's time if already known (the last warm-up call), else one call is timed."""
    once = clock.time(fn, 1) if once is None else once
    if once <= 0:
        return 1
    n = max(1, math.ceil(BLOCK_S / once))
    fit = max(1, int(stopping.cap_s / max(min_samples, 1) / once))
    return min(n, fit)


def sample(fn: Callable[[], Any], clock, stopping: Stopping, *, block: int = 1,
           prepare: Optional[Callable[[], Any]] = None, min_samples: int = MIN_SAMPLES) -> TimingResult:
    """Time `block` calls per sample until `stopping` is done or capped. `prepare` (a cache flush)
    runs before each sample, outside the clock. At least one sample is always taken. Elapsed time is
    `clock.now()` (wall time, flushes included), so a fake clock drives the whole loop."""
    now = getattr(clock, "now", time.perf_counter)
    samples: list[float] = []
    t0 = now()
    last = 0.0
    while True:
        s0 = now()
        samples.append(clock.time(fn, block, prepare))
        last = now() - s0
        elapsed = now() - t0
        if stopping.done(samples, elapsed):
            return TimingResult(tuple(samples), capped=False, min_samples=min_samples)
        if stopping.capped(elapsed, last, len(samples)):
            return TimingResult(tuple(samples), capped=True, min_samples=min_samples)


def warm_up(fn: Callable[[], Any], timing: Timing, device: torch.device, clock=None) -> Optional[float]:
    """Calls outside the samples first (lazy initialisation, cuDNN autotuning); returns the last
    one's time on `clock` (what block sizes are calibrated from), None without warm-up calls."""
    clock = clock or clock_for(device)
    for _ in range(timing.warmup - 1):
        fn()
    last = clock.time(fn, 1) if timing.warmup > 0 else None
    synchronize(device)
    return last


def time_call(fn: Callable[[], Any], timing: Timing, device: torch.device, threads: Optional[int] = None,
              *, clock=None, cap_s: Optional[float] = None, warm: bool = True,
              once: Optional[float] = None) -> TimingResult:
    """Warm timing of `fn()` after `timing.warmup` untimed calls (unless `warm=False`: done already,
    `once` its last call's time): back-to-back calls in blocks of at least BLOCK_S, until the
    stopping rule of `timing.method` (harness.measure.stopping)."""
    clock = clock or clock_for(device)
    stopping = stopping_for(timing).within(cap_s)
    with at_threads(threads):
        if warm:
            once = warm_up(fn, timing, device, clock)
        block = block_size(fn, clock, stopping, timing.min_samples, once)
        return sample(fn, clock, stopping, block=block, min_samples=timing.min_samples)


@dataclass(frozen=True)
class Rounds:
    """A warm timing made of interleaved rounds: the implementation's pooled samples (with each
    round's median), and the vendor's median in each round when one was timed beside it."""
    timing: TimingResult
    vendor: tuple[float, ...] = ()
    paired: Optional[TimingResult] = None  # per step, fn's time over the vendor's beside it (stats.step_ratios)


def sample_pairs(fn: Callable[[], Any], vendor: Callable[[], Any], clock, stopping: Stopping, *, block: int = 1,
                 vendor_block: int = 1, min_samples: int = MIN_SAMPLES,
                 prepare: Optional[Callable[[], Any]] = None) -> tuple[TimingResult, tuple[float, ...]]:
    """`fn` and `vendor` alternately, a block of each per step, until `stopping` is done on `fn`'s
    samples (its own sampling time, `prepare` included: elapsed counts `fn`'s blocks only) or capped
    (the pair's wall time). `prepare` (a cold sample's eviction) runs before each block of either,
    outside the clock. Side by side, the two see the same moments of the machine, so the ratio of their medians
    cancels what moves both on time scales longer than a step: on a 2-core AMD EPYC VM the speed of
    one F.conv2d flips between two levels 1.6x apart every 0.2-1 s, in every process alike."""
    now = getattr(clock, "now", time.perf_counter)
    mine: list[float] = []
    theirs: list[float] = []
    t0, own = now(), 0.0
    while True:
        s0 = now()
        mine.append(clock.time(fn, block, prepare))
        s1 = now()
        theirs.append(clock.time(vendor, vendor_block, prepare))
        own += s1 - s0
        last = now() - s0
        if stopping.done(mine, own):
            return TimingResult(tuple(mine), capped=False, min_samples=min_samples), tuple(theirs)
        if stopping.capped(now() - t0, last, len(mine)):
            return TimingResult(tuple(mine), capped=True, min_samples=min_samples), tuple(theirs)


def time_rounds(fn: Callable[[], Any], vendor: Optional[Callable[[], Any]], timing: Timing, device: torch.device,
                threads: Optional[int] = None, *, clock=None, cap_s: Optional[float] = None,
                once: Optional[float] = None) -> Rounds:
    """Warm timing in `timing.repeats` rounds. With `vendor` (torch's own conv on the same inputs)
    each round alternates blocks of `fn` and of the vendor (`sample_pairs`), so the vendor's median
    in the same round gives a ratio that drift cancels in (`stats.vendor_ratios`, what `compare`
    judges), as bench-perf and nvbench compare within a round; without one, a round is a short warm
    timing of `fn`. The rounds spread the samples over time, so the row's interval sees drift.
    min_run_time, max_run_time and min_samples are split between all the rounds of the row,
    `timing.processes` worker processes x `timing.repeats` (harness.measure.job runs the other
    processes' rounds); the cap `cap_s` between this process's rounds. A vendor that cannot run the
    case (an unsupported dtype...) leaves the timing without a ratio, never without a timing."""
    clock = clock or clock_for(device)
    n = timing.repeats
    split = n * timing.processes
    per = dataclasses.replace(timing, min_run_time=timing.min_run_time / split,
                              max_run_time=timing.max_run_time / split,
                              cold_min_run_time=min(timing.cold_min_run_time, timing.max_run_time / split),
                              min_samples=max(1, math.ceil(timing.min_samples / split)))
    vendor_once = None
    if vendor is not None:
        try:
            with at_threads(threads):
                vendor_once = warm_up(vendor, per, device, clock) or clock.time(vendor, 1)
        except Exception:
            vendor = None
    each = None if cap_s is None else cap_s / n  # one round's share of the cap

    def alone() -> TimingResult:
        return time_call(fn, per, device, threads, clock=clock, cap_s=each, warm=False, once=once)

    samples: list[float] = []
    medians, vendor_medians = [], []
    ratios: list[float] = []
    ratio_medians: list[float] = []
    capped = False
    if vendor is not None:
        single = stopping_for(per)
        stopping = Stopping(single.criteria, 2 * single.cap_s).within(each)
        with at_threads(threads):  # block sizes once, for every round
            block = block_size(fn, clock, single.within(stopping.cap_s / 2), per.min_samples, once)
            vblock = block_size(vendor, clock, single.within(stopping.cap_s / 2), per.min_samples, vendor_once)
    for i in range(n):
        if vendor is None:
            t = alone()
        else:
            with at_threads(threads):
                try:
                    t, v = sample_pairs(fn, vendor, clock, stopping, block=block, vendor_block=vblock,
                                        min_samples=per.min_samples)
                    vendor_medians.append(float(statistics.median(v)))
                    steps = step_ratios(t.samples, v)
                    ratios += steps
                    ratio_medians.append(float(statistics.median(steps)))
                except Exception:  # the vendor failed mid-way: this round without it, the rest too
                    vendor, vendor_medians, ratios, ratio_medians = None, [], [], []
                    t = alone()
        samples += t.samples
        medians.append(t.median)
        capped |= t.capped
    pooled = TimingResult(tuple(samples), capped=capped, min_samples=timing.min_samples, rounds=tuple(medians))
    paired = TimingResult(tuple(ratios), capped=capped, min_samples=timing.min_samples,
                          rounds=tuple(ratio_medians)) if ratios else None
    return Rounds(pooled, tuple(vendor_medians), paired)


COLD_WARMUP = 3  # untimed flush+call cycles before cold sampling (nvbench's cold warm-up)


def time_cold(fn: Callable[[], Any], timing: Timing, device: torch.device, threads: Optional[int] = None,
              *, clock=None, flush=None, cap_s: Optional[float] = None, warmup: int = COLD_WARMUP,
              vendor: Optional[Callable[[], Any]] = None) -> Rounds:
    """Cold timing: one call per sample, each after `flush` (harness.measure.flush.cold_prepare:
    the case's lines evicted, or the cache overwritten); only the call is timed, never the flush.
    A flush with `keep(result)` is handed each call's result, to evict it before it is freed.
    `warmup` untimed flush+call cycles come first: the first calls after a switch from warm to cold
    read 1.5-3x the steady cold time, decaying over 2-3 calls (seen on every implementation here),
    a transient of the switch, not of a cold call. Sampling stops by `stopping_for(timing, cold=True)`.
    With `vendor` (torch's own conv on the same inputs) each cold sample is followed by a cold call
    of the vendor after its own flush, as the warm rounds pair their blocks (`sample_pairs`): the
    step ratios (`Rounds.paired`) are a cold series the machine's speed cancels from. A vendor that
    fails leaves the cold timing without a pair, never without a timing."""
    clock = clock or clock_for(device)
    flush = flush or Flusher(device)
    keep = getattr(flush, "keep", None)

    def cold(f: Callable[[], Any]) -> Callable[[], Any]:
        """`f` with its result handed to the flush (evicted before it is freed), after `warmup` cycles."""
        c = f if keep is None else (lambda: keep(f()))
        for _ in range(warmup):
            flush()
            c()
        return c

    stopping = stopping_for(timing, cold=True).within(cap_s)
    with at_threads(threads):
        call = cold(fn)
        synchronize(device)
        if vendor is not None:
            try:
                vcall = cold(vendor)
                mine, theirs = sample_pairs(call, vcall, clock, stopping, prepare=flush,
                                            min_samples=timing.min_samples)
                steps = step_ratios(mine.samples, theirs)
                paired = TimingResult(tuple(steps), capped=mine.capped, min_samples=timing.min_samples) \
                    if steps else None
                return Rounds(mine, (float(statistics.median(theirs)),), paired)
            except Exception:  # the vendor failed: the cold timing without it
                pass
        return Rounds(sample(call, clock, stopping, block=1, prepare=flush, min_samples=timing.min_samples))


@contextlib.contextmanager
def at_threads(threads: Optional[int]):
    """Timing at the job's thread count (as torch.utils.benchmark.Timer's num_threads)."""
    if not threads or threads == torch.get_num_threads():
        yield
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)
