"""A realistic results table without running anything, for testing the report and compare code.

Rows follow `harness.schema.COLUMNS` exactly: four implementations over a few network layers and a
`kernels` family (same problem, growing kernel), forward and backward, float32 and float16, with
every status the harness can write (incorrect, error, timeout, unsupported, skipped). Timings are
modelled so the picture is plausible: `cudnn` fastest on small kernels, `fft` flat in kernel size
and winning on large ones, `loop` far behind.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from harness.table.io import conform
from harness.table.schema import COLUMNS

# (suite, layer, n, c_in, h, c_out, k, stride, pad)
SHAPES = [
    ("resnet50", "conv1", 8, 3, 224, 64, 7, 2, 3),
    ("resnet50", "conv2_3x3", 8, 64, 56, 64, 3, 1, 1),
    ("resnet50", "conv3_1x1", 8, 256, 28, 256, 1, 1, 0),
    ("resnet50", "conv5_3x3", 8, 512, 7, 512, 3, 1, 1),
] + [("kernels", f"k{k}", 4, 16, 128, 16, k, 1, k // 2) for k in (3, 7, 15, 31)]

# GFLOP/s each implementation reaches (per dtype) on a 3x3 kernel; fft instead costs a fixed time
# per element, independent of the kernel size.
SPEED = {"cudnn": 160.0, "unfold": 40.0, "loop": 0.5}
TOL = {"float32": 1e-5, "float16": 1e-2}
PEAK = {"float32": 178.0, "float16": 60.0}


def shape_label(n, c_in, h, w, c_out, k, s, p, d=1, g=1) -> str:
    return f"{n},{c_in},{h},{w}->{c_out} k{k}x{k} s{s} p{p} d{d} g{g}"


def _flops(n, c_in, h, c_out, k, s, p, backward):
    out = (h + 2 * p - k) // s + 1
    f = 2.0 * n * c_out * out * out * c_in * k * k
    return 2 * f if backward else f


def _time(impl, flops, k, n, c_in, c_out, h, dtype, rng, scale):
    if impl == "fft":
        t = 2e-9 * n * h * h * c_in * c_out + 2e-3
    else:
        # direct methods lose efficiency on large kernels (cache pressure), as on the real machine
        t = flops / (SPEED[impl] * 1e9) * (1 + k / 10)
    if dtype == "float16":
        t *= 2.5  # no native half kernels on this CPU
    return t * scale


def fabricate_results(seed: int = 0, scale: dict | None = None, n_runs: int = 15,
                      noise: float = 0.03, sweep: str = "2026-11-25/09-00-00") -> pd.DataFrame:
    """A results table; `scale` multiplies one implementation's times ({"unfold": 2.0} plants a
    2x slowdown), `seed` changes only the random samples, not the underlying distribution."""
    rng = np.random.default_rng(seed)
    scale = scale or {}
    rows = []
    job = 0
    for impl in ("cudnn", "unfold", "fft", "loop"):
        for suite, layer, n, c_in, h, c_out, k, s, p in SHAPES:
            for dtype in ("float32", "float16"):
                for pas in ("forward", "backward"):
                    flops = _flops(n, c_in, h, c_out, k, s, p, pas == "backward")
                    row = {c: pd.NA for c in COLUMNS}
                    row.update(sweep=sweep, job=job, impl=impl, suite=suite, layer=layer,
                               shape=shape_label(n, c_in, h, h, c_out, k, s, p), n=n, c_in=c_in,
                               h=h, w=h, c_out=c_out, kh=k, kw=k, stride=f"{s},{s}", padding=f"{p},{p}",
                               dilation="1,1", groups=1, bias=True, device="cpu",
                               device_name="Synthetic CPU @ 2.0GHz", dtype=dtype, **{"pass": pas},
                               tol=TOL[dtype], flops=flops, peak_gflops=PEAK[dtype], concurrent=False,
                               torch="2.13.0+cpu", cuda="", cudnn="", cpu="Synthetic CPU @ 2.0GHz",
                               threads=2, git_rev="abc1234", git_dirty=False, host="bench-host",
                               time="2026-11-25T09:00:00", message="")
                    job += 1
                    status = "ok"
                    if impl == "fft" and dtype == "float16":
                        status, row["message"] = "unsupported", "torch.fft has no torch.float16 transforms"
                    elif impl == "loop" and flops > 5e9:
                        status, row["message"] = "timeout", "over the 60 s budget"
                    elif impl == "loop" and dtype == "float16":
                        status, row["message"] = "skipped", "budget: too slow to be worth timing"
                    elif impl == "unfold" and layer == "conv5_3x3" and pas == "backward" and dtype == "float16":
                        status, row["message"] = "error", "RuntimeError: out of memory"
                    row["status"] = status
                    if status in ("ok",):
                        t = _time(impl, flops, k, n, c_in, c_out, h, dtype, rng, scale.get(impl, 1.0))
                        samples = t * (1 + noise * rng.standard_normal(n_runs))
                        rel = TOL[dtype] * 10 ** rng.uniform(-3, -0.5)
                        if impl == "fft" and layer == "k31" and dtype == "float32" and pas == "backward":
                            # a plausible bug: wrong answer, and (suspiciously) fast
                            rel, status = 3e-2, "incorrect"
                            row["message"] = f"rel_err 3.0e-02 > tol {TOL[dtype]:.0e}"
                            samples = samples / 5
                        row.update(status=status, correct=status == "ok", rel_err=rel,
                                   max_abs_err=rel * 3, time_median_s=float(np.median(samples)),
                                   time_iqr_s=float(np.subtract(*np.percentile(samples, [75, 25]))),
                                   n_runs=n_runs, samples=json.dumps(samples.tolist()),
                                   peak_mem_bytes=float(n * c_out * h * h * 4))
                        row["gflops"] = flops / row["time_median_s"] / 1e9
                    else:
                        row["correct"] = False if status == "error" else pd.NA
                    rows.append(row)
    return conform(pd.DataFrame(rows, columns=list(COLUMNS)))


def write_sweep(path, df: pd.DataFrame):
    """Lay `df` out as a sweep folder (results.parquet + results.csv), as the harness does."""
    path.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path / "results.parquet", index=False)
    df.to_csv(path / "results.csv", index=False)
    return path
