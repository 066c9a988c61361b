"""Issue #16, the first GPU run prepared on paper: each measurement item checked on the CPU, with
torch.cuda monkeypatched where a GPU would be needed (a fake device-scoped synchronize with a cost,
fake events, a recording torch.cuda.device). Real-CUDA checks at the end skip without a GPU."""
from __future__ import annotations

import contextlib
import functools
import time
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import harness.measure.devices as devices
import harness.measure.job as job_module
import harness.measure.passes as passes
from harness.config import Cache, Config, Pass, Shape, Suite, Timing
from harness.measure import clocks, peak, timing
from harness.measure.job import run_job
from harness.measure.passes import CaseSettings, PassResult, PassContext, run_case, time_pass

from faketime import FakeTime

CUDA1 = torch.device("cuda", 1)
TINY = Shape(layer="tiny", n=1, c_in=2, h=6, w=6, c_out=2, kernel=3, padding=1)
SYNC_COST = 0.003  # a device synchronize is slow: torch.utils.benchmark counted it as timer overhead


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch.cuda with a costly synchronize that records which device it waited on, and events that
    read a virtual clock when recorded (the calls here run on the CPU, synchronously, and take the
    virtual time they say: `seen.fake.spend`)."""
    seen = SimpleNamespace(syncs=[], devices_entered=[], fake=FakeTime())

    def synchronize(device=None):
        seen.syncs.append(device)
        seen.fake.spend(SYNC_COST)

    class Event:
        def __init__(self, enable_timing=False):
            self.t = None

        def record(self, stream=None):
            self.t = seen.fake.t

        def elapsed_time(self, end):
            return (end.t - self.t) * 1e3

    @contextlib.contextmanager
    def device(d):
        seen.devices_entered.append(torch.device(d))
        yield

    monkeypatch.setattr(torch.cuda, "synchronize", synchronize)
    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "device", device)
    monkeypatch.setattr(devices, "absent_reason", lambda d: None)
    monkeypatch.setattr(timing, "Flusher", lambda d: (lambda: None))  # no L2 to overwrite here
    monkeypatch.setattr(passes, "cold_prepare", lambda *a: (lambda: None))
    monkeypatch.setattr(clocks.CudaClock, "now", staticmethod(seen.fake.now))  # the sampling loop's wall clock
    return seen


def settings(**kw) -> CaseSettings:
    t = Timing(**{"min_run_time": 0.05, "warmup": 1, "cache": Cache.both, "processes": 1, **kw})
    return CaseSettings(torch.float32, ("forward",), t, threads=1, budget_s=60.0, seed=0)


# ---------------------------------------------------------------------------- 1 and 2: cuda:N, samples
def test_cuda_n_waits_on_that_gpu_and_gets_at_least_ten_samples(fake_cuda):
    """#16.1: every synchronize names cuda:1 (not the current device). #16.2: with a 3 ms synchronize,
    the CUDA path still gives >= 10 samples, and the samples hold the call, not the synchronize."""
    def call():
        fake_cuda.fake.spend(0.001)

    r = PassResult()
    time_pass(call, settings(), PassContext(CUDA1), r)
    assert fake_cuda.syncs and all(d == CUDA1 for d in fake_cuda.syncs)
    for t in (r.timing, r.cold):
        assert t.n_runs >= 10
        assert t.median == pytest.approx(0.001)  # the call's time, not the call's plus a sync


def test_jobs_and_the_peak_matmul_run_with_their_gpu_current(fake_cuda):
    """#16.1: torch.cuda.device(cuda:N) is entered for the job (contexts open on that GPU) and for
    the peak matmul, whose torch.utils.benchmark.Timer synchronizes the *current* device."""
    with devices.on_device(CUDA1):
        pass
    assert fake_cuda.devices_entered == [CUDA1]
    peak._peak.cache_clear()
    peak.peak_gflops("cuda:1", torch.float16, 1, size=8, min_run_time=0.01)  # NaN here (no CUDA); context first
    assert fake_cuda.devices_entered[-1] == CUDA1


def test_run_job_measures_the_peak_inside_its_device_and_tf32_settings(tmp_path, monkeypatch):
    """#16.10: the roofline's matmul runs with the job's TF32 setting and device, and its cache
    tells TF32 from full float32."""
    seen = []
    depth = []

    @contextlib.contextmanager
    def on_device(d):
        depth.append(d)
        yield
        depth.pop()

    def fake_peak(device, dtype, threads, allow_tf32=None):
        seen.append((list(depth), torch.backends.cuda.matmul.allow_tf32, allow_tf32))
        return 1.0

    monkeypatch.setattr(job_module, "on_device", on_device)
    monkeypatch.setattr(job_module, "peak_gflops", fake_peak)
    cfg = Config(impl="cudnn", suite=Suite(name="s", shapes=[TINY]), device="cpu", allow_tf32=True,
                 timing=Timing(min_run_time=0.01), results_link=None, passes=[Pass.forward])
    run_job(cfg, tmp_path / "0", progress=False)
    assert seen == [([torch.device("cpu")], True, True)]


def test_peak_cache_tells_tf32_apart_and_cuda_matmul_is_big_enough():
    peak._peak.cache_clear()
    peak.peak_gflops("cpu", torch.float32, 1, size=32, min_run_time=0.01, allow_tf32=False)
    peak.peak_gflops("cpu", torch.float32, 1, size=32, min_run_time=0.01, allow_tf32=True)
    assert peak._peak.cache_info().currsize == 2
    assert peak.matmul_size("cuda", torch.float16) >= 8192 and peak.matmul_size("cuda", torch.bfloat16) >= 8192
    assert peak.matmul_size("cpu", torch.float32) == 2048


# ------------------------------------------------------------------------- 3: memory after the first call
@functools.lru_cache(maxsize=None)
def _autotune_workspace() -> bool:
    torch.ones(64 * 2 ** 20 // 4).sum()  # 64 MiB on the first call only, as cuDNN autotuning does
    return True


def big_first_workspace(x, w, b=None, **kw):
    _autotune_workspace()
    return F.conv2d(x, w, b, **kw)


def test_peak_memory_excludes_a_first_call_workspace():
    from harness.measure.memory import peak_bytes
    _autotune_workspace.cache_clear()
    x, w = torch.randn(1, 2, 6, 6), torch.randn(2, 2, 3, 3)
    assert peak_bytes(lambda: big_first_workspace(x, w), "cpu") >= 64 * 2 ** 20  # the workspace is real
    r = run_case(big_first_workspace, TINY, settings(cache=Cache.warm), torch.device("cpu"))["forward"]
    assert r.status == "ok" and r.peak_mem < 8 * 2 ** 20


# --------------------------------------------------------------------------- 4: reference outside budget
def test_the_budget_does_not_pay_for_the_float64_reference(monkeypatch):
    real = passes.reference

    def slow_reference(case):
        time.sleep(1.2)  # a big float64 reference on a slow CPU
        return real(case)

    monkeypatch.setattr(passes, "reference", slow_reference)
    s = CaseSettings(torch.float32, ("forward",), Timing(min_run_time=0.01, cache=Cache.warm), 1, budget_s=1.0, seed=0)
    r = run_case(F.conv2d, TINY, s, torch.device("cpu"))["forward"]
    assert r.status == "ok", r.message


def test_library_loading_is_done_once_per_job_before_the_cases(tmp_path, monkeypatch):
    order = []
    import harness.measure.worker as worker_module  # the job's worker loads them (here: in-process)
    monkeypatch.setattr(worker_module, "warm_libraries", lambda d, t: order.append("libraries"))
    real = worker_module.run_case
    monkeypatch.setattr(worker_module, "run_case", lambda *a, **k: (order.append("case"), real(*a, **k))[1])
    cfg = Config(impl="cudnn", suite=Suite(name="s", shapes=[TINY, TINY]), device="cpu",
                 timing=Timing(min_run_time=0.01), results_link=None, passes=[Pass.forward])
    run_job(cfg, tmp_path / "0", progress=False, isolate=False)
    assert order == ["libraries", "case", "case"]


# ----------------------------------------------------------------------- 6: TF32 off in bench-timer, perf
def test_bench_timer_and_perf_run_with_tf32_off(monkeypatch):
    import harness.perf
    import harness.timer_agreement
    seen = []
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)  # torch 2.13's default
    monkeypatch.setattr(harness.timer_agreement, "_compare",
                        lambda *a: seen.append(torch.backends.cudnn.allow_tf32) or 0)
    monkeypatch.setattr(harness.perf, "_run", lambda args: seen.append(torch.backends.cudnn.allow_tf32) or [])
    assert harness.timer_agreement.main(["--device", "cpu"]) == 0
    harness.perf.main(["--device", "cpu"])
    assert seen == [False, False] and torch.backends.cudnn.allow_tf32


# -------------------------------------------------------------------------------------- on a real GPU
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@needs_cuda
def test_real_cuda_rows_have_ten_samples_and_a_cold_timing():
    r = run_case(F.conv2d, TINY, settings(), torch.device("cuda", torch.cuda.device_count() - 1))["forward"]
    assert r.status == "ok" and r.timing.n_runs >= 10 and r.cold.n_runs >= 10


@needs_cuda
def test_real_cuda_gpu_probe_reads_a_clock():
    from harness.measure.machine import GpuProbe
    reading = GpuProbe(torch.device("cuda", 0)).read()
    assert reading.clock_mhz is None or reading.clock_mhz > 0
