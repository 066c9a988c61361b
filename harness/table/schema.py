"""The results table: tidy long format, one row per (impl, shape, device, dtype, pass).

This module is the contract between the code that measures (`harness.measure`) and the code that
reads (`harness.report`, `harness.table.collect`). The README's column table is generated from
`COLUMNS`, so the two cannot drift apart; `harness.table.row.Row` has exactly these fields (a test
checks), so a misspelled column is a TypeError where the row is built, not an all-NA column.

Stored tables carry `table_version`; `harness.table.read` reads every version up to `TABLE_VERSION`.
"""
from __future__ import annotations

from enum import Enum

# 1: the first stored tables (no `table_version` column). 2: `table_version` added. 3: cold timings,
# first-call time, confidence intervals, `noisy`, the machine's fitness to time, the verdict's repeated
# checks (`checked_calls`, `deterministic`, `repeat_max_diff`), `err_vs_vendor`, and `model`, `count`
# (network suites). 4: warm timings in rounds beside the vendor (`round_medians`, `vendor_median_s`,
# `vs_vendor`, `vs_vendor_rounds`). Older tables read every newer column as NA; no existing column changed
# meaning.
TABLE_VERSION = 4


class Status(str, Enum):
    """A row's outcome. A str, so `df["status"] == "ok"` and JSON keep working."""
    ok = "ok"                    # ran, and every checked tensor is within tolerance
    incorrect = "incorrect"      # ran, and something is wrong (values, shape, dtype, device, NaN)
    error = "error"              # raised
    crashed = "crashed"          # the worker process died or hung in it (harness.measure.supervise)
    timeout = "timeout"          # ran past budget_s
    unsupported = "unsupported"  # the implementation declares it does not handle this case
    skipped = "skipped"          # the device is not present

    def __str__(self) -> str:
        return self.value


FAILURES = (Status.incorrect.value, Status.error.value, Status.crashed.value, Status.timeout.value)  # ran and went wrong
NOT_RUN = (Status.unsupported.value, Status.skipped.value)  # deliberately not run: not a failure
MESSAGE_CHARS = 500  # a row's message at most: an exception's text can be megabytes (a repr of a tensor)


def clip(text: str, limit: int = MESSAGE_CHARS) -> str:
    """`text` cut to `limit` characters, marked with '...' where it was cut: the one truncation rule for
    messages stored in rows, shown in the report or printed."""
    text = str(text)
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."


# One row of a sweep; across sweeps (a merge of several machines) also sweep, host and device model.
CASE_KEY = ["shape", "device", "dtype", "pass"]  # one problem, as every implementation sees it
ROW_KEY = ["job", "impl", "suite", "layer", *CASE_KEY]
MERGE_KEY = ["sweep", "host", "device_name", *ROW_KEY]

# name -> (pandas dtype, meaning)
COLUMNS: dict[str, tuple[str, str]] = {
    # what was run
    "sweep": ("string", "sweep folder name (date/time) the row belongs to"),
    "job": ("Int64", "Hydra job number within the sweep"),
    "impl": ("string", "implementation name, or package.module:function"),
    "suite": ("string", "suite the shape comes from"),
    "model": ("string", "package.module:factory the suite was captured from (harness.capture); empty for hand-written suites"),
    "layer": ("string", "the shape's name within its suite (e.g. L1, conv2_3x3)"),
    "shape": ("string", "compact label of the problem: n,c_in,h,w -> c_out, k, s, p, d, g"),
    "n": ("Int64", "batch size"),
    "c_in": ("Int64", "input channels"),
    "h": ("Int64", "input height"),
    "w": ("Int64", "input width"),
    "c_out": ("Int64", "output channels"),
    "kh": ("Int64", "kernel height"),
    "kw": ("Int64", "kernel width"),
    "stride": ("string", "stride as 'sh,sw'"),
    "padding": ("string", "padding as 'ph,pw', or same / valid"),
    "dilation": ("string", "dilation as 'dh,dw'"),
    "groups": ("Int64", "groups"),
    "bias": ("boolean", "whether a bias is added"),
    "count": ("Int64", "calls of this shape per forward pass of the suite's network; network totals are sum(count x time)"),
    "device": ("string", "device the job asked for (cpu, cuda:0, ...)"),
    "device_name": ("string", "the device's model name (GPU name or CPU model)"),
    "dtype": ("string", "float32, float64, float16 or bfloat16"),
    "pass": ("string", "forward, or backward (input, weight and bias gradients from a saved graph)"),
    # outcome
    "status": ("string", "ok, incorrect, error, crashed, timeout, unsupported or skipped"),
    "message": ("string", "why the row is not ok (exception, error figures, budget, how the worker crashed), or what the implementation changed in torch's global state; else empty"),
    "correct": ("boolean", "every checked tensor within tolerance of the float64 reference"),
    "max_abs_err": ("float64", "largest absolute difference from the float64 F.conv2d reference"),
    "rel_err": ("float64", "worst relative error ||out - ref|| / ||ref|| over the pass's tensors"),
    "tol": ("float64", "relative-error tolerance for the dtype"),
    "checked_calls": ("Int64", "calls checked against the reference: the first, a second, one after the timed runs (check.calls)"),
    "deterministic": ("boolean", "the checked calls gave bitwise-equal results (outputs or gradients); NA with one call"),
    "repeat_max_diff": ("float64", "largest absolute difference between the checked calls' results (0 when deterministic)"),
    "err_vs_vendor": ("float64", "rel_err / cudnn's rel_err for the same case (sweep, host, device, dtype, pass); the vendor's error floored at the dtype's unit roundoff. Added when a sweep's table is aggregated"),
    # timing
    "time_median_s": ("float64", "median time of one call with warm caches (back-to-back calls), seconds"),
    "time_iqr_s": ("float64", "interquartile range of the warm samples, seconds"),
    "time_ci_low_s": ("float64", "lower end of the 95% confidence interval of the warm median (order statistics)"),
    "time_ci_high_s": ("float64", "upper end of the 95% confidence interval of the warm median (order statistics)"),
    "n_runs": ("Int64", "number of warm samples"),
    "samples": ("string", "JSON list of warm per-call times in seconds (for significance tests)"),
    "cold_median_s": ("float64", "median time of one call after the device's last cache was overwritten, seconds"),
    "cold_iqr_s": ("float64", "interquartile range of the cold samples, seconds"),
    "cold_ci_low_s": ("float64", "lower end of the 95% confidence interval of the cold median"),
    "cold_ci_high_s": ("float64", "upper end of the 95% confidence interval of the cold median"),
    "cold_samples": ("string", "JSON list of cold per-call times in seconds, one call per sample"),
    "round_medians": ("string", "JSON list of the warm median of each worker process (timing.processes; with timing.repeats > 1 the median of its rounds)"),
    "vendor_median_s": ("float64", "torch's own conv (cudnn) on the same inputs, warm median over the same rounds"),
    "vs_vendor": ("float64", "median over rounds of this row's round median / the vendor's in that round"),
    "vs_vendor_rounds": ("string", "JSON list of the per-process ratios to the vendor measured side by side (what compare tests)"),
    "first_call_s": ("float64", "time of the first call on the case, before warm-up, from a fresh state"),
    "noisy": ("boolean", "a timing is not trustworthy: see noisy_reason"),
    "noisy_reason": ("string", "why: too few samples, or both the samples and their ratios to the vendor timed beside them ('vs vendor: ...') unsteady: the median's 95% interval beyond +-5%, or pyperf's rules on block medians or on one value per process ('between rounds: ...')"),
    "flops": ("float64", "floating point operations: forward 2*N*Cout*Hout*Wout*(Cin/g)*kh*kw, backward twice"),
    "gflops": ("float64", "achieved GFLOP/s = flops / time_median_s / 1e9"),
    "peak_gflops": ("float64", "measured large-matmul GFLOP/s of this device and dtype (the roofline ceiling)"),
    "peak_mem_bytes": ("float64", "peak memory allocated during the call, above what was live before it"),
    "concurrent": ("boolean", "another timing job may have shared the device while this row was measured"),
    "gpu_clock_mhz": ("float64", "lowest SM clock read before and after the timings (CUDA), MHz"),
    "throttled": ("boolean", "the GPU was throttled (thermal/power reason, or SM clock < 75% of max) while timed"),
    # environment, identical for all rows of a job
    "torch": ("string", "torch version"),
    "cuda": ("string", "CUDA version torch was built with, empty on CPU builds"),
    "cudnn": ("string", "cuDNN version, empty without CUDA"),
    "cpu": ("string", "CPU model"),
    "threads": ("Int64", "torch intra-op threads used for timing"),
    "cpu_governor": ("string", "CPU frequency governor at job start, empty when unreadable"),
    "load_avg": ("float64", "1-minute load average at job start"),
    "other_cpu_pct": ("float64", "% of all CPUs used by other processes at job start"),
    "speed_spread": ("float64", "a fixed small workload's slowest 50 ms window over its fastest at job start (1.0: the speed holds)"),
    "machine_warning": ("string", "why the machine was unfit to time at job start, else empty"),
    "git_rev": ("string", "git revision of convbench"),
    "git_dirty": ("boolean", "uncommitted changes in the checkout when the row was measured"),
    "host": ("string", "host name"),
    "time": ("string", "ISO time the job started"),
    "table_version": ("Int64", "format version of the stored table (harness.table.schema.TABLE_VERSION)"),
}


def frame(rows) -> "pandas.DataFrame":  # noqa: F821
    """Rows (`Row`s or dicts of the current version) -> a DataFrame with exactly COLUMNS, in order, with
    their dtypes. Missing keys become NA; an unknown key is an error (a misspelling would otherwise
    vanish). Tables read from disk, of any version, go through `harness.table.read` instead."""
    import pandas as pd

    records = [r.as_dict() if hasattr(r, "as_dict") else dict(r) for r in rows]
    unknown = sorted({k for r in records for k in r} - set(COLUMNS))
    if unknown:
        raise KeyError(f"not columns of the results table: {', '.join(unknown)} (see harness/table/schema.py)")
    df = pd.DataFrame(records, columns=list(COLUMNS))
    df["table_version"] = df["table_version"].fillna(TABLE_VERSION) if len(df) else df["table_version"]
    return df.astype({name: dtype for name, (dtype, _) in COLUMNS.items()})


def columns_markdown() -> str:
    """The README's column reference, generated from COLUMNS: `python -m harness.table.schema`."""
    lines = ["| column | type | meaning |", "|---|---|---|"]
    lines += [f"| `{name}` | {dtype} | {meaning} |" for name, (dtype, meaning) in COLUMNS.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    print(columns_markdown())
