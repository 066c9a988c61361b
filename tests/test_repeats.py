"""A row's warm timing from several worker processes (timing.processes, harness.measure.repeats):
pooling rules on plain records, then real jobs whose implementation notes the process calling it."""
from __future__ import annotations

import json
import random
import statistics
import os

import pytest
import torch

import implementations
from harness.config import Cache, Shape, Timing
from harness.measure.machine import GpuReading
from harness.measure.passes import CaseSettings, PassResult, repeat_case
from harness.measure.repeats import pool
from harness.measure.stats import TimingResult, vendor_ratios
from harness.table.schema import Status

from conftest import PLUGINS

TINY = Shape(layer="tiny", n=1, c_in=2, h=6, w=6, c_out=2, kernel=3, padding=1)


def _timed(samples, rounds=(), vendor=(), status=Status.ok) -> PassResult:
    return PassResult(status=status, timing=TimingResult(tuple(samples), rounds=tuple(rounds)),
                      vendor_rounds=tuple(vendor), done=True)


def test_processes_pool_their_samples_and_keep_one_value_each():
    first = _timed([1.0, 1.2, 1.1], rounds=[1.1], vendor=[0.5])
    pool(first, [_timed([2.0, 2.2], rounds=[2.1], vendor=[1.0]), _timed([1.5], rounds=[1.5], vendor=[0.75])])
    assert first.timing.samples == (1.0, 1.2, 1.1, 2.0, 2.2, 1.5)
    assert first.timing.rounds == (1.1, 2.1, 1.5) and first.vendor_rounds == (0.5, 1.0, 0.75)
    assert vendor_ratios(first.timing.rounds, first.vendor_rounds) == pytest.approx([2.2, 2.1, 2.0])
    assert first.timing.ci == (1.0, 2.2)  # widened to hold every process's median
    assert first.status == Status.ok and not first.notes


def test_a_process_with_several_rounds_gives_their_median():
    first = _timed([1.0] * 3, rounds=[1.0, 3.0, 1.2], vendor=[0.5, 1.0, 0.6])
    pool(first, [_timed([2.0], rounds=[2.0, 2.0, 2.0], vendor=[1.0, 1.0, 1.0])])
    assert first.timing.rounds == (1.2, 2.0) and first.vendor_rounds == (0.6, 1.0)


def test_a_ratio_needs_the_vendor_in_every_process():
    first = _timed([1.0], rounds=[1.0], vendor=[0.5])
    pool(first, [_timed([1.0], rounds=[1.0])])
    assert first.vendor_rounds == () and first.timing.rounds == (1.0, 1.0)


def test_a_repeat_that_crashed_marks_the_row_and_one_without_timing_is_a_note():
    first = _timed([1.0], rounds=[1.0])
    crashed = PassResult(status=Status.crashed, message="the worker was killed by SIGSEGV", done=True)
    timeout = PassResult(status=Status.timeout, message="ran past the budget of 2 s", done=True)
    pool(first, [crashed, timeout])
    assert first.status == Status.crashed
    assert first.message == "in worker process 2 of 3 (a repeat of the warm timing): the worker was killed by SIGSEGV"
    assert first.notes == ["no warm timing from worker process 2 of 3 (a repeat of the warm timing): the worker was "
                           "killed by SIGSEGV", "no warm timing from worker process 3 of 3 (a repeat of the warm "
                           "timing): ran past the budget of 2 s"]
    assert first.timing.samples == (1.0,)  # what was measured stays


def test_an_incorrect_row_stays_incorrect_and_hears_of_the_crash():
    first = _timed([1.0], rounds=[1.0], status=Status.incorrect)
    first.message = "output: rel_err 0.5"
    pool(first, [PassResult(status=Status.error, message="RuntimeError: boom", done=True)])
    assert first.status == Status.incorrect and first.message.endswith("repeat of the warm timing): RuntimeError: boom")


def test_concurrency_and_the_worst_gpu_reading_carry_over():
    first = _timed([1.0], rounds=[1.0])
    first.gpu = GpuReading(clock_mhz=1900, throttled=False, reasons=())
    other = _timed([1.0], rounds=[1.0])
    other.concurrent, other.gpu = True, GpuReading(clock_mhz=1500, throttled=True, reasons=("thermal",))
    pool(first, [other])
    assert first.concurrent and first.gpu.throttled and first.gpu.clock_mhz == 1500


def test_a_repeat_times_the_warm_rounds_only():
    calls = []

    def counted(*a, **k):
        calls.append(1)
        return torch.nn.functional.conv2d(*a, **k)

    s = CaseSettings(torch.float32, ("forward", "backward"), Timing(min_run_time=0.01, cache=Cache.both), 1, 30.0, 0)
    res = repeat_case(counted, TINY, s, torch.device("cpu"), ("forward", "backward"))
    for r in res.values():
        assert r.status == Status.ok and r.timing is not None and r.cold is None and r.verdict is None
        assert len(r.vendor_rounds) == 1
    only = repeat_case(counted, TINY, s, torch.device("cpu"), ("backward",))
    assert list(only) == ["backward"] and only["backward"].timing is not None


# ---------------------------------------------------------------------------------------- real jobs
def _job(tmp_path, monkeypatch, compose, impl: str, processes: int):
    from harness.config import to_config
    from harness.measure.job import run_job
    monkeypatch.setenv("CONVBENCH_PID_LOG", str(tmp_path / "pids"))
    monkeypatch.syspath_prepend(str(PLUGINS))
    cfg = compose("suite=smoke", "device=cpu", f"impl={impl}", "plugins=[per_process]",
                  f"timing.processes={processes}", "timing.min_run_time=0.01", "timing.cache=warm")
    df = run_job(to_config(cfg), tmp_path / "job", progress=False)
    pids = (tmp_path / "pids").read_text().split()
    return df, pids


def test_each_process_of_a_row_is_a_worker_of_its_own(tmp_path, monkeypatch, compose):
    df, pids = _job(tmp_path, monkeypatch, compose, "records_pid", 3)
    assert set(df["status"]) == {"ok"}
    assert len(set(pids)) == 3 and str(os.getpid()) not in pids
    for cell in df["round_medians"]:
        assert len(json.loads(cell)) == 3
    for cell in df["vs_vendor_rounds"]:
        assert len(json.loads(cell)) == 3


def test_a_crash_in_another_process_is_the_rows_status(tmp_path, monkeypatch, compose):
    df, _ = _job(tmp_path, monkeypatch, compose, "crashes_in_another_process", 2)
    assert set(df["status"]) == {"crashed"}  # later cases crash in their first process too
    first = df[df["layer"] == df["layer"].iloc[0]]
    assert first["message"].str.startswith("in worker process 2 of 2 (a repeat of the warm timing): ").all()
    fwd = first[first["pass"] == "forward"]["message"].iloc[0]
    assert fwd.startswith("in worker process 2 of 2 (a repeat of the warm timing): the worker was killed by SIGSEGV")
    assert first["time_median_s"].notna().all()  # the first process's timing is kept


def test_the_processes_of_a_case_are_spread_over_the_job():
    from harness.measure.repeats import schedule
    order = schedule(30, 3)
    assert sorted(order) == [(i, k) for i in range(30) for k in range(3)]
    for i in range(30):
        steps = [order.index((i, k)) for k in range(3)]
        assert steps == sorted(steps) and steps[1] - steps[0] >= 10 and steps[2] - steps[1] >= 10  # a third of the job apart
    assert schedule(1, 3) == [(0, 0), (0, 1), (0, 2)] and schedule(3, 1) == [(0, 0), (1, 0), (2, 0)]


def test_a_timing_is_trusted_when_its_time_or_its_ratio_to_the_vendor_beside_it_is_steady():
    """A machine whose speed flips 1.6x between processes moves every absolute time (noisy on the
    samples) but not the step ratios (not noisy); a row that sleeps at random moves both; a row whose
    own time holds while the vendor beside it flips (a Python-bound loop) is trusted on its time."""
    from harness.measure.stats import TimingResult, untrusted
    rng = random.Random(0)
    speeds = [1.0, 1.6, 1.0]
    samples = [s * (1 + 0.01 * rng.random()) for s in speeds for _ in range(20)]
    ratios = [2.0 * (1 + 0.01 * rng.random()) for _ in range(60)]
    timing = TimingResult(tuple(samples), rounds=tuple(float(statistics.median(samples[20 * k:20 * k + 20]))
                                                      for k in range(3)))
    assert timing.unstable  # the absolute times are not to be trusted ...
    steady = TimingResult(tuple(ratios), rounds=(2.01, 2.0, 2.01))
    assert untrusted(timing, steady) == []  # ... their ratio is
    sleepy = [r * (3 if rng.random() < 0.3 else 1) for r in ratios]
    assert any(w.startswith("vs vendor: ") for w in untrusted(timing, TimingResult(tuple(sleepy), rounds=(2.0, 2.4, 3.0))))
    assert untrusted(timing, None) == timing.unstable  # no vendor beside it: the samples themselves
    own = TimingResult(tuple(2.0 * (1 + 0.01 * rng.random()) for _ in range(60)), rounds=(2.0, 2.01, 2.0))
    flipping = TimingResult(tuple(ratios[k] * speeds[k // 20] for k in range(60)), rounds=(2.0, 3.2, 2.0))
    assert flipping.unsteady and untrusted(own, flipping) == []  # its own time holds: a number to trust
    sleepy_own = TimingResult(tuple(x * (3 if rng.random() < 0.3 else 1) for x in own.samples), rounds=(2.0, 2.6, 2.3))
    both = untrusted(sleepy_own, TimingResult(tuple(sleepy), rounds=(2.0, 2.4, 3.0)))
    assert both and any(w.startswith("vs vendor: ") for w in both) and not both[0].startswith("vs vendor")
    few = TimingResult(tuple(samples[:4]))
    assert untrusted(few, TimingResult(tuple(ratios[:4])))[0].startswith("only 4 samples")
