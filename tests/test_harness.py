"""The harness's pieces in-process (fast): FLOPs, checks, budget, memory, one job per broken
plug-in, skipped devices, aggregation order, and that only correct rows can win."""
from __future__ import annotations

import json
import sys
import time

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from harness.table import schema
from harness.table.collect import aggregate
from harness.measure.cases import flops, make_case, output_size
from harness.measure.check import NotATensor, reference, tolerance
from harness.measure.check import check_tensors as compare
from harness.config import Config, DType, Method, Pass, Shape, Suite, Timing
from harness.measure.memory import peak_bytes
from harness.measure.job import run_job
from harness.table.jobfolder import COMPLETE, JOB_TABLE, ROWS_FILE
from harness.summary import fastest
from harness.measure.timing import CaseTimeout, deadline, time_call

from conftest import PLUGINS
from faketime import FakeTime



@pytest.fixture(scope="module", autouse=True)
def broken_plugins():
    """Register tests/plugins' broken_* for this module only: left registered, a test elsewhere that
    loops over implementations.names() would meet broken_hangs and hang."""
    from implementations import registry
    sys.path.insert(0, str(PLUGINS))
    sys.modules.pop("broken_convs", None)  # imported (and unregistered) by an earlier module: register again
    try:
        import broken_convs
        yield broken_convs
    finally:
        sys.path.remove(str(PLUGINS))
        sys.modules.pop("broken_convs", None)
        for name in [n for n in registry._registry if n.startswith("broken_")]:
            del registry._registry[name]

SMOKE = Suite(name="smoke", shapes=[
    Shape(layer="plain", n=2, c_in=3, h=8, w=8, c_out=4, kernel=3, padding=1),
    Shape(layer="odd", n=1, c_in=4, h=9, w=7, c_out=6, kernel=[3, 2], stride=[2, 1], padding=[1, 0],
          dilation=[1, 2], groups=2, bias=False),
])


def job_config(impl: str, **kw) -> Config:
    kw.setdefault("timing", Timing(min_run_time=0.01, warmup=0))
    kw.setdefault("budget_s", 1.0)
    return Config(impl=impl, suite=SMOKE, results_link=None, **kw)


def test_flops_and_output_size_match_conv2d():
    s = Shape(layer="x", n=2, c_in=4, h=9, w=7, c_out=6, kernel=[3, 2], stride=[2, 1], padding=[1, 0],
              dilation=[1, 2], groups=2)
    out = F.conv2d(torch.empty(2, 4, 9, 7, device="meta"), torch.empty(6, 2, 3, 2, device="meta"),
                   stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2)
    assert output_size(s) == tuple(out.shape[-2:])
    assert flops(s, "forward") == 2 * 2 * 6 * out.shape[2] * out.shape[3] * 2 * 3 * 2
    assert flops(s, "backward") == 2 * flops(s, "forward")


def test_compare_flags_each_kind_of_wrong():
    case = make_case(SMOKE.shapes[0], torch.device("cpu"), torch.float32, seed=0)
    ref, _ = reference(case)
    good = F.conv2d(case.x, case.weight, case.bias, padding=1)
    v = compare({"output": good}, {"output": ref}, torch.float32, torch.device("cpu"))
    assert v.correct and 0 < v.rel_err < tolerance(torch.float32)
    v = compare({"output": good * 1.001}, {"output": ref}, torch.float32, torch.device("cpu"))
    assert not v.correct and "relative error" in v.message
    nan = good.clone()
    nan[0, 0, 0, 0] = float("nan")
    assert "NaN" in compare({"output": nan}, {"output": ref}, torch.float32, torch.device("cpu")).message
    assert "shape" in compare({"output": good[..., 1:]}, {"output": ref}, torch.float32, torch.device("cpu")).message
    assert "dtype" in compare({"output": good.double()}, {"output": ref}, torch.float32, torch.device("cpu")).message
    with pytest.raises(NotATensor):
        compare({"output": [1.0]}, {"output": ref}, torch.float32, torch.device("cpu"))


def test_deadline_interrupts_a_python_hang():
    """The real SIGALRM path: a pure-Python hang ends soon after the budget (30 s: a safety net only)."""
    start = time.monotonic()
    with pytest.raises(CaseTimeout):
        with deadline(0.2):
            while True:
                pass
    assert time.monotonic() - start < 30


def test_deadline_excuses_harness_overhead(monkeypatch):
    """Budget.overhead charges harness work around a call as the call alone: 0.3 s of work fits a
    0.2 s budget when 0.15 s of it is overhead around a 0.05 s call (allowed up to 6x the call)."""
    fake = FakeTime().install(monkeypatch)
    with deadline(0.2) as budget:
        fake.spend(0.1)
        with budget.overhead(0.05, slowdown=6):
            fake.spend(0.2)
        assert budget() == pytest.approx(0.05)
    with pytest.raises(CaseTimeout):
        with deadline(0.2):
            fake.spend(0.15)
            fake.spend(0.15)
    with pytest.raises(CaseTimeout):  # the allowance is bounded: 6 x 0.05 s beyond the budget
        with deadline(0.2) as budget:
            with budget.overhead(0.05, slowdown=6):
                fake.spend(0.51)


def test_memory_profiler_overhead_is_excused_from_the_budget(monkeypatch):
    """The CPU memory call runs under the profiler, which slows many-op implementations up to ~12x
    (loop's backward on ResNet's stem: 4.9 s for a 0.42 s call). Simulated here as 0.95 s of overhead
    on a 0.05 s call under a 1 s budget: excused, the pass is timed and ok, not a timeout."""
    from harness.measure import memory
    from harness.measure.passes import CaseSettings, run_case
    fake = FakeTime().install(monkeypatch)
    real = memory.measure

    def slow_profiler(fn, device):
        fake.spend(0.95)
        return real(fn, device)

    monkeypatch.setattr(memory, "measure", slow_profiler)
    settings = CaseSettings(torch.float32, ("forward",), Timing(), threads=1, budget_s=1.0, seed=0)
    shape = Shape(layer="s", n=1, c_in=2, h=6, w=6, c_out=2, kernel=3, padding=1)
    r = run_case(fake.conv(0.05), shape, settings, torch.device("cpu"))["forward"]
    assert r.status.value == "ok", r.message
    assert r.timing is not None and len(r.timing.samples) >= 3


def test_a_hang_in_the_memory_call_is_still_interrupted(monkeypatch):
    """The profiler's allowance is bounded (PROFILER_SLOWDOWN x the first call): a second call that
    never returns is a timeout."""
    from harness.measure.passes import CaseSettings, run_case
    fake = FakeTime().install(monkeypatch)
    calls = []

    def hangs_on_second_call(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        calls.append(1)
        fake.spend(0.01)
        while len(calls) > 1:
            fake.spend(0.01)
        return F.conv2d(input, weight, bias, stride, padding, dilation, groups)

    settings = CaseSettings(torch.float32, ("forward",), Timing(), threads=1, budget_s=0.5, seed=0)
    shape = Shape(layer="s", n=1, c_in=2, h=6, w=6, c_out=2, kernel=3, padding=1)
    r = run_case(hangs_on_second_call, shape, settings, torch.device("cpu"))["forward"]
    assert r.status.value == "timeout" and len(calls) == 2 and fake.t < 0.5 + 20 * 0.02 + 0.05


@pytest.mark.parametrize("method", ["blocked", "adaptive"])
def test_time_call_methods(method):
    a = torch.randn(64, 64)
    t = time_call(lambda: a @ a, Timing(min_run_time=0.02, warmup=1, method=Method(method), max_run_time=0.5),
                  torch.device("cpu"), threads=1)
    assert t.n_runs == len(t.samples) >= 1 and min(t.samples) <= t.median <= max(t.samples)
    assert t.iqr >= 0 and len(json.loads(t.samples_json)) == t.n_runs


def test_peak_bytes_cpu_sees_a_temporary():
    size = 4 << 20

    def fn():
        tmp = torch.ones(size // 4)  # float32: `size` bytes, freed before returning
        return float(tmp.sum())

    peak = peak_bytes(fn, "cpu")
    assert size <= peak < 2 * size


@pytest.mark.parametrize("impl, status, words, backward", [
    ("cudnn", "ok", "", "ok"),
    ("broken_raises", "error", "deliberate failure", "error"),
    ("broken_values", "incorrect", "relative error", "incorrect"),
    ("broken_hangs", "timeout", "budget", "timeout"),
    ("broken_swallows", "timeout", "budget", "timeout"),
    ("broken_shape", "incorrect", "shape", "error"),   # grad_output no longer fits the output
    ("broken_dtype", "incorrect", "dtype", "ok"),      # the gradients themselves are right
    ("broken_nan", "incorrect", "NaN", "ok"),
])
def test_job_turns_every_failure_into_rows(tmp_path, impl, status, words, backward):
    budget = 0.3 if "hang" in impl or "swallow" in impl else 30.0  # generous: the machine may be busy
    df = run_job(job_config(impl, budget_s=budget), tmp_path, job=3, progress=False)
    assert len(df) == len(SMOKE.shapes) * 2 and list(df.columns) == list(schema.COLUMNS)
    fwd, bwd = df[df["pass"] == "forward"], df[df["pass"] == "backward"]
    assert set(fwd["status"]) == {status} and set(bwd["status"]) == {backward}, df["message"].tolist()
    assert fwd["message"].str.contains(words).all()
    assert (tmp_path / COMPLETE).exists() and len(pd.read_parquet(tmp_path / JOB_TABLE)) == len(df)
    assert len((tmp_path / ROWS_FILE).read_text().splitlines()) == len(df)
    if status == "ok":
        assert df["time_median_s"].gt(0).all() and df["gflops"].gt(0).all() and df["correct"].all()
        assert (df["rel_err"] <= df["tol"]).all() and df["peak_mem_bytes"].gt(0).all()
        assert df["samples"].map(lambda s: len(json.loads(s))).eq(df["n_runs"]).all()
        assert not df["concurrent"].any()


def test_detached_output_is_a_backward_error(tmp_path):
    df = run_job(job_config("broken_detached"), tmp_path, progress=False)
    assert set(df[df["pass"] == "forward"]["status"]) == {"ok"}
    assert set(df[df["pass"] == "backward"]["status"]) == {"error"}


def test_absent_device_gives_skipped_rows(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    df = run_job(job_config("cudnn", device="cuda"), tmp_path, progress=False)
    assert set(df["status"]) == {"skipped"} and df["message"].str.contains("CUDA").all()


def test_declared_unsupported_dtype(tmp_path):
    df = run_job(job_config("fft", dtype=DType.float16, passes=[Pass.forward]), tmp_path, progress=False)
    assert set(df["status"]) == {"unsupported"} and set(df["pass"]) == {"forward"}


def _job_rows(job: int, impl: str, status: str = "ok") -> list[dict]:
    return [dict(job=job, impl=impl, suite="s", layer="a", shape="a", device="cpu", dtype="float32",
                 **{"pass": "forward"}, status=status, time_median_s=1.0 / (job + 1))]


def test_aggregate_orders_by_job_number_and_keeps_partial_jobs(tmp_path):
    for job in (0, 2, 10):
        d = tmp_path / str(job)
        d.mkdir()
        schema.frame(_job_rows(job, f"i{job}")).to_parquet(d / JOB_TABLE)
        (d / COMPLETE).write_text("{}")
    partial = tmp_path / "11"  # its driver died: only appended rows, the last one cut short
    partial.mkdir()
    rows = _job_rows(11, "i11") * 2  # the same case twice (a resumed job): keep one
    (partial / ROWS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"job": 11, "imp')
    df = aggregate(tmp_path)
    assert df["job"].tolist() == [0, 2, 10, 11]
    assert pd.read_parquet(tmp_path / "results.parquet")["job"].tolist() == [0, 2, 10, 11]
    assert len(pd.read_csv(tmp_path / "results.csv")) == 4


def test_incorrect_is_never_fastest():
    rows = _job_rows(0, "fast_but_wrong", "incorrect") + _job_rows(1, "slow_but_right") + \
        _job_rows(2, "timed_out", "timeout")
    rows[0]["time_median_s"] = 1e-9
    best = fastest(schema.frame(rows))
    assert best["impl"].tolist() == ["slow_but_right"]


def test_bare_cuda_names_the_current_device(monkeypatch):
    """Tensors on CUDA report `cuda:0`; the job's device must too, or every CUDA result would be
    judged "on the wrong device". (Monkeypatched: runs without a GPU.)"""
    from harness.measure import devices
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert devices.resolve("cuda") == torch.device("cuda:1")
    assert devices.resolve("auto") == torch.device("cuda:1")
    assert devices.resolve("cuda:0") == torch.device("cuda:0")
    assert devices.same_device(torch.device("cuda:1"), torch.device("cuda"))
    assert not devices.same_device(torch.device("cuda:0"), torch.device("cuda"))
    assert not devices.same_device(torch.device("cpu"), torch.device("cuda:1"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.resolve("auto") == torch.device("cpu")
