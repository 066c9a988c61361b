"""One job: one (impl, suite, device, dtype) over every shape of the suite, without Hydra.

Durability: each finished case's rows are appended to `rows.jsonl` (flushed and fsynced), so a job
killed half-way keeps what it measured. At the end the job's table is written to `job.parquet`
through a temporary file and `os.replace` (never half-written), then the `COMPLETE` marker
(`harness.table.jobfolder`; with `resume=true` finished cases are kept, not measured again).
Nothing an implementation does stops the job: every failure becomes a row with a status.

Honest timing: the job registers on its device (`harness.measure.concurrency`) and each timed pass asks
whether another job used the device during it; such rows get `concurrent=True`."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Callable, Optional

import pandas as pd
import torch

import implementations

from harness.config import Config, Shape, import_plugins, to_config
from harness.table import jobfolder, schema
from harness.table.jobfolder import COMPLETE, ENV_FILE, JOB_TABLE, ROWS_FILE, append_rows, write_atomic  # noqa: F401
from harness.table.row import Row
from harness.table.schema import Status

from .cases import flops, label, pair_str, scale_batch
from .check import tolerance
from .concurrency import DeviceClaim
from .devices import absent_reason, resolve
from .env import environment
from .passes import CaseSettings, PassResult, error_text, run_case, torch_settings
from .peak import peak_gflops


def shape_columns(s: Shape) -> dict:
    return dict(layer=s.layer, shape=label(s), n=s.n, c_in=s.c_in, h=s.h, w=s.w, c_out=s.c_out,
                kh=s.kernel[0], kw=s.kernel[1], stride=pair_str(s.stride), padding=pair_str(s.padding),
                dilation=pair_str(s.dilation), groups=s.groups, bias=s.bias)


def make_row(base: dict, s: Shape, pass_: str, r: PassResult, tol: float, peak: float) -> Row:
    """One table row: the job's columns, the shape's, and what the pass found."""
    row = Row(**base, **shape_columns(s), pass_=pass_, status=r.status, message=r.message, tol=tol,
              peak_gflops=peak, flops=flops(s, pass_), peak_mem_bytes=r.peak_mem, concurrent=r.concurrent)
    if r.verdict is not None:
        v = r.verdict
        row.correct, row.rel_err, row.max_abs_err = v.correct, v.rel_err, v.max_abs_err
        row.checked_calls, row.deterministic, row.repeat_max_diff = v.calls, v.deterministic, v.repeat_max_diff
    t = r.timing
    if t is not None:
        row.time_median_s, row.time_iqr_s, row.n_runs, row.samples = t.median, t.iqr, t.n_runs, t.samples_json
        row.gflops = row.flops / t.median / 1e9
    return row


def _job_level_problem(cfg: Config, device: torch.device) -> tuple[Optional[Status], str, Optional[Callable]]:
    """(status, message, fn): a reason no case of this job can run, or (None, '', fn)."""
    reason = absent_reason(device)
    if reason:
        return Status.skipped, reason, None
    try:
        fn = implementations.get(cfg.impl)
    except Exception as exc:
        return Status.error, error_text(exc), None
    reason = implementations.unsupported_reason(fn, device, cfg.dtype.torch)
    if reason:
        return Status.unsupported, reason, None
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
                dtype=cfg.dtype.name)
    tol = tolerance(dtype)
    settings = CaseSettings.from_config(cfg, threads)

    status, message, fn = _job_level_problem(cfg, device)
    measuring = status is None and any((s.layer, label(s)) not in kept for s in shapes)
    peak = peak_gflops(str(device), dtype, threads) if measuring else float("nan")
    # only a job that times something claims the device
    claim = DeviceClaim(sweep_dir or out, device, allow=cfg.allow_concurrent) if measuring else None
    all_rows: list[dict] = []
    with torch_settings(cfg.cudnn_benchmark, cfg.allow_tf32, threads), claim or contextlib.nullcontext(), _progress(len(shapes), progress) as bar:
        task = bar.add_task(f"job {job} {cfg.impl}", total=len(shapes), completed=len(kept))
        for s in shapes:
            if (s.layer, label(s)) in kept:
                all_rows.extend(kept[s.layer, label(s)])
                continue
            bar.update(task, description=f"job {job} {cfg.impl} {s.layer}")
            if status is not None:
                results = {p: PassResult(status=status, message=message) for p in passes}
            else:
                results = run_case(fn, s, settings, device, claim)
            rows = [make_row(base, s, p, r, tol, peak).as_dict() for p, r in results.items()]
            append_rows(out / ROWS_FILE, rows)
            all_rows.extend(rows)
            bar.advance(task)
    df = schema.frame(all_rows)
    write_atomic(df, out / JOB_TABLE)
    (out / COMPLETE).write_text(json.dumps({"rows": len(df), "job": job, "kept": sum(map(len, kept.values()))}) + "\n")
    return df
