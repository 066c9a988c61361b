"""`make bench-perf` goes through the harness's runner (harness.measure.passes.run_case): its rows carry
the runner's first call, memory, verdict and rounds beside cudnn, and its layers are the `resnet50`
suite's, read through the config schema. Speed itself is bench-perf's output, never asserted here."""
from __future__ import annotations

import argparse

import pytest
import torch
from rich.console import Console

import implementations
from harness import perf
from harness.measure import passes


def _args(**kw) -> argparse.Namespace:
    base = dict(device="cpu", batch=1, threads=1, rounds=2, min_run_time=0.005, quick=True, channels_last=False,
                only="", no_plan_check=False)
    return argparse.Namespace(**{**base, **kw})


def test_the_layers_are_the_resnet50_suites():
    layers3, layers1 = perf.resnet50_layers(3), perf.resnet50_layers(1)
    assert layers3[0] == (64, 64, 3, 1, 1, 56)  # l1_3x3
    assert (128, 128, 3, 2, 1, 56) in layers3   # the stride-2 3x3 of ResNet-50 v1.5
    assert all(k == 1 for _, _, k, _, _, _ in layers1) and len(layers1) > len(layers3)


def test_a_case_is_measured_by_the_runner_beside_cudnn(monkeypatch):
    seen = []
    real = passes.run_case
    monkeypatch.setattr(perf, "run_case", lambda fn, s, settings, device: seen.append(settings) or real(fn, s, settings, device))
    case = perf.PerfCase("winograd", "8->8 k3 s1 8x8", "winograd", 1, 8, 8, 3, 1, 1, 8, {"forward": 0.75})
    rows = perf.measure(case, _args(), torch.device("cpu"), Console(quiet=True))
    settings = seen[0]
    assert settings.timing.repeats == 2 and settings.timing.vs_vendor and settings.timing.cache.value == "warm"
    assert [r.pass_ for r in rows] == ["forward", "backward"]
    fwd, bwd = rows
    assert fwd.ratio > 0 and fwd.cudnn_s > 0 and fwd.peak >= 0 and fwd.cudnn_peak > 0
    assert fwd.error is not None and fwd.error < 1e-4 and fwd.cudnn_error < 1e-5  # the runner's verdict
    assert "F(" in fwd.plan and fwd.first_s is not None and fwd.first_s > 0   # planning shows in the first call
    assert bwd.plan and fwd.target == 0.75 and bwd.target is None


def test_an_unsupported_case_is_a_line_not_a_crash():
    """winograd has no stride 2: the runner's status, printed; no row and no exception."""
    case = perf.PerfCase("winograd", "8->8 k3 s2 8x8", "winograd", 1, 8, 8, 3, 2, 1, 8)
    console = Console(record=True, width=200)
    assert perf.measure(case, _args(), torch.device("cpu"), console) == []
    assert "unsupported" in console.export_text()


def test_channels_last_reaches_the_implementation(monkeypatch):
    layouts = []

    @implementations.register("records_layout")
    def records_layout(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
        layouts.append(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
        return torch.nn.functional.conv2d(x, w, b, stride, padding, dilation, groups)
    try:
        case = perf.PerfCase("x", "4->4 k3 s1 6x6", "records_layout", 2, 4, 4, 3, 1, 1, 6)
        perf.measure(case, _args(channels_last=True, rounds=1), torch.device("cpu"), Console(quiet=True))
    finally:
        implementations.registry._registry.pop("records_layout", None)
    assert layouts and all(layouts)


@pytest.mark.slow
def test_the_plan_check_times_every_forced_candidate():
    case = perf.PerfCase("winograd", "8->8 k3 s1 12x12", "winograd", 1, 8, 8, 3, 1, 1, 12)
    perf.measure(case, _args(), torch.device("cpu"), Console(quiet=True))  # plans it in this process
    check = perf.plan_check(case, _args(), torch.device("cpu"))
    assert len(check.times) >= 2 and check.fastest in check.times and check.ratio > 0
    assert check.chosen.startswith("F(") or "F(" in check.chosen
    assert "(estimated)" in check.chosen  # the planned call's own plan (a 6.9e5 multiply-add layer: not timed)
    assert check.twin_s == check.times[next(k for k in check.times if f"{k} (" in check.chosen)]
