"""Is this machine fit to time? Recorded at job start (and per row for GPU clocks), warned about once
per job, never silently.

At job start: the CPU frequency governor (`performance` keeps clocks fixed; `powersave`/`ondemand`
let them ramp, so early samples are slower), the 1-minute load average per core, and the share of
the CPUs that *other* processes used over a short window (psutil), and how far the speed of a fixed
small workload moves within a fraction of a second (`speed_spread`: a VM whose host is shared can
flip between speeds 1.6x apart every 0.2-1 s with nothing else running in it). Per row on CUDA: the SM clock
(`torch.cuda.clock_rate`, or NVML) and NVML's clock-event (throttle) reasons, read before and after
the timings. A row is `throttled` when a thermal/power reason is active or the SM clock is below
75% of its maximum (nvbench's threshold). nvbench drops throttled samples; reading NVML costs
about a millisecond, too much per sample, so rows are marked instead (and the report counts them)."""
from __future__ import annotations

import logging
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import psutil
import torch

from .timing import at_threads

log = logging.getLogger(__name__)

LOAD_PER_CORE = 1.0        # more runnable processes than cores: timed calls wait for a core
OTHER_CPU_PCT = 10.0       # other processes use at least this % of all CPUs
SPEED_SPREAD = 1.2         # a fixed workload's slowest window over its fastest: the speed moves
SPEED_WINDOWS = 12         # windows of SPEED_WINDOW_S each (0.6 s per job)
SPEED_WINDOW_S = 0.05
THROTTLE_CLOCK = 0.75      # SM clock below this fraction of its maximum: throttled (nvbench)
# NVML clock-event reasons that slow the GPU down: SW power cap, HW slowdown, SW/HW thermal, power brake


@dataclass(frozen=True)
class MachineState:
    governor: str             # '' when unreadable (containers, VMs, macOS)
    load_avg: float           # 1-minute load average
    cores: int
    other_cpu_pct: float      # % of all CPUs used by other processes during the survey
    speed_spread: float = 1.0  # a fixed workload's slowest window's median over its fastest's

    @property
    def warnings(self) -> list[str]:
        why = []
        if self.governor and self.governor != "performance":
            why.append(f"CPU frequency governor is {self.governor!r}, not 'performance'")
        if self.load_avg / self.cores >= LOAD_PER_CORE:
            why.append(f"load average {self.load_avg:.1f} on {self.cores} cores")
        if self.other_cpu_pct >= OTHER_CPU_PCT:
            why.append(f"other processes use {self.other_cpu_pct:.0f}% of the CPUs")
        if self.speed_spread >= SPEED_SPREAD:
            why.append(f"the speed of a fixed workload moved {self.speed_spread:.2g}x within "
                       f"{SPEED_WINDOWS * SPEED_WINDOW_S:.2g} s (a shared host, changing clocks): absolute times will "
                       "not repeat, ratios to the vendor measured side by side (vs_vendor) cancel it")
        return why

    def columns(self) -> dict:
        return dict(cpu_governor=self.governor, load_avg=round(self.load_avg, 2),
                    other_cpu_pct=round(self.other_cpu_pct, 1), speed_spread=round(self.speed_spread, 3),
                    machine_warning="; ".join(self.warnings))


def governor(root: Path = Path("/sys/devices/system/cpu")) -> str:
    """The CPU frequency governors in use ('' when unreadable), e.g. 'performance' or 'powersave'."""
    found = set()
    for path in root.glob("cpu[0-9]*/cpufreq/scaling_governor"):
        try:
            found.add(path.read_text().strip())
        except OSError:
            pass
    return ",".join(sorted(found))


def other_cpu_pct(interval: float = 0.2) -> float:
    """% of all CPUs busy with processes other than this one, over `interval` seconds."""
    me = psutil.Process()
    me.cpu_percent(None)
    psutil.cpu_percent(None)
    time.sleep(interval)
    system = psutil.cpu_percent(None)
    mine = me.cpu_percent(None) / (psutil.cpu_count() or 1)
    return max(0.0, system - mine)


def _small_work(x=torch.ones(64, 64)) -> None:
    torch.mm(x, x)


def speed_spread(work: Callable[[], Any] = _small_work, windows: int = SPEED_WINDOWS,
                 window_s: float = SPEED_WINDOW_S, clock: Callable[[], float] = time.perf_counter) -> float:
    """The slowest window's median call time of `work` over the fastest window's: 1.0 on a machine
    whose speed holds; preemptions move single calls, not a window's median."""
    medians = []
    for _ in range(windows):
        times, end = [], clock() + window_s
        while clock() < end:
            t0 = clock()
            work()
            times.append(clock() - t0)
        medians.append(statistics.median(times))
    return max(medians) / min(medians) if min(medians) > 0 else 1.0


def survey(interval: float = 0.2) -> MachineState:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    with at_threads(1):
        spread = speed_spread()
    return MachineState(governor(), load, psutil.cpu_count() or 1, other_cpu_pct(interval), spread)


def warn(state: MachineState, job: Any = "") -> None:
    """One warning per job, listing everything that makes its timings untrustworthy."""
    if state.warnings:
        log.warning("job %s: this machine is not fit to time: %s. Timings are recorded, but expect noise "
                    "(rows carry these figures; the report counts noisy rows).", job, "; ".join(state.warnings))


# --------------------------------------------------------------------------------------------- GPU
@dataclass(frozen=True)
class GpuReading:
    clock_mhz: Optional[float] = None
    throttled: Optional[bool] = None
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @staticmethod
    def worst(readings: Sequence["GpuReading"]) -> "GpuReading":
        """The lowest clock and any throttling seen across readings."""
        clocks = [r.clock_mhz for r in readings if r.clock_mhz is not None]
        flags = [r.throttled for r in readings if r.throttled is not None]
        reasons = tuple(sorted({x for r in readings for x in r.reasons}))
        return GpuReading(min(clocks) if clocks else None, any(flags) if flags else None, reasons)


REASON_NAMES = {0x4: "sw_power_cap", 0x8: "hw_slowdown", 0x20: "sw_thermal", 0x40: "hw_thermal", 0x80: "power_brake"}


class GpuProbe:
    """Reads the SM clock and throttle reasons of one GPU; `nvml` (pynvml, or a fake in tests) and
    `clock_rate` (torch.cuda.clock_rate) are injectable. Whatever cannot be read stays None."""

    def __init__(self, device: torch.device, nvml: Any = None, clock_rate: Any = None) -> None:
        self.device = device
        self.index = device.index if device.index is not None else 0
        self.nvml, self.handle, self.max_mhz = nvml, None, None
        if self.nvml is None:
            try:
                import pynvml
                pynvml.nvmlInit()
                self.nvml = pynvml
            except Exception:  # not installed, or no driver: clocks from torch only
                self.nvml = None
        if self.nvml is not None:
            try:
                self.handle = self.nvml.nvmlDeviceGetHandleByIndex(self.index)
                self.max_mhz = float(self.nvml.nvmlDeviceGetMaxClockInfo(self.handle, self.nvml.NVML_CLOCK_SM))
            except Exception:
                self.handle = None
        self.clock_rate = clock_rate or getattr(torch.cuda, "clock_rate", None)

    def read(self) -> GpuReading:
        clock = reasons_mask = None
        if self.handle is not None:
            try:
                clock = float(self.nvml.nvmlDeviceGetClockInfo(self.handle, self.nvml.NVML_CLOCK_SM))
                get = getattr(self.nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
                    self.nvml.nvmlDeviceGetCurrentClocksThrottleReasons
                reasons_mask = int(get(self.handle))
            except Exception:
                pass
        if clock is None and self.clock_rate is not None:
            try:
                clock = float(self.clock_rate(self.device))
            except Exception:
                clock = None
        reasons = tuple(name for bit, name in REASON_NAMES.items() if reasons_mask and reasons_mask & bit)
        slow = clock is not None and self.max_mhz is not None and clock < THROTTLE_CLOCK * self.max_mhz
        if reasons_mask is None and not slow:
            throttled = None if self.max_mhz is None else False
        else:
            throttled = bool(reasons) or slow
        if slow:
            reasons += (f"sm_clock<{THROTTLE_CLOCK:.0%}_of_max",)
        return GpuReading(clock, throttled, reasons)
