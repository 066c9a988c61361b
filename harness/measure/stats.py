"""What a list of timing samples says: median, IQR, a 95% confidence interval of the median, and
whether the samples are too unstable to trust (pyperf's rules).

The interval is the order-statistic (binomial) interval, not a bootstrap: with n samples sorted, the
median lies between the j-th and the (n+1-j)-th with probability 1 - 2 P(B < j), B ~ Binomial(n, 1/2),
whatever the distribution (only independence is assumed). j is the largest rank that keeps this at
least 95% (`scipy.stats.quantile_test` computes the same interval). It needs no resampling, so the
noise stopping rule can ask for it after every sample. Fewer than 6 samples cannot give 95%: the
interval is then (min, max) and the timing is unstable."""
from __future__ import annotations

import functools
import json
import statistics
from dataclasses import dataclass
from typing import Optional

import numpy as np

from harness.config import Timing
from scipy.stats import binom

CONFIDENCE = 0.95
MIN_SAMPLES = Timing().min_samples  # "too few samples" below this, unless a timing says otherwise
MAX_CI_HALF_WIDTH = 0.05  # the median's 95% interval reaches further than 5% of it: the median is not known
MAX_STD_OF_MEAN = 0.10    # pyperf: the standard deviation is >= 10% of the mean
MAX_FROM_MEAN = 0.50      # pyperf: the minimum or the maximum is >= 50% away from the mean
PYPERF_VALUES = 20        # per-call samples are judged as at most this many block medians (pyperf "values")
MIN_BLOCK = 5             # ... each the median of at least this many samples: a pyperf value averages many
                          # loops, a single call is not one (single cold calls spread 10-20% on a quiet VM)


def values_json(values) -> str:
    """A JSON list of times or ratios at 6 significant digits (how every per-sample column is stored)."""
    return json.dumps([float(f"{v:.6g}") for v in values])


@functools.lru_cache(maxsize=4096)
def ci_ranks(n: int, confidence: float = CONFIDENCE) -> Optional[tuple[int, int]]:
    """0-based indices (lo, hi) into the sorted samples bounding the median with >= `confidence`;
    None when n is too small for that confidence."""
    alpha = (1 - confidence) / 2
    m = int(binom.ppf(alpha, n, 0.5))          # smallest m with P(B <= m) >= alpha
    if binom.cdf(m, n, 0.5) > alpha:
        m -= 1                                  # largest m with P(B <= m) <= alpha
    if m < 0:
        return None
    return m, n - 1 - m


def pyperf_values(samples, at_most: int = PYPERF_VALUES, min_block: int = MIN_BLOCK) -> list[float]:
    """The samples as pyperf's rules expect them: at most `at_most` values, each summarising at least
    `min_block` consecutive samples (fewer samples than that: one value, and the rules need two). A
    pyperf value averages many loops (each lasts >= 100 ms); here each is a block's *median*, since the
    median is what a row reports: one stall in a block (a preemption) does not move its median, while
    a machine that slows down half-way through the timing moves every later block. Judging single
    calls as values would flag the ordinary spread of one call (10-20% for a cold call on a quiet VM),
    which the median's interval already accounts for."""
    blocks = np.array_split(np.asarray(samples, dtype=float), max(1, min(at_most, len(samples) // max(min_block, 1))))
    return [float(np.median(b)) for b in blocks if b.size]


@dataclass(frozen=True)
class TimingResult:
    """Raw per-call times in, statistics derived, as torch.utils.benchmark's Measurement: the samples
    are the record (compare's significance tests read them), every figure is computed from them.
    `capped`: sampling stopped at max_run_time (or the budget) before its stopping rule was met
    (recorded; it makes a timing noisy only through what it left: few samples, a wide interval)."""
    samples: tuple[float, ...]
    capped: bool = False
    min_samples: int = MIN_SAMPLES
    rounds: tuple[float, ...] = ()   # per-round medians, when the samples came in interleaved rounds

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
    def sample_ci(self) -> tuple[float, float]:
        """95% interval of the median of the pooled samples (order statistics); (min, max) when too
        few samples for 95%."""
        s = sorted(self.samples)
        ranks = ci_ranks(len(s))
        lo, hi = (s[0], s[-1]) if ranks is None else (s[ranks[0]], s[ranks[1]])
        return float(lo), float(hi)

    @property
    def ci(self) -> tuple[float, float]:
        """`sample_ci`, widened with rounds to hold every round's median: the spread between rounds is
        variation the pooled samples' interval alone would not show (the reader's interval)."""
        lo, hi = self.sample_ci
        if self.rounds:
            lo, hi = min(lo, min(self.rounds)), max(hi, max(self.rounds))
        return float(lo), float(hi)

    @property
    def rounds_json(self) -> Optional[str]:
        return values_json(self.rounds) if self.rounds else None

    @property
    def noise(self) -> float:
        """The interval's half-width relative to the median (what timing.max_noise bounds)."""
        lo, hi = self.ci
        med = self.median
        return (hi - lo) / 2 / med if med > 0 else float("inf")

    @property
    def unstable(self) -> list[str]:
        """Why the median cannot be trusted (empty: it can): too few samples (`too_few`), or samples
        that spread (`unsteady`). Reaching the cap is not a reason by itself: a capped timing with
        enough samples and a tight interval is a good number."""
        return self.too_few + self.unsteady

    @property
    def too_few(self) -> list[str]:
        """Fewer samples than min_samples, or than a 95% interval needs."""
        n = len(self.samples)
        return [f"only {n} samples"] if n < self.min_samples or ci_ranks(n) is None else []

    @property
    def unsteady(self) -> list[str]:
        """Samples that spread: the median's 95% interval of the pooled samples wider than
        +-MAX_CI_HALF_WIDTH (judged only with enough samples for one); pyperf's checks on the block
        medians (`pyperf_values`: drift, a shift half-way) and, with rounds from several worker
        processes, on one value per process, as pyperf judges the values of its worker processes.
        (The `ci` columns hold every process's median as well, for the reader; a range of three
        medians is no 95% interval, so the judgement reads the spread between processes with
        pyperf's rule instead.)"""
        if not self.samples:
            return []
        why = []
        med = self.median
        if not self.too_few and med > 0:  # (too_few: no 95% interval exists)
            lo, hi = self.sample_ci
            half = (hi - lo) / 2 / med
            if half > MAX_CI_HALF_WIDTH:
                why.append(f"median's 95% interval +-{half:.0%}")
        why += pyperf_rules(pyperf_values(self.samples))
        why += [f"between rounds: {w}" for w in pyperf_rules(list(self.rounds))] if len(self.rounds) > 1 else []
        return why

    @property
    def samples_json(self) -> str:
        return values_json(self.samples)


def pyperf_rules(values) -> list[str]:
    """pyperf's instability checks on values meant to agree: standard deviation >= 10% of the mean,
    minimum or maximum >= 50% away from it."""
    if len(values) < 2:
        return []
    mean, std = statistics.fmean(values), statistics.stdev(values)
    if mean <= 0:
        return []
    why = [f"std {std / mean:.0%} of mean"] if std >= MAX_STD_OF_MEAN * mean else []
    if max(values) - mean >= MAX_FROM_MEAN * mean:
        why.append(f"max {(max(values) - mean) / mean:.0%} above mean")
    if mean - min(values) >= MAX_FROM_MEAN * mean:
        why.append(f"min {(mean - min(values)) / mean:.0%} below mean")
    return why


def step_ratios(mine, theirs) -> list[float]:
    """Per step of a paired timing (timing.sample_pairs), the implementation's per-call time over the
    vendor's block right after it: a series from which the machine's speed, which moves both sides
    of a step alike, has cancelled."""
    return [a / b for a, b in zip(mine, theirs) if b > 0]


def untrusted(timing: TimingResult, paired: Optional[TimingResult]) -> list[str]:
    """Why a timing (warm or cold) cannot be trusted: empty when either of its two views is steady.
    The samples themselves, or, where the vendor was timed step by step beside it (`paired`: the
    step ratios, with each process's median ratio as its rounds), the ratios. A host whose speed flips 1.6x
    every 0.2-1 s (three 2-core VMs here) moves every absolute time by far more than 5%, which the
    machine's warning (`speed_spread`) says once per job, while the ratio to the vendor holds within a
    few percent; and a Python-bound implementation (`loop`) can hold its own time while the
    compute-bound vendor beside it flips, so its ratio moves and its time does not. Either steady
    view is a number to trust (the time, or the comparison); a row's own instability (a call that
    sleeps at random, a cache that fills up) moves both. Too few samples is a reason either way."""
    if timing.too_few:
        return timing.too_few
    own = timing.unsteady
    if not own or paired is None or not paired.samples:
        return own
    theirs = paired.unsteady
    return [] if not theirs else own + [f"vs vendor: {w}" for w in theirs]


def vendor_ratios(rounds, vendor) -> list[float]:
    """Per round, the implementation's median over the vendor's in the same round: what a change of
    the machine (frequency, allocator, neighbours) moves alike on both sides cancels."""
    return [a / b for a, b in zip(rounds, vendor) if b > 0]
