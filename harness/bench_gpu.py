"""`make bench-gpu`: the first run on a CUDA machine, every CUDA path in one command (issue #16).

Nobody on the project has a GPU, so the person who does should need one command and send back
one folder. The steps, each run even when an earlier one failed (a failing test must not hide
the sweep's numbers), the exit status non-zero if any failed:

1. test:  `make test`'s pytest command; with a GPU present the CUDA cases run instead of skipping.
2. sweep: the `resnet50` and `kernels` suites x float32/float16/bfloat16 on `device=cuda`, every
          built-in: ONE Hydra multirun into ONE sweep folder, so its one report covers it all.
3. timer: `make bench-timer` (the harness's timing against a bare Timer) on CUDA.
4. perf:  `make bench-perf ARGS="--device cuda"` (the built-ins' speed targets against cudnn).

The commands are those of the Makefile targets, run directly (a nested `make` would pass this
target's ARGS on to all of them). Everything lands in one folder (default
`results/<date>/<time>-gpu/`): `sweep/` (table + report), `<step>.log`, and `SUMMARY.md` (each
step's command, status, duration and last lines of output, and where the report is).

    python -m harness.bench_gpu [--out DIR] [--dry-run] [hydra overrides for the sweep ...]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

SUITES = ("resnet50", "kernels")
DTYPES = ("float32", "float16", "bfloat16")
TAIL_LINES = 40


@dataclass
class Step:
    name: str
    what: str
    argv: list[str]
    rc: int | None = None
    seconds: float = 0.0


def steps(out: Path, overrides: list[str] = (), python: str = sys.executable) -> list[Step]:
    """The four steps, in order; `overrides` are extra Hydra overrides for the sweep."""
    return [
        Step("test", "make test (CUDA cases included)", [python, "-m", "pytest", "-q", "-m", "not slow"]),
        Step("sweep", f"{'+'.join(SUITES)} x {'/'.join(DTYPES)} on cuda, every built-in, one sweep",
             [python, "-m", "harness", "-m", f"suite={','.join(SUITES)}", f"dtype={','.join(DTYPES)}",
              "device=cuda", f"hydra.sweep.dir={out / 'sweep'}", *overrides]),
        Step("timer", "make bench-timer (harness timing vs a bare Timer) on cuda",
             [python, "-m", "harness.timer_agreement", "--device", "cuda"]),
        Step("perf", 'make bench-perf ARGS="--device cuda"', [python, "-m", "harness.perf", "--device", "cuda"]),
    ]


def no_cuda_message() -> str | None:
    """Why this machine cannot run the target, or None when a CUDA device is present."""
    if torch.cuda.is_available():
        return None
    build = "is a CPU-only build" if torch.version.cuda is None else f"(CUDA {torch.version.cuda}) sees no GPU"
    return (f"make bench-gpu: no CUDA device. torch {torch.__version__} {build}.\n"
            "This target exercises every CUDA path and needs an NVIDIA GPU. On a GPU machine:\n"
            '  make clean && make setup TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"\n'
            "  make bench-gpu\n"
            "(make bench-gpu ARGS=--dry-run prints the steps without running them.)")


def run_step(step: Step, log: Path, cwd: Path) -> None:
    """Run one step, its output both on the console and in `log`; record its exit status."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    start = time.perf_counter()
    with open(log, "w") as f:
        f.write("$ " + shlex.join(step.argv) + "\n")
        try:
            proc = subprocess.Popen(step.argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, errors="replace")
        except OSError as exc:  # the step could not even start: a failure like any other
            f.write(f"could not start: {exc}\n")
            step.rc = 127
        else:
            for line in proc.stdout:
                sys.stdout.write(line)
                f.write(line)
            step.rc = proc.wait()
    step.seconds = time.perf_counter() - start


def _tail(log: Path, n: int = TAIL_LINES) -> str:
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return "\n".join(lines[-n:])


def summary(run: list[Step], out: Path, device: str) -> str:
    """SUMMARY.md: one page saying what ran, how it ended and where everything is."""
    sweep = out / "sweep"
    lines = [f"# bench-gpu run {out.name}", "", f"Device: {device}. torch {torch.__version__}, "
             f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version() if torch.cuda.is_available() else None}.",
             "", "| step | what | status | seconds | log |", "|---|---|---|---|---|"]
    for s in run:
        status = "not run" if s.rc is None else ("ok" if s.rc == 0 else f"FAILED (exit {s.rc})")
        lines.append(f"| {s.name} | {s.what} | {status} | {s.seconds:.0f} | {s.name}.log |")
    lines += ["", f"Sweep table: {sweep / 'results.parquet'} (and results.csv)",
              f"Sweep report: {sweep / 'report.html'} (and report.md)", ""]
    for s in run:
        lines += [f"## {s.name}: last lines of {s.name}.log", "", "$ " + shlex.join(s.argv), "```",
                  _tail(out / f"{s.name}.log"), "```", ""]
    return "\n".join(lines)


def run_all(run: list[Step], out: Path, cwd: Path, device: str) -> int:
    """Every step, whatever the earlier ones did; then SUMMARY.md. 0 only if all succeeded."""
    out.mkdir(parents=True, exist_ok=True)
    for s in run:
        print(f"\n=== bench-gpu: {s.name}: {s.what}\n$ {shlex.join(s.argv)}", flush=True)
        run_step(s, out / f"{s.name}.log", cwd)
        print(f"=== bench-gpu: {s.name}: exit {s.rc} after {s.seconds:.0f} s", flush=True)
    (out / "SUMMARY.md").write_text(summary(run, out, device))
    failed = [s.name for s in run if s.rc != 0]
    print("\n=== bench-gpu done: " + (f"FAILED: {', '.join(failed)}" if failed else "every step ok"))
    for s in run:
        print(f"  {s.name:6} {'ok' if s.rc == 0 else 'FAILED':7} {out / (s.name + '.log')}")
    print(f"  report  {out / 'sweep' / 'report.html'}\n  summary {out / 'SUMMARY.md'}\n"
          f"Send back the whole folder: {out}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.bench_gpu", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="output folder (default results/<date>/<time>-gpu)")
    ap.add_argument("--dry-run", action="store_true", help="print the steps and exit; needs no GPU")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for the sweep (e.g. budget_s=5)")
    args = ap.parse_args(argv)
    repo = Path(__file__).resolve().parents[1]
    now = dt.datetime.now()
    out = (args.out or repo / "results" / now.strftime("%Y-%m-%d") / (now.strftime("%H-%M-%S") + "-gpu")).resolve()
    run = steps(out, args.overrides)
    if args.dry_run:
        print(f"bench-gpu would write {out} and run, each whatever the others do:")
        for s in run:
            print(f"  {s.name:6} {s.what}\n         $ {shlex.join(s.argv)}")
        return 0
    reason = no_cuda_message()
    if reason:
        print(reason, file=sys.stderr)
        return 2
    device = f"{torch.cuda.get_device_name()} (cuda:{torch.cuda.current_device()})"
    return run_all(run, out, repo, device)


if __name__ == "__main__":
    sys.exit(main())
