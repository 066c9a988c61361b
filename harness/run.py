"""One job: one (impl, suite, device, dtype) over every shape of the suite, without Hydra.

Durability: each finished case's rows are appended to `rows.jsonl` (flushed and fsynced), so a job
killed half-way keeps what it measured. At the end the job's table is written to `job.parquet`
through a temporary file and `os.replace` (never half-written), then the `COMPLETE` marker
(`harness.jobfolder`; with `resume=true` finished cases are kept, not measured again).
Nothing an implementation does stops the job: every failure becomes a row with a status.

Honest timing: the job registers on its device (`harness.concurrency`) and each timed pass asks
whether another job used the device during it; such rows get `concurrent=True`."""
from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pandas as pd
import torch

import implementations
from implementations import Unsupported

from . import jobfolder, memory, schema
from .cases import Case, flops, label, make_case, scale_batch
from .check import NotATensor, Verdict, compare, reference, tolerance
from .concurrency import DeviceClaim
from .config import Config, Shape, import_plugins, to_config
from .devices import absent_reason, resolve
from .env import environment
from .jobfolder import COMPLETE, ENV_FILE, JOB_TABLE, ROWS_FILE, append_rows, write_atomic
from .peak import peak_gflops
from .timing import CaseTimeout, deadline, time_call


def _fmt_pair(p) -> str:
    return p if isinstance(p, str) else f"{p[0]},{p[1]}"


def shape_columns(s: Shape) -> dict:
    return dict(layer=s.layer, shape=label(s), n=s.n, c_in=s.c_in, h=s.h, w=s.w, c_out=s.c_out,
                kh=s.kernel[0], kw=s.kernel[1], stride=_fmt_pair(s.stride), padding=_fmt_pair(s.padding),
                dilation=_fmt_pair(s.dilation), groups=s.groups, bias=s.bias)


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= 500 else text[:497] + "..."


@dataclass
class PassResult:
    """What is known about one pass of one case so far."""
    status: Optional[str] = None
    message: str = ""
    verdict: Optional[Verdict] = None
    peak_mem: Optional[int] = None
    timing: object = None
    concurrent: bool = False   # another job used the device while this pass was timed
    done: bool = False

    def fail(self, status: str, message: str) -> None:
        """An exception ended the case before this pass finished: keep an 'incorrect' verdict (the
        more important news), otherwise take the exception's status."""
        if self.status == "incorrect":
            self.message = f"{self.message}; then {message}"
        else:
            self.status, self.message = status, message
        self.done = True


@contextlib.contextmanager
def _torch_settings(cfg: Config, threads: int):
    """cuDNN autotuning, TF32 and thread count for the job, restored afterwards."""
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
             torch.backends.cuda.matmul.allow_tf32, torch.get_num_threads())
    torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
    torch.backends.cudnn.allow_tf32 = cfg.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = cfg.allow_tf32
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
         torch.backends.cuda.matmul.allow_tf32) = saved[:3]
        torch.set_num_threads(saved[3])


def _timed(call: Callable, cfg: Config, device: torch.device, r: PassResult, claim: Optional[DeviceClaim]):
    """time_call, noting in `r` whether another job used the device before or during the timing."""
    t0 = time.time()
    before = claim is not None and claim.busy()
    timing = time_call(call, cfg.timing, device, cfg.threads)
    r.concurrent = before or (claim is not None and claim.busy(since=t0))
    return timing


def run_case(fn: Callable, s: Shape, cfg: Config, device: torch.device,
             claim: Optional[DeviceClaim] = None) -> dict[str, PassResult]:
    """Check then time the forward, then check then time the backward (from the checked forward's
    saved graph). Each pass has its own `budget_s`, so a slow backward still leaves a forward row."""
    dtype = cfg.dtype.torch
    passes = [p.name for p in cfg.passes]
    res = {p: PassResult() for p in passes}
    want_backward = "backward" in passes
    fwd = res.get("forward") or PassResult()
    current = "forward"
    try:
        with deadline(cfg.budget_s):
            case: Case = make_case(s, device, dtype, cfg.seed)
            ref_out, ref_grads = reference(case)
            leaves = [t.detach().requires_grad_(want_backward) for t in (case.x, case.weight, case.bias)
                      if t is not None]
            x, w, b = leaves[0], leaves[1], (leaves[2] if case.bias is not None else None)
            kwargs = case.kwargs

            def forward():
                return fn(x, w, b, **kwargs)

            out, fwd.peak_mem = memory.measure(forward, device)
            fwd.verdict = compare({"output": out}, {"output": ref_out}, dtype, device)
            fwd.status = "ok" if fwd.verdict.correct else "incorrect"
            fwd.message = fwd.verdict.message
            if "forward" in res:
                fwd.timing = _timed(forward, cfg, device, fwd, claim)
                fwd.done = True
        if want_backward:
            current = "backward"
            bwd = res["backward"]
            with deadline(cfg.budget_s):
                if not (isinstance(out, torch.Tensor) and out.requires_grad):
                    raise RuntimeError("the output does not require grad: backward cannot be computed "
                                       "(is it built outside autograd, or detached?)")
                grad_out = case.grad_out

                def backward():
                    return torch.autograd.grad(out, leaves, grad_out, retain_graph=True, allow_unused=True)

                grads, bwd.peak_mem = memory.measure(backward, device)
                bwd.verdict = compare(dict(zip(("input", "weight", "bias"), grads)), ref_grads, dtype, device)
                bwd.status = "ok" if bwd.verdict.correct else "incorrect"
                bwd.message = bwd.verdict.message
                bwd.timing = _timed(backward, cfg, device, bwd, claim)
                bwd.done = True
    except CaseTimeout as exc:
        _fail_rest(res, current, "timeout", str(exc))
    except Unsupported as exc:
        _fail_rest(res, current, "unsupported", _error_text(exc), blame_current=False)
    except NotATensor as exc:
        _fail_rest(res, current, "error", str(exc))
    except Exception as exc:  # anything an implementation raises is data, not a crash
        _fail_rest(res, current, "error", _error_text(exc))
    return res


def _fail_rest(res: dict[str, PassResult], current: str, status: str, message: str,
               blame_current: bool = True) -> None:
    """Mark every unfinished pass; passes after the failing one say where it happened."""
    for name, r in res.items():
        if r.done:
            continue
        if name == current or not blame_current:
            r.fail(status, message)
        else:
            r.fail(status, f"{current} pass failed first: {message}")


def _row(base: dict, s: Shape, pass_: str, r: PassResult, tol: float, peak: float) -> dict:
    row = dict(base, **shape_columns(s))
    row.update({"pass": pass_, "status": r.status, "message": r.message, "tol": tol, "peak_gflops": peak,
                "flops": flops(s, pass_)})
    if r.verdict is not None:
        row.update(correct=r.verdict.correct, rel_err=r.verdict.rel_err, max_abs_err=r.verdict.max_abs_err)
    row["peak_mem_bytes"] = r.peak_mem
    row["concurrent"] = r.concurrent
    t = r.timing
    if t is not None:
        row.update(time_median_s=t.median, time_iqr_s=t.iqr, n_runs=t.n_runs, samples=t.samples_json,
                   gflops=row["flops"] / t.median / 1e9)
    return row


def _job_level_problem(cfg: Config, device: torch.device) -> tuple[Optional[str], str, Optional[Callable]]:
    """(status, message, fn): a reason no case of this job can run, or (None, '', fn)."""
    reason = absent_reason(device)
    if reason:
        return "skipped", reason, None
    try:
        fn = implementations.get(cfg.impl)
    except Exception as exc:
        return "error", _error_text(exc), None
    reason = implementations.unsupported_reason(fn, device, cfg.dtype.torch)
    if reason:
        return "unsupported", reason, None
    return None, "", fn


def _progress(total: int, enabled: bool):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)
    from rich.console import Console
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True),
                    transient=True, disable=not enabled)


def run_job(cfg: Config, out_dir: os.PathLike, *, sweep: str = "", job: int = 0, progress: bool = True,
            sweep_dir: Optional[os.PathLike] = None) -> pd.DataFrame:
    """Run every case of `cfg.suite` for `cfg.impl` and write the job folder; return its rows.

    `sweep_dir` is where jobs that may share a device register (default: the job's own folder, i.e.
    nobody else). With `cfg.resume`, a job already complete with this config is returned as it is,
    and an unfinished one runs only the cases it lacks."""
    cfg = to_config(cfg)
    out = Path(out_dir)
    passes = [p.name for p in cfg.passes]
    table, kept = jobfolder.start(out, jobfolder.fingerprint(cfg), cfg.resume, passes)
    if table is not None:
        return table
    import_plugins(cfg.plugins)

    device = resolve(cfg.device)
    dtype = cfg.dtype.torch
    shapes = scale_batch(cfg.suite.shapes, cfg.batch)
    threads = cfg.threads or torch.get_num_threads()
    env = environment(device, threads)
    (out / ENV_FILE).write_text(json.dumps(env, indent=2))
    base = dict(env, sweep=sweep, job=job, impl=cfg.impl, suite=cfg.suite.name, device=str(device),
                dtype=cfg.dtype.name, concurrent=False)
    tol = tolerance(dtype)

    status, message, fn = _job_level_problem(cfg, device)
    measuring = status is None and any((s.layer, label(s)) not in kept for s in shapes)
    peak = peak_gflops(str(device), dtype, threads) if measuring else float("nan")
    # only a job that times something claims the device
    claim = DeviceClaim(sweep_dir or out, device, allow=cfg.allow_concurrent) if measuring else None
    all_rows: list[dict] = []
    with _torch_settings(cfg, threads), claim or contextlib.nullcontext(), _progress(len(shapes), progress) as bar:
        task = bar.add_task(f"job {job} {cfg.impl}", total=len(shapes), completed=len(kept))
        for s in shapes:
            if (s.layer, label(s)) in kept:
                all_rows.extend(kept[s.layer, label(s)])
                continue
            bar.update(task, description=f"job {job} {cfg.impl} {s.layer}")
            if status is not None:
                results = {p: PassResult(status=status, message=message) for p in passes}
            else:
                results = run_case(fn, s, cfg, device, claim)
            rows = [_row(base, s, p, r, tol, peak) for p, r in results.items()]
            append_rows(out / ROWS_FILE, rows)
            all_rows.extend(rows)
            bar.advance(task)
    df = schema.frame(all_rows)
    write_atomic(df, out / JOB_TABLE)
    (out / COMPLETE).write_text(json.dumps({"rows": len(df), "job": job, "kept": sum(map(len, kept.values()))}) + "\n")
    return df
