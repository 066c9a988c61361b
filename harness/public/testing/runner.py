"""Running the catalog on one implementation: each planned check becomes a `Check` (runnable alone, with a
stable id and a reproduction snippet), and its outcome a status. Declared unsupported (`unsupported=`)
and raised `Unsupported` are skipped with the reason; an expected failure that fails is xfailed."""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Union

import torch

import implementations

from . import catalog, opinfo
from .cases import Case
from .result import CheckResult

Expected = Union[Mapping[str, str], Iterable[str], None]


class CheckTimeout(BaseException):
    """A check ran past its time limit (a BaseException, so an implementation's `except Exception`
    around a hang cannot swallow it)."""


def impl_label(fn: Callable) -> str:
    """The registered name of `fn`, else its __name__: the implementation's part of every id."""
    for name, registered in list(implementations.registry._registry.items()):
        if registered is fn:
            return name
    return getattr(fn, "__name__", type(fn).__name__)


def resolve(fn) -> Callable:
    """A function, a registered name or "package.module:function"."""
    return implementations.get(fn) if isinstance(fn, str) else fn


def _import_line(fn: Callable, label: str) -> str:
    if implementations.registry._registry.get(label) is fn:
        module = getattr(fn, "__module__", "")
        pre = f"import {module}  # registers {label!r}\n" if module and not module.startswith("implementations") else ""
        return f"{pre}fn = convbench.get({label!r})"
    module, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if module and name and module != "__main__" and "<" not in name:
        return f"from {module} import {name.split('.')[0]}\nfn = {name}"
    return "fn = ...  # your implementation"


def _matches(expected: Expected, check_id: str) -> Optional[str]:
    """The reason `check_id` is expected to fail (an id or a substring of it), or None."""
    if not expected:
        return None
    items = expected.items() if isinstance(expected, Mapping) else ((e, "listed as an expected failure") for e in expected)
    for pattern, reason in items:
        if "[" in pattern and pattern.endswith("]"):  # a pytest node id: test_x[<check id>]
            pattern = pattern[pattern.index("[") + 1:-1]
        if pattern and (pattern == check_id or pattern in check_id):
            return f"{reason} ({pattern})" if pattern != reason else reason
    return None


@contextlib.contextmanager
def _device_settings(device: str):
    """True float32 on CUDA: TF32 is ~1e-3 accurate, which no float32 tolerance here allows."""
    if not device.startswith("cuda"):
        yield
        return
    prev = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev


@contextlib.contextmanager
def _time_limit(seconds: Optional[float]):
    """SIGALRM after `seconds` (main thread on POSIX only; elsewhere no limit)."""
    usable = seconds and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def _raise(signum, frame):
        raise CheckTimeout(f"ran past the time limit of {seconds:g} s")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _device_missing(device: str) -> Optional[str]:
    if device.startswith("cuda") and not torch.cuda.is_available():
        return "no CUDA device"
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        return "no MPS device"
    return None


@dataclass
class Check:
    """One (implementation, check, case, dtype, device): call it to run it alone."""
    fn: Callable
    impl: str
    spec: catalog.Spec
    planned: catalog.Planned
    device: str
    expected: Optional[str] = None   # the reason it is expected to fail, or None
    timeout_s: Optional[float] = None

    @property
    def id(self) -> str:
        return f"{self.impl}-{self.spec.name}-{self.planned.label}-{catalog.dtype_name(self.planned.dtype)}-{self.device}"

    def reproduce(self) -> str:
        """A snippet that reruns this check alone (it raises AssertionError with the details)."""
        case = self.planned.case
        if isinstance(case, Case):
            where = f"{case.code()}"
            head = "from convbench.testing import Case, run_check"
        else:
            where = repr(case)
            head = "from convbench.testing import run_check"
            if self.spec.name == "opinfo_samples" and isinstance(case, int):
                try:
                    head += f"\n# OpInfo sample {case}: {opinfo.describe(opinfo.samples(self.device, self.planned.dtype)[case])}"
                except Exception:  # noqa: BLE001 - a comment only
                    pass
        seed = f", seed={self.planned.seed}" if self.planned.seed else ""
        return (f"import convbench\n{head}\n{_import_line(self.fn, self.impl)}\n"
                f"run_check(fn, {self.spec.name!r}, {where}, {catalog.dtype_name(self.planned.dtype)!r}, "
                f"{self.device!r}{seed})")

    def result(self) -> CheckResult:
        """Run it: ok, failed, skipped (with the reason) or xfailed."""
        status, message = "ok", ""
        t0 = time.perf_counter()
        dtype = self.planned.dtype
        declared = None if dtype is None else implementations.unsupported_reason(self.fn, self.device, dtype)
        missing = _device_missing(self.device)
        if missing or declared:
            status, message = "skipped", missing or f"declared unsupported: {declared}"
        else:
            try:
                with _device_settings(self.device), _time_limit(self.timeout_s):
                    self.spec.run(self.fn, self.planned.case, dtype, self.device, self.planned.seed)
            except (implementations.Unsupported, catalog.Skip) as exc:
                status, message = "skipped", f"{'raised Unsupported: ' if not isinstance(exc, catalog.Skip) else ''}{exc}"
            except (Exception, CheckTimeout) as exc:  # noqa: BLE001 - any exception is a finding
                kind = "" if isinstance(exc, AssertionError) else f"{type(exc).__name__}: "
                status, message = "failed", f"{kind}{exc}".strip() or type(exc).__name__
        if self.expected and status == "failed":
            status, message = "xfailed", f"expected to fail: {self.expected}\n{message}"
        elif self.expected and status == "ok":
            message = f"passed, though expected to fail: {self.expected}"
        return CheckResult(self.impl, self.spec.name, self.planned.label, catalog.dtype_name(dtype), self.device,
                           status, message, self.reproduce(),
                           time.perf_counter() - t0)

    def __call__(self) -> None:
        """Run it under pytest: a skip, an xfail, or a failure showing the message and the reproduction."""
        import pytest
        r = self.result()
        if r.status == "skipped":
            pytest.skip(r.message)
        if r.status == "xfailed":
            pytest.xfail(r.message)
        if r.status == "failed":
            pytest.fail(f"{r.id}: {r.message}\n\nreproduce:\n{r.reproduce}", pytrace=False)

    def __repr__(self) -> str:
        return self.id


def default_devices() -> tuple[str, ...]:
    return ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)


def _dtype(d) -> torch.dtype:
    return getattr(torch, d) if isinstance(d, str) else d


def plan(fn, *, dtypes=None, devices=None, expected_failures: Expected = None, max_examples: Optional[int] = None,
         full: bool = False, checks: Optional[Iterable[str]] = None, seed: int = catalog.fuzz.DEFAULT_SEED,
         timeout_s: Optional[float] = None, select: Optional[Callable[[Check], bool]] = None) -> list[Check]:
    """Every check of the catalog (or of `checks`, by name) on `fn`, as runnable `Check`s."""
    fn = resolve(fn)
    label = impl_label(fn)
    opts = catalog.Options(tuple(_dtype(d) for d in (dtypes or catalog.ALL_DTYPES)), full, max_examples, seed)
    names = list(checks) if checks is not None else list(catalog.NAMES)
    unknown = [n for n in names if n not in catalog.BY_NAME]
    if unknown:
        raise ValueError(f"unknown checks {unknown}; the checks are: {', '.join(catalog.NAMES)}")
    out = []
    for device in devices or default_devices():
        for name in names:
            spec = catalog.BY_NAME[name]
            for planned in spec.cases(opts, device):
                c = Check(fn, label, spec, planned, device, timeout_s=timeout_s)
                c.expected = _matches(expected_failures, c.id)
                if select is None or select(c):
                    out.append(c)
    return out


def run_check(fn, check: str, case: Any, dtype, device: str = "cpu", seed: int = 0) -> None:
    """Rerun one check (a reproduction): `case` is a Case, a case's label, or an OpInfo index / table
    name; raises AssertionError (or the implementation's exception) when it fails."""
    fn = resolve(fn)
    spec = catalog.BY_NAME[check]
    dtype = None if dtype in (None, "any") else _dtype(dtype)
    if isinstance(case, str) and not isinstance(case, Case):
        opts = catalog.Options(full=True, dtypes=catalog.ALL_DTYPES if dtype is None else (dtype,))
        found = [p for p in spec.cases(opts, device) if p.label == case or p.case == case]
        if not found:
            raise ValueError(f"check {check!r} has no case {case!r}")
        case, seed = found[0].case, seed or found[0].seed
    with _device_settings(device):
        spec.run(fn, case, dtype, device, seed)
