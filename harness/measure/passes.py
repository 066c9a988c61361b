"""One case, its passes: the forward, then the backward (from the checked forward's saved graph).
Each pass has its own `budget_s`, so a slow backward still leaves a forward row. Whatever an
implementation raises becomes a status here, in one table (`STATUS_OF`).

Within a pass, calls come in this order, each step its own small function:
  1. the float64 reference, computed before the budget starts (`run_case`);
  2. `first_call`: the first call, in a fresh state (harness.measure.fresh), timed as `first_call_s`
     and checked;
  3. `measure_memory`: a second call, for peak memory after warm-up (a first call's one-off
     allocations, e.g. cuDNN autotuning workspaces, are not the steady state);
  4. `time_pass`: warm-up, then the warm and/or cold timings;
  5. (a call after the timed runs, checked: slot for the repeated-call checks)."""
from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

import torch

from implementations import Unsupported
from implementations.cudnn import conv2d_cudnn as VENDOR  # torch's own conv, bound before any plug-in

from harness.config import Cache, Config, Shape, Timing
from harness.table.schema import Status, clip

from . import fresh, memory
from .cases import Case, make_case
from .check import NotATensor, RepeatedChecks, Verdict, call_labels, reference
from .clocks import synchronize
from .flush import cold_prepare
from .integrity import InputGuard
from .concurrency import DeviceClaim
from .machine import GpuProbe, GpuReading
from .timing import COLD_WARMUP, Budget, CaseTimeout, TimingResult, deadline, time_cold, time_rounds, warm_up


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
    channels_last: bool = False  # the case's tensors in channels_last layout (bench-perf --channels-last)

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
    first_call_s: Optional[float] = None
    peak_mem: Optional[int] = None
    timing: Optional[TimingResult] = None       # warm (pooled over its rounds)
    vendor_rounds: tuple = ()                   # torch's own conv's warm median in each of those rounds
    paired: Optional[TimingResult] = None       # per step, the time over the vendor's beside it (noisy's)
    cold: Optional[TimingResult] = None
    cold_paired: Optional[TimingResult] = None  # per cold step, the time over the vendor's cold call beside it
    gpu: Optional[GpuReading] = None            # SM clock and throttling while timed (CUDA)
    notes: list = field(default_factory=list)   # why a timing is missing or short (-> noisy_reason)
    concurrent: bool = False   # another job used the device while this pass was timed
    plan: str = ""             # what the implementation says it ran (its `last_plan()` hook: winograd's plan)
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
    return clip(f"{type(exc).__name__}: {exc}".strip())


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


@dataclass
class PassContext:
    """What a pass runs in and what watches it: the device, the device claim (other jobs), the GPU
    probe (clock, throttling), and the pass's budget (`timing.Budget`: time left; None: unbounded)."""
    device: torch.device
    claim: Optional[DeviceClaim] = None
    probe: Optional[GpuProbe] = None
    budget: Optional[Budget] = None
    watch: Optional[Callable] = None  # watch(phase, seconds): tells a supervising process how long the
    phase: str = ""                   # phase may still take (harness.measure.supervise)

    def tell(self, seconds: Optional[float]) -> None:
        if self.watch is not None:
            self.watch(self.phase, seconds)

    def left(self, share: float, reserve_s: float = 0.0) -> Optional[float]:
        """`share` of the budget left once `reserve_s` (calls still to come) is set aside."""
        return None if self.budget is None else share * max(self.budget() - reserve_s, 0.0)


def first_call(call: Callable[[], Any], fn: Callable, device: torch.device) -> tuple[Any, float]:
    """(result, seconds) of the implementation's first call on the case, from a fresh state
    (harness.measure.fresh): host wall time to the device's completion, so CUDA autotuning
    (cudnn_benchmark=true), plan building and lazy tables are in it."""
    fresh.reset(fn, device)
    synchronize(device)
    t0 = time.perf_counter()
    result = call()
    synchronize(device)
    return result, time.perf_counter() - t0


PROFILER_SLOWDOWN = 20.0  # the CPU memory profiler slowed a many-op call ~12x here (loop's backward): room for more


def measure_memory(call: Callable[[], Any], where: PassContext, call_s: float) -> tuple[Any, int]:
    """(result, peak bytes) of a call after the first: steady-state memory, without first-call
    workspaces. On the CPU the profiler that records allocations slows many-op implementations
    several-fold (loop's backward: 4.9 s for a 0.42 s call); the budget waits up to PROFILER_SLOWDOWN
    x the first call's time for it and charges only `call_s` (the first call's time)."""
    if where.device.type != "cpu" or where.budget is None:
        return memory.measure(call, where.device)
    with where.budget.overhead(call_s, PROFILER_SLOWDOWN):
        where.tell(where.budget() + PROFILER_SLOWDOWN * call_s)
        result = memory.measure(call, where.device)
    where.tell(where.budget())
    return result


# Budget set aside per call still to come after the timings, in calls: x2 for the call and its check,
# x1.5 for a shared host that slows calls 1.5-1.8x for 50-300 ms just then (loop's 0.12 s backward ran
# past its 2 s budget in its checked call after, on an AMD EPYC VM, with x2 alone).
RESERVE_PER_CALL = 3.0


def time_pass(call: Callable[[], Any], settings: CaseSettings, where: PassContext, r: PassResult,
              calls_after: int = 0, operands: Iterable[torch.Tensor] = (), fn: Optional[Callable] = None,
              vendor: Optional[Callable[[], Any]] = None) -> None:
    """Warm-up, then the warm and/or cold timings of `settings.timing.cache`, each capped by
    max_run_time and by its share of the budget left once `calls_after` calls (the checked call after
    the timings) are set aside: timings shrink to fit the budget, the checks never do. The warm timing
    comes in `timing.repeats` rounds, each followed by `vendor` (the same pass with torch's own conv)
    when given and `timing.vs_vendor` is on. Cold samples evict `operands` and what the implementation
    `fn` keeps (harness.measure.flush.cold_prepare), each followed by a cold call of `vendor` when
    given. Sets r.timing, r.vendor_rounds, r.paired, r.cold, r.cold_paired, r.gpu, r.concurrent.
    When `fn` is torch's own conv, `vendor` is a second instance of it: the pair gives `noisy` a
    series the machine's speed cancels from, and no ratio to the vendor (1 by construction, and
    compare's 'reference moved' rule reads the vendor's own times)."""
    timing, device = settings.timing, where.device
    t0 = time.time()
    before = where.claim is not None and where.claim.busy()
    readings = [where.probe.read()] if where.probe else []
    warm_up_s = warm_up(call, timing, device)  # the last warm-up call's time (None without warm-up)
    call_s = warm_up_s or r.first_call_s or 0.0
    reserve_s = RESERVE_PER_CALL * calls_after * call_s
    if timing.cache in (Cache.warm, Cache.both):
        warm_share = 0.45 if timing.cache == Cache.both else 0.9  # of the budget left: cold gets the rest
        rounds = time_rounds(call, vendor if timing.vs_vendor else None, timing, device, settings.threads,
                             cap_s=where.left(warm_share, reserve_s), once=warm_up_s)
        r.timing, r.paired = rounds.timing, rounds.paired
        r.vendor_rounds = () if fn is VENDOR else rounds.vendor
    if timing.cache in (Cache.cold, Cache.both):
        cold_cap_s = where.left(0.9, reserve_s)
        one = r.timing.median if r.timing else call_s
        if cold_cap_s is not None and cold_cap_s < 2 * one:  # one cold sample would overrun the budget
            r.notes.append(f"cold: not timed, {cold_cap_s:.2g} s of budget left for a {one:.2g} s call")
        else:
            # the cold warm-up cycles take at most a quarter of what the cold timing may use
            cycles = COLD_WARMUP if cold_cap_s is None else min(COLD_WARMUP, int(0.25 * cold_cap_s / max(one, 1e-9)))
            cold = time_cold(call, timing, device, settings.threads, cap_s=cold_cap_s,
                             flush=cold_prepare(device, operands, fn), warmup=cycles,
                             vendor=vendor if timing.vs_vendor else None)
            r.cold, r.cold_paired = cold.timing, cold.paired
    if where.probe:
        readings.append(where.probe.read())
        r.gpu = GpuReading.worst(readings)
    r.concurrent = before or (where.claim is not None and where.claim.busy(since=t0))


def plan_of(fn: Callable) -> str:
    """What an implementation with a `last_plan()` hook says its latest call ran ('' without one, or
    if the hook fails: it is the implementation's code)."""
    hook = getattr(fn, "last_plan", None)
    try:
        return clip(hook(), 300) if callable(hook) else ""
    except Exception:
        return ""


def judge(r: PassResult, verdict: Verdict, limit: Optional[int] = None) -> None:
    """The pass's verdict so far, recorded at once, so a later timeout keeps it; its message cut to
    `limit` characters when given (one `check_tensors` over a network's parameters can name hundreds)."""
    r.verdict = verdict
    r.status = Status.ok if verdict.correct else Status.incorrect
    r.message = verdict.message if limit is None else clip(verdict.message, limit)


def _judged(r: PassResult, checks: RepeatedChecks) -> None:
    judge(r, checks.verdict())  # the worst checked call decides


def _checked_calls(call: Callable, to_named: Callable, checks: RepeatedChecks, labels: list[str]) -> None:
    for label in labels:
        checks.check(label, to_named(call()))


def _check_after_timing(call: Callable, to_named: Callable, checks: RepeatedChecks, label: Optional[str]) -> None:
    """The call after the timed runs catches state built up while timing (caches, counters, buffers)."""
    if label:
        checks.check_untouched_since("during the timed runs")
        checks.check(label, to_named(call()))


def _calls_of_a_pass(fn: Callable, call: Callable, named: Callable, checks: RepeatedChecks, settings: CaseSettings,
                     where: PassContext, r: PassResult, time_it: bool, vendor: Optional[Callable] = None) -> Any:
    """The calls of one pass, in order: the first (timed as first_call_s, checked), a second (peak
    memory, checked), more checked ones if check.calls asks, the warm/cold timings, and one checked
    call after them. Returns the first call's result (the forward's graph for the backward)."""
    before, after = call_labels(settings.check_calls)
    first, r.first_call_s = first_call(call, fn, where.device)
    checks.check(before[0], named(first))
    if time_it:
        second, r.peak_mem = measure_memory(call, where, r.first_call_s)
        if len(before) > 1:
            checks.check(before[1], named(second))
        _checked_calls(call, named, checks, before[2:])
        _judged(r, checks)
        time_pass(call, settings, where, r, calls_after=1 if after else 0, operands=checks.guard.live.values(), fn=fn,
                  vendor=vendor)
        _check_after_timing(call, named, checks, after)
        r.plan = plan_of(fn)
        r.done = True
    _judged(r, checks)
    return first


@dataclass
class Graph:
    """The checked forward call: its leaves and output, which the backward pass differentiates."""
    case: Case
    leaves: list
    out: object
    refs: dict


def forward_calls(fn: Callable, case: Case, want_grad: bool) -> tuple[list, Callable, Optional[Callable]]:
    """(leaves, forward, vendor_forward): the case's leaves (requiring grad for a backward) and the
    forward call of `fn` and of torch's own conv on them (a second instance when `fn` is torch's own
    conv: harness.measure.passes.time_pass)."""
    leaves = [t.detach().requires_grad_(want_grad) for t in (case.x, case.weight, case.bias) if t is not None]
    x, w, b = leaves[0], leaves[1], (leaves[2] if case.bias is not None else None)

    def forward():
        return fn(x, w, b, **case.kwargs)

    def vendor_forward():
        return VENDOR(x, w, b, **case.kwargs)

    return leaves, forward, vendor_forward


def backward_calls(fn: Callable, case: Case, leaves: list, out: Any) -> tuple[Callable, Optional[Callable]]:
    """(backward, vendor_backward): the gradients of the forward's `out` with respect to `leaves`,
    and the same through torch's own conv from a graph of its own on the same leaves (built on its
    first call, a warm-up call)."""
    if not (isinstance(out, torch.Tensor) and out.requires_grad):
        raise RuntimeError("the output does not require grad: backward cannot be computed "
                           "(is it built outside autograd, or detached?)")
    x, w = leaves[0], leaves[1]
    b = leaves[2] if len(leaves) > 2 else None
    vendor_graph: list = []

    def backward():
        return torch.autograd.grad(out, leaves, case.grad_out, retain_graph=True, allow_unused=True)

    def vendor_backward():
        if not vendor_graph:
            with torch.enable_grad():
                vendor_graph.append(VENDOR(x, w, b, **case.kwargs))
        return torch.autograd.grad(vendor_graph[0], leaves, case.grad_out, retain_graph=True, allow_unused=True)

    return backward, vendor_backward


def forward_pass(fn: Callable, case: Case, refs: tuple, settings: CaseSettings, where: PassContext, r: PassResult,
                 time_it: bool) -> Graph:
    """First call (timed, checked), second call (memory), then the timings of the forward."""
    ref_out, ref_grads = refs
    leaves, forward, vendor = forward_calls(fn, case, "backward" in settings.passes)
    x, w = leaves[0], leaves[1]
    b = leaves[2] if case.bias is not None else None

    def named(out):
        return {"output": out}

    checks = RepeatedChecks(named(ref_out), settings.dtype, where.device, InputGuard(x=x, weight=w, bias=b))
    out = _calls_of_a_pass(fn, forward, named, checks, settings, where, r, time_it, vendor)
    return Graph(case, leaves, out, ref_grads)


def backward_pass(fn: Callable, g: Graph, settings: CaseSettings, where: PassContext, r: PassResult) -> None:
    """First call (timed, checked), second call (memory), then the timings of the input, weight and
    bias gradients of the checked forward's graph."""
    backward, vendor = backward_calls(fn, g.case, g.leaves, g.out)

    def named(grads):
        return dict(zip(("input", "weight", "bias"), grads))

    x, w = g.leaves[0], g.leaves[1]
    b = g.leaves[2] if len(g.leaves) > 2 else None
    guard = InputGuard(x=x, weight=w, bias=b, grad_out=g.case.grad_out)
    _calls_of_a_pass(fn, backward, named, RepeatedChecks(g.refs, settings.dtype, where.device, guard),
                     settings, where, r, time_it=True, vendor=vendor)


# exception type -> (status, whether the pass it interrupted is to blame, message from the exception)
STATUS_OF: tuple[tuple[type, Status, bool, Callable[[BaseException], str]], ...] = (
    (CaseTimeout, Status.timeout, True, str),
    (Unsupported, Status.unsupported, False, error_text),
    (NotATensor, Status.error, True, str),
    (Exception, Status.error, True, error_text),  # anything an implementation raises is data, not a crash
)


def fail_rest(res: dict[str, PassResult], current: str, exc: BaseException) -> None:
    """Mark every unfinished pass with the status of what `current` raised (`STATUS_OF`); passes after
    the failing one say where it happened."""
    status, blame_current, text = next((s, b, t(exc)) for kind, s, b, t in STATUS_OF if isinstance(exc, kind))
    for name, r in res.items():
        if r.done:
            continue
        if name == current or not blame_current:
            r.fail(status, text)
        else:
            r.fail(status, f"{current} pass failed first: {text}")


def _unwatched(phase: str, seconds: Optional[float], done: Optional[dict] = None) -> None:
    pass


def run_case(fn: Callable, s: Shape, settings: CaseSettings, device: torch.device,
             claim: Optional[DeviceClaim] = None, probe: Optional[GpuProbe] = None,
             watch: Optional[Callable] = None) -> dict[str, PassResult]:
    """Every pass of one case, each under its own budget; failures become statuses. The inputs and
    the float64 reference are made before the budget starts: it pays for the implementation only.
    `watch(phase, seconds, done)` hears each phase start ('reference': no budget, then each pass with
    its budget; `done`: the passes already final), so a supervisor can tell a hang from work."""
    watch = watch or _unwatched
    res = {p: PassResult() for p in settings.passes}
    fwd = res.get("forward") or PassResult()
    current = "forward"
    try:
        watch("reference", None)
        case = make_case(s, device, settings.dtype, settings.seed, settings.channels_last)
        refs = reference(case)
        watch("forward", settings.budget_s)
        with deadline(settings.budget_s) as budget:
            graph = forward_pass(fn, case, refs, settings, PassContext(device, claim, probe, budget, watch, "forward"), fwd,
                                 time_it="forward" in res)
        if "backward" in res:
            current = "backward"
            watch("backward", settings.budget_s, {k: r for k, r in res.items() if r.done and k != "backward"})
            with deadline(settings.budget_s) as budget:
                backward_pass(fn, graph, settings, PassContext(device, claim, probe, budget, watch, "backward"),
                              res["backward"])
    except (CaseTimeout, Exception) as exc:
        fail_rest(res, current, exc)
    return res


def repeat_case(fn: Callable, s: Shape, settings: CaseSettings, device: torch.device, passes: Iterable[str],
                claim: Optional[DeviceClaim] = None, probe: Optional[GpuProbe] = None,
                watch: Optional[Callable] = None) -> dict[str, PassResult]:
    """The warm rounds of `passes` again, in another worker process than the case's first
    (harness.measure.job: `timing.processes`): the same inputs (the seed), warm-up, then the warm
    rounds beside the vendor. Nothing is checked, no memory nor cold timing: those were made once, by
    the first worker; what a repeat adds is a value from another process's allocator and page state.
    A pass that fails here says so in its status and message."""
    watch = watch or _unwatched
    want = [p for p in settings.passes if p in set(passes)]
    res = {p: PassResult() for p in want}
    warm = dataclasses.replace(settings, timing=dataclasses.replace(settings.timing, cache=Cache.warm))
    current = "forward"
    try:
        watch("reference", None)
        case = make_case(s, device, settings.dtype, settings.seed, settings.channels_last)
        watch("forward", settings.budget_s)
        with deadline(settings.budget_s) as budget:
            leaves, forward, vendor = forward_calls(fn, case, "backward" in res)
            out = forward()
            if "forward" in res:
                time_pass(forward, warm, PassContext(device, claim, probe, budget, watch, "forward"), res["forward"],
                          fn=fn, vendor=vendor)
                res["forward"].status, res["forward"].done = Status.ok, True
        if "backward" in res:
            current = "backward"
            watch("backward", settings.budget_s, {k: r for k, r in res.items() if r.done and k != "backward"})
            with deadline(settings.budget_s) as budget:
                backward, vendor = backward_calls(fn, case, leaves, out)
                time_pass(backward, warm, PassContext(device, claim, probe, budget, watch, "backward"),
                          res["backward"], fn=fn, vendor=vendor)
                res["backward"].status, res["backward"].done = Status.ok, True
    except (CaseTimeout, Exception) as exc:
        fail_rest(res, current, exc)
    return res
