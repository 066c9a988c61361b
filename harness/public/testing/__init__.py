"""`convbench.testing`: convbench's conformance suite, for any conv2d implementation, in your own CI.

    from convbench.testing import check_conv2d, assert_conv2d_conforms, parametrize_with_checks

    result = check_conv2d(my_conv)              # a ConformanceResult: one CheckResult per check
    print(result.summary())                     # counts, failures with reproductions, skip reasons
    assert_conv2d_conforms(my_conv)             # raises ConformanceError with that summary

    @parametrize_with_checks([my_conv])         # one pytest test per implementation x check x case
    def test_conforms(check):
        check()

Every check convbench runs on its built-ins (catalog.py): forward and every gradient against float64
F.conv2d over PyTorch's conv2d samples and convbench's cases, memory layouts, call forms, autograd modes,
input integrity, aliasing, repeated calls, determinism, batching, gradcheck, a seeded fuzz, and PyTorch's
OpInfo sample, reference and error inputs. `pytest --pyargs convbench.conformance --convbench-impl
pkg.mod:fn` runs it with no test file (convbench.conformance)."""
from __future__ import annotations

import time
from typing import Callable, Iterable, Optional

from .cases import Case
from .catalog import ALL_DTYPES, NAMES as CHECKS
from .result import STATUSES, CheckResult, ConformanceResult
from .runner import Check, CheckTimeout, Expected, plan, run_check

__all__ = ["check_conv2d", "assert_conv2d_conforms", "parametrize_with_checks", "run_check", "plan",
           "Case", "Check", "CheckResult", "ConformanceResult", "ConformanceError", "CheckTimeout", "CHECKS",
           "STATUSES"]


class ConformanceError(AssertionError):
    """An implementation failed conformance checks; the message is the run's summary."""

    def __init__(self, result: ConformanceResult):
        self.result = result
        super().__init__(result.summary())


def check_conv2d(fn, *, dtypes=None, devices=None, expected_failures: Expected = None,
                 max_examples: Optional[int] = None, full: bool = False, checks: Optional[Iterable[str]] = None,
                 timeout_s: Optional[float] = None) -> ConformanceResult:
    """Run every conformance check on `fn` (a function with F.conv2d's signature, a registered name or
    "pkg.mod:fn"). dtypes: default all four floating types (those `fn` declares unsupported are
    skipped); devices: default cpu, and cuda when present; expected_failures: check ids or substrings
    of them ({pattern: reason} or a list) whose failure is 'xfailed'; max_examples: fuzz examples per
    fuzz check (default 50, 500 with full=True); full: add realistic layer sizes and OpInfo's float64
    samples; checks: names from CHECKS to run only those; timeout_s: a time limit per check."""
    checks_ = plan(fn, dtypes=dtypes, devices=devices, expected_failures=expected_failures,
                   max_examples=max_examples, full=full, checks=checks, timeout_s=timeout_s)
    label = checks_[0].impl if checks_ else getattr(fn, "__name__", str(fn))
    return ConformanceResult(label, [c.result() for c in checks_])


def assert_conv2d_conforms(fn, **options) -> ConformanceResult:
    """`check_conv2d`, raising ConformanceError (an AssertionError) with its summary if any check failed."""
    result = check_conv2d(fn, **options)
    if not result.ok:
        raise ConformanceError(result)
    return result


def parametrize_with_checks(fns: Iterable, *, dtypes=None, devices=None, expected_failures: Expected = None,
                            max_examples: Optional[int] = None, full: bool = False,
                            checks: Optional[Iterable[str]] = None, timeout_s: Optional[float] = None,
                            select: Optional[Callable[[Check], bool]] = None):
    """A pytest decorator: `def test_x(check): check()` becomes one test per implementation, check and
    case, with stable ids (implementation-check-case-dtype-device) so `-k` and `--lf` work. Same options
    as `check_conv2d`; `select(check) -> bool` keeps only some."""
    import pytest
    items = [c for fn in fns for c in plan(fn, dtypes=dtypes, devices=devices, expected_failures=expected_failures,
                                           max_examples=max_examples, full=full, checks=checks,
                                           timeout_s=timeout_s, select=select)]
    return pytest.mark.parametrize("check", items, ids=[c.id for c in items])
