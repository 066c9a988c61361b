"""The test `compare` makes on each row: a moderated t-test on the logs of per-process values
(limma's empirical Bayes, Smyth 2004), because a sweep holds hundreds of rows with three values a side.

Three values a side give a variance with 4 degrees of freedom: a row whose three processes happen to
agree looks certain (A/A false alarms), and a real 1.1x change rarely reaches significance (no
power). But the rows of one sweep share a machine, so their variances are alike: each row's variance
is shrunk toward a prior estimated from all rows judged on the same basis (its scale s0^2 and weight
d0 from the spread of the log variances, limma's method of moments), and its t statistic gets
d0 + its own degrees of freedom. A row with a variance far from the others' still counts its own:
d0 is small when the rows' variances disagree, infinite when they agree as well as chance allows."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy.special import digamma, polygamma
from scipy.stats import norm, t as student_t

MIN_ROWS = 10  # fewer rows than this with a variance: no prior, each row's own pooled t-test


@dataclass(frozen=True)
class RowStats:
    """One row's two sides, on the log scale."""
    diff: float   # mean log NEW - mean log OLD
    s2: float     # pooled variance of the logs within the sides
    df: int       # its degrees of freedom: n_old + n_new - 2
    scale: float  # sqrt(1/n_old + 1/n_new)


def row_stats(old: Optional[np.ndarray], new: Optional[np.ndarray]) -> Optional[RowStats]:
    """None when a side has fewer than two positive values (nothing to estimate a variance from)."""
    if old is None or new is None or len(old) < 2 or len(new) < 2 or (old <= 0).any() or (new <= 0).any():
        return None
    a, b = np.log(old), np.log(new)
    df = len(a) + len(b) - 2
    s2 = (((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum()) / df
    return RowStats(float(b.mean() - a.mean()), float(s2), df, math.sqrt(1 / len(a) + 1 / len(b)))


def trigamma_inverse(x: float) -> float:
    """y with trigamma(y) = x (limma's Newton iteration)."""
    if x > 1e7:
        return 1 / math.sqrt(x)
    if x < 1e-6:
        return 1 / x
    y = 0.5 + 1 / x
    for _ in range(50):
        tri = float(polygamma(1, y))
        step = tri * (1 - tri / x) / float(polygamma(2, y))
        y += step
        if -step / y < 1e-8:
            break
    return y


def prior(stats: Sequence[RowStats]) -> tuple[float, float]:
    """(s0^2, d0) from the rows' variances (limma's fitFDist by moments); d0 = inf when the log
    variances spread no more than chance; (nan, 0) with fewer than MIN_ROWS usable rows."""
    usable = [s for s in stats if s.s2 > 0]
    if len(usable) < MIN_ROWS:
        return math.nan, 0.0
    d = np.array([s.df for s in usable], dtype=float)
    z = np.log([s.s2 for s in usable])
    e = z - digamma(d / 2) + np.log(d / 2)
    mean = float(e.mean())
    spread = float(((e - mean) ** 2).sum() / (len(e) - 1) - polygamma(1, d / 2).mean())
    if spread <= 0:
        return math.exp(mean), math.inf
    d0 = 2 * trigamma_inverse(spread)
    return math.exp(mean + digamma(d0 / 2) - math.log(d0 / 2)), d0


def p_value(s: RowStats, s0_2: float, d0: float) -> float:
    """Two-sided p-value of the row's log difference, its variance shrunk toward the prior (d0 = 0:
    the row's own variance only, an ordinary pooled t-test)."""
    if d0 == math.inf:
        s2, df = s0_2, math.inf
    elif d0 > 0:
        s2, df = (d0 * s0_2 + s.df * s.s2) / (d0 + s.df), d0 + s.df
    else:
        s2, df = s.s2, s.df
    if s2 <= 0:
        return 1.0 if s.diff == 0 else 0.0
    t = s.diff / (math.sqrt(s2) * s.scale)
    return float(2 * (norm.sf(abs(t)) if df == math.inf else student_t.sf(abs(t), df)))
