"""One case, its passes: check then time the forward, then check then time the backward (from the
checked forward's saved graph). Each pass has its own `budget_s`, so a slow backward still leaves a
forward row. Whatever an implementation raises becomes a status here, in one table (`STATUS_OF`)."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from implementations import Unsupported

from harness.config import Config, Shape, Timing
from harness.table.schema import Status

from . import memory
from .cases import Case, make_case
from .check import NotATensor, RepeatedChecks, Verdict, call_labels, reference
from .integrity import InputGuard
from .concurrency import DeviceClaim
from .timing import CaseTimeout, TimingResult, deadline, time_call


@dataclass(frozen=True)
class CaseSettings:
    """What measuring one case needs from the job's config, unpacked once per job."""
    dtype: torch.dtype
    passes: tuple[str, ...]
    timing: Timing
    threads: int
    budget_s: float
    seed: int
    check_calls: int = 3  # checked calls per pass (harness.measure.check.call_labels)

    @classmethod
    def from_config(cls, cfg: Config, threads: int) -> "CaseSettings":
        return cls(cfg.dtype.torch, tuple(p.name for p in cfg.passes), cfg.timing, threads, cfg.budget_s, cfg.seed,
                   cfg.check.calls)


@dataclass
class PassResult:
    """What is known about one pass of one case so far."""
    status: Optional[Status] = None
    message: str = ""
    verdict: Optional[Verdict] = None
    peak_mem: Optional[int] = None
    timing: Optional[TimingResult] = None
    concurrent: bool = False   # another job used the device while this pass was timed
    done: bool = False

    def fail(self, status: Status, message: str) -> None:
        """An exception ended the case before this pass finished: keep an 'incorrect' verdict (the
        more important news), otherwise take the exception's status."""
        if self.status == Status.incorrect:
            self.message = f"{self.message}; then {message}"
        else:
            self.status, self.message = status, message
        self.done = True


def error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= 500 else text[:497] + "..."


@contextlib.contextmanager
def torch_settings(cudnn_benchmark: bool, allow_tf32: bool, threads: int):
    """cuDNN autotuning, TF32 and thread count for the job, restored afterwards."""
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
             torch.backends.cuda.matmul.allow_tf32, torch.get_num_threads())
    torch.backends.cudnn.benchmark = cudnn_benchmark
    torch.backends.cudnn.allow_tf32 = allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
         torch.backends.cuda.matmul.allow_tf32) = saved[:3]
        torch.set_num_threads(saved[3])


def timed(call: Callable, settings: CaseSettings, device: torch.device,
          claim: Optional[DeviceClaim]) -> tuple[TimingResult, bool]:
    """(timing, concurrent): concurrent when another job used the device before or during the timing."""
    t0 = time.time()
    before = claim is not None and claim.busy()
    timing = time_call(call, settings.timing, device, settings.threads)
    return timing, before or (claim is not None and claim.busy(since=t0))


def _judged(r: PassResult, checks: RepeatedChecks) -> None:
    """The pass's verdict so far (the worst checked call decides), so a later timeout keeps it."""
    r.verdict = checks.verdict()
    r.status = Status.ok if r.verdict.correct else Status.incorrect
    r.message = r.verdict.message


def _checked_calls(call: Callable, to_named: Callable, checks: RepeatedChecks, labels: list[str]) -> None:
    for label in labels:
        checks.check(label, to_named(call()))


def _check_after_timing(call: Callable, to_named: Callable, checks: RepeatedChecks, label: Optional[str]) -> None:
    """The call after the timed runs catches state built up while timing (caches, counters, buffers)."""
    if label:
        checks.check_untouched_since("during the timed runs")
        checks.check(label, to_named(call()))


@dataclass
class Graph:
    """The checked forward call: its leaves and output, which the backward pass differentiates."""
    case: Case
    leaves: list
    out: object
    refs: dict


def forward_pass(fn: Callable, case: Case, settings: CaseSettings, device: torch.device, r: PassResult,
                 claim: Optional[DeviceClaim], time_it: bool) -> Graph:
    """Check the forward output (the check doubles as the memory measurement), then time it."""
    ref_out, ref_grads = reference(case)
    want_grad = "backward" in settings.passes
    leaves = [t.detach().requires_grad_(want_grad) for t in (case.x, case.weight, case.bias) if t is not None]
    x, w, b = leaves[0], leaves[1], (leaves[2] if case.bias is not None else None)

    def forward():
        return fn(x, w, b, **case.kwargs)

    def named(out):
        return {"output": out}

    checks = RepeatedChecks(named(ref_out), settings.dtype, device, InputGuard(x=x, weight=w, bias=b))
    before, after = call_labels(settings.check_calls)
    out, r.peak_mem = memory.measure(forward, device)
    checks.check(before[0], named(out))
    if time_it:
        _checked_calls(forward, named, checks, before[1:])
        _judged(r, checks)
        r.timing, r.concurrent = timed(forward, settings, device, claim)
        _check_after_timing(forward, named, checks, after)
        r.done = True
    _judged(r, checks)
    return Graph(case, leaves, out, ref_grads)


def backward_pass(g: Graph, settings: CaseSettings, device: torch.device, r: PassResult,
                  claim: Optional[DeviceClaim]) -> None:
    """Check the input, weight and bias gradients of the checked forward's graph, then time them."""
    if not (isinstance(g.out, torch.Tensor) and g.out.requires_grad):
        raise RuntimeError("the output does not require grad: backward cannot be computed "
                           "(is it built outside autograd, or detached?)")

    def backward():
        return torch.autograd.grad(g.out, g.leaves, g.case.grad_out, retain_graph=True, allow_unused=True)

    def named(grads):
        return dict(zip(("input", "weight", "bias"), grads))

    x, w = g.leaves[0], g.leaves[1]
    b = g.leaves[2] if len(g.leaves) > 2 else None
    checks = RepeatedChecks(g.refs, settings.dtype, device, InputGuard(x=x, weight=w, bias=b, grad_out=g.case.grad_out))
    before, after = call_labels(settings.check_calls)
    grads, r.peak_mem = memory.measure(backward, device)
    checks.check(before[0], named(grads))
    _checked_calls(backward, named, checks, before[1:])
    _judged(r, checks)
    r.timing, r.concurrent = timed(backward, settings, device, claim)
    _check_after_timing(backward, named, checks, after)
    _judged(r, checks)
    r.done = True


# exception type -> (status, whether the pass it interrupted is to blame, message from the exception)
STATUS_OF: tuple[tuple[type, Status, bool, Callable[[BaseException], str]], ...] = (
    (CaseTimeout, Status.timeout, True, str),
    (Unsupported, Status.unsupported, False, error_text),
    (NotATensor, Status.error, True, str),
    (Exception, Status.error, True, error_text),  # anything an implementation raises is data, not a crash
)


def _fail_rest(res: dict[str, PassResult], current: str, exc: BaseException) -> None:
    """Mark every unfinished pass; passes after the failing one say where it happened."""
    status, blame_current, text = next((s, b, t(exc)) for kind, s, b, t in STATUS_OF if isinstance(exc, kind))
    for name, r in res.items():
        if r.done:
            continue
        if name == current or not blame_current:
            r.fail(status, text)
        else:
            r.fail(status, f"{current} pass failed first: {text}")


def run_case(fn: Callable, s: Shape, settings: CaseSettings, device: torch.device,
             claim: Optional[DeviceClaim] = None) -> dict[str, PassResult]:
    """Every pass of one case, each under its own budget; failures become statuses."""
    res = {p: PassResult() for p in settings.passes}
    fwd = res.get("forward") or PassResult()
    current = "forward"
    try:
        with deadline(settings.budget_s):
            case = make_case(s, device, settings.dtype, settings.seed)
            graph = forward_pass(fn, case, settings, device, fwd, claim, time_it="forward" in res)
        if "backward" in res:
            current = "backward"
            with deadline(settings.budget_s):
                backward_pass(graph, settings, device, res["backward"], claim)
    except (CaseTimeout, Exception) as exc:
        _fail_rest(res, current, exc)
    return res
