"""One job: one (impl, suite, device, dtype) over every shape of the suite, without Hydra.

Durability: each finished case's rows are appended to `rows.jsonl` (flushed and fsynced), so a job
killed half-way keeps what it measured. At the end the job's table is written to `job.parquet`
through a temporary file and `os.replace` (never half-written), then the `COMPLETE` marker
(`harness.table.jobfolder`; with `resume=true` finished cases are kept, not measured again).
Nothing an implementation does stops the job: every failure becomes a row with a status, a crash or
a hang of the worker process that runs it included (`crashed`, harness.measure.supervise).

Honest timing: the job registers on its device (`harness.measure.concurrency`) and each timed pass asks
whether another job used the device during it; such rows get `concurrent=True`."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import statistics
import sys
from pathlib import Path
from typing import Optional

import pandas as pd
import psutil
import torch

from harness.config import Config, Shape, to_config
from harness.table import jobfolder, schema
from harness.table.jobfolder import COMPLETE, ENV_FILE, JOB_TABLE, ROWS_FILE, append_rows, write_atomic  # noqa: F401
from harness.table.row import Row
from harness.table.schema import Status

from .cases import flops, label, pair_str, scale_batch
from .check import tolerance
from .concurrency import DeviceClaim
from .devices import absent_reason, on_device, resolve
from .env import environment
from .machine import survey, warn
from .passes import CaseSettings, PassResult, torch_settings
from .peak import peak_gflops
from .repeats import pool, schedule
from .stats import untrusted, values_json, vendor_ratios
from .supervise import Supervisor
from .worker import InProcess, WorkerSpec

log = logging.getLogger(__name__)
WORKER_LOG = "worker.log"  # the job's workers' stderr


def shape_columns(s: Shape) -> dict:
    return dict(layer=s.layer, shape=label(s), n=s.n, c_in=s.c_in, h=s.h, w=s.w, c_out=s.c_out,
                kh=s.kernel[0], kw=s.kernel[1], stride=pair_str(s.stride), padding=pair_str(s.padding),
                dilation=pair_str(s.dilation), groups=s.groups, bias=s.bias, count=s.count)


def plan_for_pass(plan: str, pass_: str) -> str:
    """A 'forward: ...; grad_input: ...; grad_weight: ...' plan, cut to the parts of one pass."""
    parts = [p for p in plan.split("; ") if p]
    if any(":" in p for p in parts):
        parts = [p for p in parts if p.startswith("forward") == (pass_ == "forward")]
    return "; ".join(parts)


def make_row(base: dict, s: Shape, pass_: str, r: PassResult, tol: float, peak: float) -> Row:
    """One table row of a sweep: the job's columns, the shape's, and what the pass found."""
    return pass_row(pass_, r, tol, **base, **shape_columns(s), peak_gflops=peak, flops=flops(s, pass_))


def pass_row(pass_: str, r: PassResult, tol: float, **columns) -> Row:
    """What one pass found (harness.measure.passes.PassResult) as a row beside `columns`: the one
    place a measurement becomes columns, for a sweep's case and a network check alike."""
    row = Row(**columns, pass_=pass_, status=r.status, message=r.message, tol=tol, peak_mem_bytes=r.peak_mem,
              concurrent=r.concurrent)
    if r.verdict is not None:
        v = r.verdict
        row.correct, row.rel_err, row.max_abs_err = v.correct, v.rel_err, v.max_abs_err
        row.checked_calls, row.deterministic, row.repeat_max_diff = v.calls, v.deterministic, v.repeat_max_diff
    row.first_call_s = r.first_call_s
    plan = plan_for_pass(r.plan, pass_)
    if plan and row.status == Status.ok and not row.message:
        row.message = "ran " + plan  # which plan a planning implementation chose (winograd)
    t = r.timing
    if t is not None:
        row.time_median_s, row.time_iqr_s, row.n_runs, row.samples = t.median, t.iqr, t.n_runs, t.samples_json
        row.time_ci_low_s, row.time_ci_high_s = t.ci
        row.gflops = row.flops / t.median / 1e9 if row.flops else None
        row.round_medians = t.rounds_json
        if r.vendor_rounds:
            ratios = vendor_ratios(t.rounds, r.vendor_rounds)
            row.vendor_median_s = statistics.median(r.vendor_rounds)
            row.vs_vendor = statistics.median(ratios) if ratios else None
            row.vs_vendor_rounds = values_json(ratios)
    c = r.cold
    if c is not None:
        row.cold_median_s, row.cold_iqr_s, row.cold_samples = c.median, c.iqr, c.samples_json
        row.cold_ci_low_s, row.cold_ci_high_s = c.ci
    if t is not None or c is not None:
        why = [f"warm: {w}" for w in untrusted(t, r.paired)] if t is not None else []
        why += [f"cold: {w}" for w in untrusted(c, r.cold_paired)] if c is not None else []
        why += r.notes
        row.noisy, row.noisy_reason = bool(why), "; ".join(why)
    if r.gpu is not None:
        row.gpu_clock_mhz, row.throttled = r.gpu.clock_mhz, r.gpu.throttled
        if r.gpu.reasons:
            row.noisy_reason = "; ".join(filter(None, [row.noisy_reason, "throttled: " + ",".join(r.gpu.reasons)]))
    return row


def _registered_module(impl: str) -> Optional[str]:
    """The module that registered `impl` in this process, when it is not a built-in (a test or a
    library user imported it before calling run_job): the worker imports it too. Nothing is imported
    here: only what is already loaded is looked at."""
    fn = sys.modules["implementations.registry"]._registry.get(impl) if "implementations.registry" in sys.modules else None
    module = getattr(fn, "__module__", "") or ""
    return module if module and not module.startswith("implementations") and module in sys.modules else None


def worker_spec(cfg: Config, device: torch.device, settings: CaseSettings, claim: Optional[DeviceClaim],
                warm: bool) -> WorkerSpec:
    """What the job's worker needs, plain data: plug-in modules by name, never their objects."""
    modules = tuple(cfg.plugins) + tuple(m for m in [_registered_module(cfg.impl)] if m and m not in cfg.plugins)
    return WorkerSpec(impl=cfg.impl, modules=modules, device=str(device), settings=settings,
                      cudnn_benchmark=cfg.cudnn_benchmark, allow_tf32=cfg.allow_tf32,
                      claim=(str(claim.folder), str(claim.me), claim.allow) if claim else None,
                      probe=device.type == "cuda", warm=warm, memory_limit=memory_limit(cfg, device),
                      sys_path=tuple(sys.path))


def memory_limit(cfg: Config, device: torch.device) -> Optional[int]:
    """Bytes the worker may map beyond its start-up (RLIMIT_AS): worker_memory_gb, by default the
    machine's RAM on a CPU job; none with CUDA, whose driver maps far more address space than memory."""
    gb = cfg.worker_memory_gb
    if gb is None:
        return psutil.virtual_memory().total if device.type == "cpu" else None
    return int(gb * 2 ** 30) or None


def _progress(total: int, enabled: bool):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)
    from rich.console import Console
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True),
                    transient=True, disable=not enabled)


def run_job(cfg: Config, out_dir: os.PathLike, *, sweep: str = "", job: int = 0, progress: bool = True,
            sweep_dir: Optional[os.PathLike] = None, isolate: bool = True) -> pd.DataFrame:
    """Run every case of `cfg.suite` for `cfg.impl` and write the job folder; return its rows.

    The plug-ins are imported and the implementation is called in a worker process (harness.measure.
    supervise), never in this one; `isolate=False` runs them here instead (a debugger, tests that patch
    the harness). `sweep_dir` is where jobs that may share a device register (default: the job's own
    folder, i.e. nobody else). With `cfg.resume`, a job already complete with this config is returned
    as it is, and an unfinished one runs only the cases it lacks."""
    cfg = to_config(cfg)
    if not cfg.suite.shapes:  # measure/ cannot run models: the entry point captures them first
        raise ValueError(f"suite {cfg.suite.name!r} has no shapes yet: capture them from suite.model="
                         f"{cfg.suite.model} with harness.capture.expand_suite(cfg) before run_job")
    out = Path(out_dir)
    table, kept = jobfolder.start(out, jobfolder.fingerprint(cfg), cfg.resume, [p.name for p in cfg.passes])
    if table is not None:
        return table
    device = resolve(cfg.device)
    shapes = scale_batch(cfg.suite.shapes, cfg.batch)
    threads = cfg.threads or torch.get_num_threads()
    missing = [s for s in shapes if (s.layer, label(s)) not in kept]
    status, message = (Status.skipped, absent_reason(device)) if absent_reason(device) else (None, "")
    settings = CaseSettings.from_config(cfg, threads)
    # constructed (not entered) first: the worker must know the job's own entry to ignore it
    claim = DeviceClaim(sweep_dir or out, device, allow=cfg.allow_concurrent)
    spec = worker_spec(cfg, device, settings, claim, warm=True)
    runner = Supervisor(spec, out / WORKER_LOG) if isolate else InProcess(spec)
    # timing.processes - 1 more workers, each a process of its own that times the warm rounds again
    repeaters = [Supervisor(spec, out / WORKER_LOG) if isolate else runner for _ in range(cfg.timing.processes - 1)]
    with contextlib.ExitStack() as stack:
        for r in dict.fromkeys([runner, *repeaters]):
            stack.enter_context(r)
        if status is None and missing:
            status, message = runner.start()  # the worker: plug-ins, the implementation, library loading
        measuring = status is None and bool(missing)
        env = environment(device, threads)
        if measuring:  # is this machine fit to time? (the worker is idle now) recorded with every row, warned about once
            machine = survey()
            warn(machine, job)
            env.update(machine.columns())
        (out / ENV_FILE).write_text(json.dumps(env, indent=2))
        base = dict(env, sweep=sweep, job=job, impl=cfg.impl, suite=cfg.suite.name, model=cfg.suite.model or "",
                    device=str(device), dtype=cfg.dtype.name)
        all_rows = _measure(cfg, shapes, kept, runner, repeaters, status, message, base, device, threads,
                            claim if measuring else None, out, job, progress)
    df = schema.frame(all_rows)
    write_atomic(df, out / JOB_TABLE)
    (out / COMPLETE).write_text(json.dumps({"rows": len(df), "job": job, "kept": sum(map(len, kept.values()))}) + "\n")
    return df


def _measure(cfg: Config, shapes: list, kept: dict, runner, repeaters: list, status: Optional[Status], message: str,
             base: dict, device: torch.device, threads: int, claim: Optional[DeviceClaim], out: Path, job: int,
             progress: bool) -> list[dict]:
    """Every case's rows, appended to rows.jsonl as each case ends (kept ones from a resumed run as they are).
    A case is measured by `runner` (checks, memory, cold and warm timing), then its timed passes' warm
    rounds again by each of `repeaters`, spread over the job (harness.measure.repeats.schedule)."""
    dtype, passes, tol = cfg.dtype.torch, [p.name for p in cfg.passes], tolerance(cfg.dtype.torch)
    measuring = claim is not None
    all_rows: list[dict] = []
    warned = False
    # on_device: cuda:N is the current device for the job process too (the peak matmul); the peak
    # matmul runs under the job's TF32 and thread settings, like the cases it is compared with
    with on_device(device), torch_settings(cfg.cudnn_benchmark, cfg.allow_tf32, threads), \
            claim or contextlib.nullcontext(), _progress(len(shapes), progress) as bar:
        peak = peak_gflops(str(device), dtype, threads, allow_tf32=cfg.allow_tf32) if measuring else float("nan")
        task = bar.add_task(f"job {job} {cfg.impl}", total=len(shapes), completed=len(kept))
        todo = [s for s in shapes if (s.layer, label(s)) not in kept]
        done: dict[int, list[dict]] = {}
        results: dict[int, dict] = {}
        again: dict[int, list] = {}
        for i, k in schedule(len(todo), 1 + len(repeaters) if status is None else 1):
            s = todo[i]
            if k == 0:
                bar.update(task, description=f"job {job} {cfg.impl} {s.layer}")
                results[i] = ({p: PassResult(status=status, message=message) for p in passes} if status is not None
                              else runner.run(s))
                again[i] = []
            timed = tuple(p for p, r in results[i].items() if r.timing is not None)
            if k > 0 and timed:
                again[i].append(repeaters[k - 1].run(s, repeat=timed))
            if k < len(repeaters) and status is None:
                continue  # more processes to come for this case
            res, extra = results.pop(i), again.pop(i)
            for p in timed:
                pool(res[p], [a[p] for a in extra])
            if not warned and any(r.concurrent for r in res.values()) and not cfg.allow_concurrent:
                warned = True
                log.warning("another timing job is running on %s at the same time: both measure a shared device, "
                            "so their timings are distorted. Rows are marked concurrent=True. Run jobs one at a "
                            "time (the default launcher, or hydra.sweeper.max_batch_size=1), or set "
                            "allow_concurrent=true to accept this.", device)
            done[i] = [make_row(base, s, p, r, tol, peak).as_dict() for p, r in res.items()]
            append_rows(out / ROWS_FILE, done[i])
            bar.advance(task)
        finished = iter(done[i] for i in range(len(todo)))
        for s in shapes:
            all_rows.extend(kept[s.layer, label(s)] if (s.layer, label(s)) in kept else next(finished))
    return all_rows
