"""When to stop sampling, nvbench style: each criterion is a small class with its own defaults, and a
`Stopping` rule is "every criterion met" with a cap (max_run_time, or what is left of the budget).
Elapsed time is the sampling loop's wall time (cold timings include the flushes), so the cap bounds
what a row costs, not just what is measured."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Protocol, Sequence

import numpy as np

from harness.config import Method, Timing

from .stats import MAX_CI_HALF_WIDTH, TimingResult

DEFAULT = Timing()  # the criteria's defaults are the config's (harness.config is their one source)


class Criterion(Protocol):
    def met(self, samples: Sequence[float], elapsed: float) -> bool: ...


@dataclass(frozen=True)
class MinTime:
    """Sample for at least this many seconds (torch.utils.benchmark's min_run_time)."""
    seconds: float = DEFAULT.min_run_time

    def met(self, samples, elapsed):
        return elapsed >= self.seconds


@dataclass(frozen=True)
class MinSamples:
    """At least this many samples (nvbench's min_samples): spread and an interval need several."""
    n: int = DEFAULT.min_samples

    def met(self, samples, elapsed):
        return len(samples) >= self.n


@dataclass(frozen=True)
class IqrBelow:
    """IQR / median below a threshold (torch.utils.benchmark's adaptive_autorange rule)."""
    threshold: float = DEFAULT.threshold

    def met(self, samples, elapsed):
        if len(samples) < 4:
            return False
        q1, med, q3 = np.percentile(samples, [25, 50, 75])
        return med > 0 and (q3 - q1) / med < self.threshold


@dataclass(frozen=True)
class CiWithin:
    """The median's 95% interval within +-max_noise of the median (nvbench's noise criterion, with the
    order-statistic interval in place of the standard deviation)."""
    max_noise: float = DEFAULT.max_noise

    def met(self, samples, elapsed):
        return TimingResult(tuple(samples)).noise <= self.max_noise


@dataclass(frozen=True)
class Stopping:
    """Stop when every criterion is met (`done`), or at `cap_s` seconds whatever (`capped`).
    `until_samples`: the cap (max_run_time) waits for this many samples, so a slow call still gets
    them (cold timings: `timing.min_samples`); `budget_s`, what is left of the case's budget
    (`within`), never waits."""
    criteria: tuple[Criterion, ...] = (MinTime(), MinSamples())
    cap_s: float = DEFAULT.max_run_time
    until_samples: int = 0
    budget_s: Optional[float] = None

    def done(self, samples, elapsed) -> bool:
        return all(c.met(samples, elapsed) for c in self.criteria)

    def capped(self, elapsed: float, next_sample_s: float = 0.0, n: Optional[int] = None) -> bool:
        """True once the cap is reached, or would be by the next sample (which would overrun it);
        with `until_samples`, the cap only once `n` samples are that many. The budget's cap always."""
        end = elapsed + next_sample_s
        if self.budget_s is not None and end >= self.budget_s:
            return True
        return end >= self.cap_s and (n is None or n >= self.until_samples)

    def within(self, cap_s: Optional[float]) -> "Stopping":
        """The same rule with what is left of a budget, `cap_s`, as a hard cap; None: unchanged."""
        if cap_s is None:
            return self
        cap_s = max(cap_s, 0.0)
        if self.until_samples:
            return dataclasses.replace(self, budget_s=cap_s if self.budget_s is None else min(cap_s, self.budget_s))
        if cap_s >= self.cap_s:
            return self
        return dataclasses.replace(self, cap_s=cap_s)


def stopping_for(timing: Timing, cold: bool = False) -> Stopping:
    """The rule of `timing.method`. Every timing goes on past its floor until the median's interval
    is within what `noisy` accepts (stats.MAX_CI_HALF_WIDTH) or the cap, as nvbench samples until
    its noise criterion: a timing whose samples spread gets more of them instead of a `noisy` flag
    after min_run_time (warm rounds of 33 ms per worker process left 26 of 296 rows noisy for a wide
    interval alone on a 2-core VM whose host slows calls 1.5x in 50-300 ms spells), while a steady
    one stops at the floor as before. Cold samples are single calls, each after its own eviction, so
    they need no long time floor to average out jitter: `cold_min_run_time` replaces min_run_time
    (single cold calls spread 10-20% on a quiet VM, ten of them rarely pin the median to +-5%, and
    more of a cheap call cost little). A cold timing gets `min_samples` however long they take
    (max_run_time waits for them); only the budget cuts it short."""
    floor = timing.cold_min_run_time if cold else timing.min_run_time
    interval = timing.max_noise if timing.method == Method.noise else MAX_CI_HALF_WIDTH  # noise: its own, tighter
    criteria: list[Criterion] = [MinTime(floor), MinSamples(timing.min_samples), CiWithin(interval)]
    if timing.method == Method.adaptive:
        criteria.append(IqrBelow(timing.threshold))
    return Stopping(tuple(criteria), timing.max_run_time, until_samples=timing.min_samples if cold else 0)
