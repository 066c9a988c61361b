"""Does the harness time like independent clocks? (`make bench-timer`)

For `cudnn` on a few shapes, interleaved round by round in this one process (so drifting machine load
hits every side alike; each difference is the median of the per-round ratios), the medians of:

  1. the harness's own per-case path (`run_case`: check, warm-up, warm and cold timing);
  2. a bare `torch.utils.benchmark.Timer` (warm only; tolerance 10%): the median of `timeit(number)`
     blocks of the harness's length (one call, or 0.1 ms for shorter calls). (Its `blocked_autorange`
     averages blocks of 10 ms and more, and on a busy machine nearly every such block holds a
     preemption: its median then reads up to 2x slower, a difference of method, not of clocks);
  3. an independent clock written here, sharing no code with the harness: a plain
     `time.perf_counter_ns` loop around the same calls on the CPU, CUDA events on a GPU (tolerance
     5%, warm and cold). Its cold calls find their data out of cache by another method than the
     harness's: on the CPU each call runs on the next of many copies of the operands, rotating
     through more than twice the last-level cache (AMD Composable Kernel's RotatingMemWrapper), and
     the last outputs are kept alive as long, so each new output reuses memory untouched for a whole
     rotation; on a GPU the L2-sized buffer is rewritten before each call. Agreement says the harness's
     eviction of the case's own lines is as cold as flushing everything.

Both run after `steady_heap()` (harness.measure.allocator), as the harness's jobs do; `res_1x1_wide`
(a 25 MiB output) is the shape whose time depended on the allocator's history before that.

Everything runs under the harness's own job settings (`torch_settings`: TF32 off, the thread count,
cuDNN autotuning), so cuDNN is checked at full float32 precision on Ampere and newer GPUs too.
Exit status 1 when any comparison is outside its tolerance."""
from __future__ import annotations

import argparse
import collections
import math
import statistics
import sys
import time

import torch
from torch.utils.benchmark import Timer

import implementations
from harness.config import Cache, Shape, Timing
from harness.measure.cases import make_case
from harness.measure.allocator import steady_heap
from harness.measure.flush import FACTOR, cache_bytes
from harness.measure.passes import CaseSettings, run_case, torch_settings
from harness.measure.timing import BLOCK_S

SHAPES = [
    Shape(layer="res_3x3", n=8, c_in=64, h=28, w=28, c_out=64, kernel=3, padding=1),
    Shape(layer="res_1x1", n=8, c_in=256, h=14, w=14, c_out=64, kernel=1),
    Shape(layer="small", n=2, c_in=16, h=32, w=32, c_out=16, kernel=3, padding=1),
    Shape(layer="res_1x1_wide", n=8, c_in=64, h=56, w=56, c_out=256, kernel=1),
]
ROTATE_FACTOR = 2    # the copies of a cold rotation span this many times the last-level cache
MAX_COPIES = 4096


def independent(call, device: torch.device, cold: bool, min_run_time: float, operands=None) -> float:
    """Median seconds per call from a clock of its own: perf_counter_ns (CPU) or CUDA events (GPU);
    one call per sample, at least 10 samples and min_run_time seconds. Cold on the CPU: `call(*copy)`
    on rotating copies of `operands`; cold on CUDA: the L2-sized buffer rewritten before each call."""
    llc = cache_bytes(device)
    cuda = device.type == "cuda"
    flush_buf = torch.zeros(FACTOR * llc // 4, dtype=torch.int32, device=device) if cold and cuda else None
    copies = _rotation(call, operands, llc) if cold and not cuda else None
    outputs: collections.deque = collections.deque(maxlen=len(copies) if copies else 1)
    times: list[float] = []
    start_wall = time.perf_counter()
    i = 0
    while len(times) < 10 or time.perf_counter() - start_wall < min_run_time:
        args = copies[i % len(copies)] if copies else ()
        i += 1
        if flush_buf is not None:
            flush_buf.add_(1)
        if cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            call(*args)
            b.record()
            torch.cuda.synchronize(device)
            times.append(a.elapsed_time(b) / 1e3)
        else:
            t0 = time.perf_counter_ns()
            out = call(*args)
            times.append((time.perf_counter_ns() - t0) / 1e9)
            if copies:
                outputs.append(out)  # the oldest output is freed only a whole rotation later
            del out
    return statistics.median(times)


def _rotation(call, operands, llc: int) -> list[tuple]:
    """Copies of the operands whose bytes, with an output each, span ROTATE_FACTOR x the LLC."""
    out = call(*operands)
    per_copy = sum(t.numel() * t.element_size() for t in (*operands, out) if t is not None)
    n = min(MAX_COPIES, max(2, math.ceil(ROTATE_FACTOR * llc / per_copy)))
    return [tuple(t.clone() if t is not None else None for t in operands) for _ in range(n)]


def timer_blocks(timer: Timer, min_run_time: float) -> float:
    """Median per-call time of torch.utils.benchmark's `timeit` over blocks of the harness's length
    (BLOCK_S; at least 10 blocks)."""
    once = timer.timeit(1).median
    number = max(1, math.ceil(BLOCK_S / max(once, 1e-9)))
    medians, start = [], time.perf_counter()
    while len(medians) < 10 or time.perf_counter() - start < min_run_time:
        medians.append(timer.timeit(number).median)
    return statistics.median(medians)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.timer_agreement", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15,
                    help="interleaved rounds; many short ones keep each pair close in time (a host whose speed flips)")
    ap.add_argument("--min-run-time", type=float, default=0.05, help="seconds per measurement (every side)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads, as conf/config.yaml's `threads` (0: torch's default)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tolerance", type=float, default=0.10, help="against torch.utils.benchmark.Timer")
    ap.add_argument("--clock-tolerance", type=float, default=0.05, help="against the independent clock")
    args = ap.parse_args(argv)

    threads = args.threads or torch.get_num_threads()
    device = torch.device(args.device)
    steady_heap()
    with torch_settings(cudnn_benchmark=True, allow_tf32=False, threads=threads):
        if device.type == "cuda":
            with torch.cuda.device(device):
                return _compare(args, device, threads)
        return _compare(args, device, threads)


def _compare(args, device: torch.device, threads: int) -> int:
    settings = CaseSettings(torch.float32, ("forward",), Timing(min_run_time=args.min_run_time, warmup=1, processes=1,
                            cache=Cache.both, max_run_time=max(2 * args.min_run_time, 0.5)),
                            threads, budget_s=60.0, seed=0)
    fn = implementations.get("cudnn")
    ok = True
    print(f"cudnn forward on {device}, {threads} threads, {args.rounds} interleaved rounds; times: median of "
          f"per-round medians, diff: median of per-round ratios")
    print(f"  {'shape':8} {'':4} {'harness':>10} {'Timer':>10} {'diff':>7} {'own clock':>10} {'diff':>7}")
    for shape in SHAPES:
        case = make_case(shape, device, torch.float32, seed=0)
        x, w, b = (t.detach() for t in (case.x, case.weight, case.bias))

        def call(x=x, w=w, b=b):
            return fn(x, w, b, **case.kwargs)

        bare = Timer("call()", globals=dict(call=call), num_threads=threads)
        timer_blocks(bare, args.min_run_time)  # warm-up, as the harness does
        got = {k: [] for k in ("warm", "cold", "timer", "own_warm", "own_cold")}
        for _ in range(args.rounds):
            res = run_case(fn, shape, settings, device)["forward"]
            if res.status != "ok":
                print(f"harness row is {res.status}: {res.message}")
                return 1
            got["warm"].append(res.timing.median)
            got["cold"].append(res.cold.median)
            got["own_cold"].append(independent(call, device, True, args.min_run_time, (x, w, b)))  # next to the harness's cold
            got["own_warm"].append(independent(call, device, False, args.min_run_time))
            got["timer"].append(timer_blocks(bare, args.min_run_time))
        m = {k: statistics.median(v) for k, v in got.items()}

        def diff(a: str, b: str) -> float:
            """Median over rounds of a/b - 1: each round's pair shares the machine's load of the moment."""
            return statistics.median(x / y for x, y in zip(got[a], got[b])) - 1

        for kind in ("warm", "cold"):
            own = m[f"own_{kind}"]
            d_clock = diff(kind, f"own_{kind}")
            ok &= abs(d_clock) <= args.clock_tolerance
            timer = f"{m['timer'] * 1e3:10.4f} {diff(kind, 'timer'):+7.1%}" if kind == "warm" else " " * 18
            if kind == "warm":
                ok &= abs(diff(kind, "timer")) <= args.tolerance
            print(f"  {shape.layer:8} {kind:4} {m[kind] * 1e3:10.4f} {timer} {own * 1e3:10.4f} {d_clock:+7.1%}")
    print(f"  (ms; tolerances: Timer {args.tolerance:.0%} (warm), own clock {args.clock_tolerance:.0%}) "
          f"-> {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
