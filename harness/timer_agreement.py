"""Does the harness time like a bare torch.utils.benchmark.Timer? (`make bench-timer`)

For `cudnn` on one fixed shape, alternately: the harness's own per-case path (`run_case`: check, warm-up,
timing) and a bare `Timer(...).blocked_autorange()` of the same call, in this one process. Rounds are
interleaved so drifting machine load hits both alike; the medians of the per-round medians are
compared. Exit status 1 when they differ by more than the tolerance (10%)."""
from __future__ import annotations

import argparse
import statistics
import sys

import torch
from torch.utils.benchmark import Timer

import implementations
from harness.config import Shape, Timing
from harness.measure.cases import make_case
from harness.measure.passes import CaseSettings, run_case

SHAPE = Shape(layer="res_3x3", n=8, c_in=64, h=28, w=28, c_out=64, kernel=3, padding=1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.timer_agreement", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-run-time", type=float, default=0.3, help="seconds per measurement (both sides)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads, as conf/config.yaml's `threads` (0: torch's default)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tolerance", type=float, default=0.10)
    args = ap.parse_args(argv)

    threads = args.threads or torch.get_num_threads()
    device = torch.device(args.device)
    settings = CaseSettings(torch.float32, ("forward",), Timing(min_run_time=args.min_run_time, warmup=1),
                            threads, budget_s=60.0, seed=0)
    fn = implementations.get("cudnn")
    case = make_case(SHAPE, device, torch.float32, seed=0)
    x, w, b = (t.detach().requires_grad_() for t in (case.x, case.weight, case.bias))
    bare = Timer("fn(x, w, b, **kw)", globals=dict(fn=fn, x=x, w=w, b=b, kw=case.kwargs), num_threads=threads)
    bare.blocked_autorange(min_run_time=args.min_run_time)  # warm-up, as the harness does

    harness_medians, bare_medians = [], []
    for _ in range(args.rounds):
        res = run_case(fn, SHAPE, settings, device)["forward"]
        if res.status != "ok":
            print(f"harness row is {res.status}: {res.message}")
            return 1
        harness_medians.append(res.timing.median)
        bare_medians.append(bare.blocked_autorange(min_run_time=args.min_run_time).median)
    h, t = statistics.median(harness_medians), statistics.median(bare_medians)
    diff = (h - t) / t
    ok = abs(diff) <= args.tolerance
    print(f"cudnn forward, {SHAPE.n}x{SHAPE.c_in}x{SHAPE.h}x{SHAPE.w} -> {SHAPE.c_out}, 3x3, {device}, "
          f"{threads} threads, {args.rounds} interleaved rounds")
    print(f"  harness median {h * 1e3:.4f} ms   (per round: {', '.join(f'{m * 1e3:.3f}' for m in harness_medians)})")
    print(f"  Timer   median {t * 1e3:.4f} ms   (per round: {', '.join(f'{m * 1e3:.3f}' for m in bare_medians)})")
    print(f"  difference {diff:+.1%}  -> {'PASS' if ok else 'FAIL'} (tolerance {args.tolerance:.0%})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
