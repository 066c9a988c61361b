"""One row of the results table as a typed value: the measuring code fills a `Row`, never a loose dict,
so a misspelled column fails where it is written. Fields are exactly `schema.COLUMNS` (a test checks),
with `pass_` for the column `pass` (a Python keyword)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Optional

from .schema import TABLE_VERSION, Status


@dataclass
class Row:
    # what was run
    sweep: str = ""
    job: int = 0
    impl: str = ""
    suite: str = ""
    model: str = ""
    layer: str = ""
    shape: str = ""
    n: Optional[int] = None
    c_in: Optional[int] = None
    h: Optional[int] = None
    w: Optional[int] = None
    c_out: Optional[int] = None
    kh: Optional[int] = None
    kw: Optional[int] = None
    stride: str = ""
    padding: str = ""
    dilation: str = ""
    groups: Optional[int] = None
    bias: Optional[bool] = None
    count: Optional[int] = None
    device: str = ""
    device_name: str = ""
    dtype: str = ""
    pass_: str = ""
    # outcome
    status: Optional[Status] = None
    message: str = ""
    correct: Optional[bool] = None
    max_abs_err: Optional[float] = None
    rel_err: Optional[float] = None
    tol: Optional[float] = None
    checked_calls: Optional[int] = None
    deterministic: Optional[bool] = None
    repeat_max_diff: Optional[float] = None
    err_vs_vendor: Optional[float] = None
    # timing
    time_median_s: Optional[float] = None
    time_iqr_s: Optional[float] = None
    time_ci_low_s: Optional[float] = None
    time_ci_high_s: Optional[float] = None
    n_runs: Optional[int] = None
    samples: Optional[str] = None
    cold_median_s: Optional[float] = None
    cold_iqr_s: Optional[float] = None
    cold_ci_low_s: Optional[float] = None
    cold_ci_high_s: Optional[float] = None
    cold_samples: Optional[str] = None
    round_medians: Optional[str] = None
    vendor_median_s: Optional[float] = None
    vs_vendor: Optional[float] = None
    vs_vendor_rounds: Optional[str] = None
    first_call_s: Optional[float] = None
    noisy: Optional[bool] = None
    noisy_reason: str = ""
    flops: Optional[float] = None
    gflops: Optional[float] = None
    peak_gflops: Optional[float] = None
    peak_mem_bytes: Optional[float] = None
    concurrent: bool = False
    gpu_clock_mhz: Optional[float] = None
    throttled: Optional[bool] = None
    # environment, identical for all rows of a job
    torch: str = ""
    cuda: str = ""
    cudnn: str = ""
    cpu: str = ""
    threads: Optional[int] = None
    cpu_governor: str = ""
    load_avg: Optional[float] = None
    other_cpu_pct: Optional[float] = None
    speed_spread: Optional[float] = None
    machine_warning: str = ""
    git_rev: str = ""
    git_dirty: Optional[bool] = None
    host: str = ""
    time: str = ""
    table_version: int = TABLE_VERSION

    def as_dict(self) -> dict:
        """The row as the table's columns (`pass`, status as its text): what rows.jsonl holds."""
        d = asdict(self)
        d["pass"] = d.pop("pass_")
        if d["status"] is not None:
            d["status"] = Status(d["status"]).value
        return d


def column_names() -> list[str]:
    """Row's fields under their column names, in order."""
    return ["pass" if f.name == "pass_" else f.name for f in fields(Row)]
