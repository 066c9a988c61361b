"""Issue #11: timing as rigorous as nvbench. Planted implementations with big effects (robust on a
busy 2-core machine): one fast only with warm caches, one with an expensive first call, one that
sleeps at random; the interval's coverage on a synthetic distribution; the stopping criteria."""
from __future__ import annotations

import functools
import random
import statistics
import time

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F

from harness.config import Cache, Method, Shape, Timing
from harness.measure import stopping
from harness.measure.flush import Flusher, parse_size as _parse_size, cpu_llc_bytes
from harness.measure.passes import CaseSettings, run_case
from harness.measure.stats import TimingResult, ci_ranks
from harness.measure.timing import sample, time_call, time_cold

CPU = torch.device("cpu")
TINY = Shape(layer="tiny", n=1, c_in=2, h=6, w=6, c_out=2, kernel=3, padding=1)


def settings(**timing) -> CaseSettings:
    timing = {"min_run_time": 0.05, "warmup": 1, "max_run_time": 0.5, **timing}
    return CaseSettings(torch.float32, ("forward", "backward"), Timing(**timing), threads=1, budget_s=60.0, seed=0)


# ---------------------------------------------------------------------------- planted implementations
_KEPT = torch.ones(2 ** 20 // 4)  # 1 MiB it re-reads every call: in cache when warm, in DRAM when cold


def keeps_a_buffer(x, w, b=None, **kw):
    """Fast only with warm caches: most of its work is re-reading a buffer it keeps."""
    out = F.conv2d(x, w, b, **kw)
    return out + _KEPT.sum() * 0


@functools.lru_cache(maxsize=None)
def _table(k: int) -> torch.Tensor:
    time.sleep(0.3)  # building a lookup table on first use
    return torch.zeros(k)


def builds_a_table(x, w, b=None, **kw):
    """Expensive first call: a table built on first use and kept (in a module-level lru_cache)."""
    return F.conv2d(x, w, b, **kw) + _table(w.shape[-1]).sum()


_rng = random.Random(0)


def sleeps_at_random(x, w, b=None, **kw):
    """Deliberately noisy: a random sleep of 0-4 ms per call."""
    time.sleep(_rng.choice([0.0, 0.0005, 0.001, 0.004]))
    return F.conv2d(x, w, b, **kw)


@functools.lru_cache(maxsize=None)
def _autotune_workspace() -> bool:
    torch.ones(64 * 2 ** 20 // 4).sum()  # a 64 MiB workspace, on the first call only (like cuDNN autotuning)
    return True


def big_first_workspace(x, w, b=None, **kw):
    _autotune_workspace()
    return F.conv2d(x, w, b, **kw)


# ------------------------------------------------------------------------------------------ cold/warm
def test_cold_is_much_slower_than_warm_for_an_implementation_living_in_cache():
    r = run_case(keeps_a_buffer, TINY, settings(cache=Cache.both), CPU)["forward"]
    assert r.status == "ok", r.message
    assert r.cold.n_runs >= 10 and r.timing.n_runs >= 10
    assert r.cold.median > 3 * r.timing.median, (r.cold.median, r.timing.median)


def test_cold_flush_is_never_timed():
    """A 50 ms flush around a ~0 s call: the samples hold the call only."""
    t = time_cold(lambda: None, Timing(min_run_time=0.01, min_samples=5), CPU, flush=lambda: time.sleep(0.05))
    assert t.n_runs >= 5 and t.median < 0.005


def test_cache_setting_picks_the_timings():
    assert run_case(F.conv2d, TINY, settings(cache=Cache.warm), CPU)["forward"].cold is None
    r = run_case(F.conv2d, TINY, settings(cache=Cache.cold), CPU)["forward"]
    assert r.timing is None and r.cold is not None


def test_flush_is_twice_the_last_level_cache(tmp_path):
    for i, (level, size) in enumerate([(1, "32K"), (2, "1024K"), (3, "32768K")]):
        (tmp_path / f"index{i}").mkdir()
        (tmp_path / f"index{i}" / "size").write_text(size + "\n")
    assert cpu_llc_bytes(tmp_path) == 32 * 2 ** 20
    assert _parse_size("1.5 MiB") == int(1.5 * 2 ** 20)
    assert Flusher(CPU).nbytes == 2 * cpu_llc_bytes()


# ------------------------------------------------------------------------------------------ first call
def test_an_expensive_first_call_shows_in_first_call_s_not_in_the_medians():
    for _ in range(2):  # a fresh state each time: the implementation's module-level caches are reset
        r = run_case(builds_a_table, TINY, settings(), CPU)
        for p in ("forward", "backward"):
            assert r[p].status == "ok", r[p].message
        assert r["forward"].first_call_s >= 0.3
        assert r["forward"].timing.median < 0.05 and r["forward"].cold.median < 0.05
        assert r["backward"].timing.median < 0.05


# --------------------------------------------------------------------------------- interval and noise
def test_interval_matches_scipy_quantile_test():
    rng = np.random.default_rng(1)
    for n in (6, 10, 25, 101):
        x = rng.lognormal(size=n)
        ci = scipy.stats.quantile_test(x, q=float(np.median(x)), p=0.5).confidence_interval(0.95)
        assert TimingResult(tuple(x)).ci == pytest.approx((ci.low, ci.high))
    assert ci_ranks(5) is None  # 2 * 0.5**5 > 5%: no 95% interval from 5 samples


def test_interval_contains_the_true_median_in_at_least_90_percent_of_trials():
    rng = np.random.default_rng(0)
    true_median = np.exp(0.0)  # lognormal(0, 1): skewed, like timings
    hits = 0
    trials = 400
    for _ in range(trials):
        lo, hi = TimingResult(tuple(rng.lognormal(0.0, 1.0, size=30))).ci
        hits += lo <= true_median <= hi
    assert hits / trials >= 0.90


def test_a_random_sleeper_is_noisy():
    r = run_case(sleeps_at_random, TINY, settings(method=Method.noise, max_run_time=0.3), CPU)["forward"]
    assert r.status == "ok"
    assert any("std" in w for w in r.timing.unstable)
    assert r.timing.capped  # its interval never gets within 2%: max_run_time stops it


def test_pyperf_rules():
    assert TimingResult(tuple([1.0, 1.01, 0.99] * 5)).unstable == []
    assert "only 3 samples" in TimingResult((1.0, 1.0, 1.0)).unstable[0]
    assert any("std" in w for w in TimingResult(tuple([1.0] * 9 + [3.0])).unstable)
    assert any("max" in w for w in TimingResult(tuple([1.0] * 12 + [8.0])).unstable)
    assert TimingResult(tuple([1.0] * 12), capped=True).unstable


def test_pyperf_rules_judge_block_means_not_single_call_jitter():
    """pyperf's values are means of many loops: per-call jitter of a fast call (30% here) is not
    instability, a machine that slows down half-way through the timing is."""
    rng = np.random.default_rng(0)
    jitter = rng.lognormal(0.0, 0.3, size=1000) * 1e-4
    assert statistics.stdev(jitter) / statistics.fmean(jitter) > 0.25
    assert TimingResult(tuple(jitter)).unstable == []
    drifting = np.concatenate([jitter[:500], jitter[500:] * 1.5])
    assert any("std" in w for w in TimingResult(tuple(drifting)).unstable)


class FakeClock:
    """Samples drawn from a distribution, instantly."""

    def __init__(self, spread: float, seed: int = 0):
        self.rng, self.spread = np.random.default_rng(seed), spread

    def time(self, fn, n=1, prepare=None):
        return 1.0 + self.spread * self.rng.standard_normal()


def test_noise_criterion_stops_once_the_interval_is_narrow():
    rule = stopping.stopping_for(Timing(min_run_time=0.001, method=Method.noise, max_noise=0.02, max_run_time=0.5))
    quiet = sample(lambda: None, FakeClock(0.01), rule)
    assert not quiet.capped and quiet.noise <= 0.02 and quiet.n_runs >= 10
    loud = sample(lambda: None, FakeClock(0.9), stopping.Stopping(rule.criteria, cap_s=0.05))
    assert loud.capped and loud.noise > 0.02


def test_each_criterion_alone():
    assert stopping.MinSamples(3).met([1, 1, 1], 0) and not stopping.MinSamples(3).met([1], 9)
    assert stopping.MinTime(0.1).met([], 0.1) and not stopping.MinTime(0.1).met([1] * 99, 0.05)
    assert stopping.IqrBelow(0.1).met([1.0] * 8, 0) and not stopping.IqrBelow(0.1).met([1, 2, 3, 4, 5], 0)
    assert stopping.CiWithin(0.02).met([1.0] * 20, 0) and not stopping.CiWithin(0.02).met([1.0, 2.0] * 10, 0)


@pytest.mark.parametrize("method", list(Method))
def test_every_method_gives_min_samples(method):
    a = torch.randn(64, 64)
    t = time_call(lambda: a @ a, Timing(min_run_time=0.02, method=method, max_run_time=0.5), CPU, threads=1)
    assert t.n_runs >= 10 or t.capped


def test_fresh_state_clears_the_implementations_own_caches_only():
    import implementations
    from harness.measure import fresh
    assert "implementations.fft.fast_len" in fresh.reset(implementations.get("fft"), CPU)
    assert fresh.reset(F.conv2d, CPU) == []  # torch's caches are not the implementation's
