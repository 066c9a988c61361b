"""Is this machine fit to time? (issue #11.4) The survey's warnings, the governor read from sysfs, and
the GPU probe's throttling verdict through a fake NVML."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from harness.measure import machine
from harness.measure.machine import GpuProbe, GpuReading, MachineState


def test_warnings_name_what_makes_timings_untrustworthy(caplog):
    quiet = MachineState("performance", 0.3, 2, 1.0)
    assert quiet.warnings == [] and quiet.columns()["machine_warning"] == ""
    busy = MachineState("powersave", 5.0, 2, 80.0)
    assert len(busy.warnings) == 3 and "powersave" in busy.columns()["machine_warning"]
    with caplog.at_level(logging.WARNING, logger="harness.measure.machine"):
        machine.warn(busy, 3)
        machine.warn(quiet, 4)
    assert len(caplog.records) == 1 and "job 3" in caplog.records[0].getMessage()


def test_governor_from_sysfs(tmp_path):
    for cpu, gov in (("cpu0", "performance"), ("cpu1", "powersave")):
        (tmp_path / cpu / "cpufreq").mkdir(parents=True)
        (tmp_path / cpu / "cpufreq" / "scaling_governor").write_text(gov + "\n")
    assert machine.governor(tmp_path) == "performance,powersave"
    assert machine.governor(tmp_path / "absent") == ""


def test_a_machine_whose_speed_moves_is_named_but_not_called_busy():
    flips = MachineState("performance", 0.3, 2, 1.0, speed_spread=1.6)
    (why,) = flips.warnings
    assert why.startswith("the speed of a fixed workload moved 1.6x within 0.6 s") and "vs_vendor" in why
    assert flips.columns()["speed_spread"] == 1.6
    from harness.report.compare import _unfit
    assert not _unfit(flips.columns()["machine_warning"])  # ratios to the vendor cancel it: compare still judges


def test_speed_spread_is_the_slowest_windows_median_over_the_fastest():
    """A fake clock: calls cost 1 ms in even windows, 1.6 ms in odd ones, with one 50 ms preemption
    (a single call: a window's median ignores it)."""
    t = [0.0]
    calls = [0]

    def work():
        calls[0] += 1
        t[0] += 0.05 if calls[0] == 3 else 0.001 * (1.6 if int(t[0] / 0.05) % 2 else 1.0)

    assert machine.speed_spread(work, windows=4, window_s=0.05, clock=lambda: t[0]) == pytest.approx(1.6, rel=0.01)
    steady = machine.speed_spread(lambda: t.__setitem__(0, t[0] + 0.001), windows=4, clock=lambda: t[0])
    assert steady == pytest.approx(1.0)


def test_survey_reads_this_machine():
    state = machine.survey(interval=0.05)
    assert state.cores >= 1 and state.load_avg >= 0 and 0 <= state.other_cpu_pct <= 100 and state.speed_spread >= 1


def fake_nvml(clock_mhz: float, reasons: int, max_mhz: float = 2000.0):
    return SimpleNamespace(
        NVML_CLOCK_SM=1,
        nvmlDeviceGetHandleByIndex=lambda i: ("gpu", i),
        nvmlDeviceGetMaxClockInfo=lambda h, kind: max_mhz,
        nvmlDeviceGetClockInfo=lambda h, kind: clock_mhz,
        nvmlDeviceGetCurrentClocksThrottleReasons=lambda h: reasons)


def test_gpu_probe_marks_thermal_throttling_and_low_clocks():
    dev = torch.device("cuda", 1)
    assert GpuProbe(dev, nvml=fake_nvml(1980, 0x0)).read() == GpuReading(1980.0, False, ())
    hot = GpuProbe(dev, nvml=fake_nvml(1900, 0x20)).read()
    assert hot.throttled and hot.reasons == ("sw_thermal",)
    slow = GpuProbe(dev, nvml=fake_nvml(1000, 0x1)).read()  # idle bit only, but half the clock
    assert slow.throttled and any("sm_clock" in r for r in slow.reasons)
    assert GpuReading.worst([GpuReading(1980.0, False), hot]).clock_mhz == 1900.0
    no_nvml = GpuProbe(dev, nvml=SimpleNamespace(), clock_rate=lambda d: 1410).read()
    assert no_nvml.clock_mhz == 1410.0 and no_nvml.throttled is None
