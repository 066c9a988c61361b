"""The results table: tidy long format, one row per (impl, shape, device, dtype, pass).

This module is the contract between the code that measures (`harness.run`) and the code that
reads (`harness.report`, `harness.compare`, `harness.aggregate`). The README's column table is
generated from `COLUMNS`, so the two cannot drift apart.
"""
from __future__ import annotations

STATUSES = ("ok", "incorrect", "error", "timeout", "unsupported", "skipped")
FAILURES = ("incorrect", "error", "timeout")  # ran and went wrong
NOT_RUN = ("unsupported", "skipped")  # deliberately not run: not a failure
PASSES = ("forward", "backward")

# name -> (pandas dtype, meaning)
COLUMNS: dict[str, tuple[str, str]] = {
    # what was run
    "sweep": ("string", "sweep folder name (date/time) the row belongs to"),
    "job": ("Int64", "Hydra job number within the sweep"),
    "impl": ("string", "implementation name, or package.module:function"),
    "suite": ("string", "suite the shape comes from"),
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
    "device": ("string", "device the job asked for (cpu, cuda:0, ...)"),
    "device_name": ("string", "the device's model name (GPU name or CPU model)"),
    "dtype": ("string", "float32, float64, float16 or bfloat16"),
    "pass": ("string", "forward, or backward (input, weight and bias gradients from a saved graph)"),
    # outcome
    "status": ("string", "ok, incorrect, error, timeout, unsupported or skipped"),
    "message": ("string", "why the row is not ok (exception, error figures, budget), else empty"),
    "correct": ("boolean", "every checked tensor within tolerance of the float64 reference"),
    "max_abs_err": ("float64", "largest absolute difference from the float64 F.conv2d reference"),
    "rel_err": ("float64", "worst relative error ||out - ref|| / ||ref|| over the pass's tensors"),
    "tol": ("float64", "relative-error tolerance for the dtype"),
    # timing
    "time_median_s": ("float64", "median time of one call, seconds"),
    "time_iqr_s": ("float64", "interquartile range of the timed samples, seconds"),
    "n_runs": ("Int64", "number of timed samples"),
    "samples": ("string", "JSON list of per-call times in seconds (for significance tests)"),
    "flops": ("float64", "floating point operations: forward 2*N*Cout*Hout*Wout*(Cin/g)*kh*kw, backward twice"),
    "gflops": ("float64", "achieved GFLOP/s = flops / time_median_s / 1e9"),
    "peak_gflops": ("float64", "measured large-matmul GFLOP/s of this device and dtype (the roofline ceiling)"),
    "peak_mem_bytes": ("float64", "peak memory allocated during the call, above what was live before it"),
    "concurrent": ("boolean", "another timing job may have shared the device while this row was measured"),
    # environment, identical for all rows of a job
    "torch": ("string", "torch version"),
    "cuda": ("string", "CUDA version torch was built with, empty on CPU builds"),
    "cudnn": ("string", "cuDNN version, empty without CUDA"),
    "cpu": ("string", "CPU model"),
    "threads": ("Int64", "torch intra-op threads used for timing"),
    "git_rev": ("string", "git revision of convbench"),
    "git_dirty": ("boolean", "uncommitted changes in the checkout when the row was measured"),
    "host": ("string", "host name"),
    "time": ("string", "ISO time the job started"),
}


def frame(rows) -> "pandas.DataFrame":  # noqa: F821
    """Rows (dicts) -> a DataFrame with exactly COLUMNS, in order, with their dtypes. Missing keys
    become NA; extra keys are dropped. Both the job tables and the aggregate go through here."""
    import pandas as pd

    df = pd.DataFrame(list(rows), columns=list(COLUMNS))
    return df.astype({name: dtype for name, (dtype, _) in COLUMNS.items()})


def markdown_table() -> str:
    """The README's column reference, generated from COLUMNS: `python -m harness.schema`."""
    lines = ["| column | type | meaning |", "|---|---|---|"]
    lines += [f"| `{name}` | {dtype} | {meaning} |" for name, (dtype, meaning) in COLUMNS.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
