"""Gather every job folder of a sweep into one table; merge several sweeps.

Works on a sweep whose driver died: a finished job contributes its `job.parquet`, an unfinished one
the rows it had appended to `rows.jsonl`. Jobs are ordered by job number (folder names sort as
text: 10 before 2), and a case recorded twice (a resumed job) keeps its last row. Several sweeps (one
per machine, or copies from a cluster with mixed GPUs) merge into one table; rows keep their `sweep`,
`host` and `device_name`, so nothing of two machines collides."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from .io import RESULTS_CSV, RESULTS_PARQUET, conform, read_results, write_atomic
from .jobfolder import JOB_TABLE, ROWS_FILE, finished_table, read_rows
from .schema import CASE_KEY, MERGE_KEY, ROW_KEY

VENDOR = "cudnn"
# One case on one machine in one sweep: the rows whose errors may be compared with each other.
VENDOR_CASE = ["sweep", "host", "device_name", *CASE_KEY]
# The smallest error the vendor is credited with: an exact result (rel_err 0, common in float64)
# counts as one rounding of the dtype, so the ratio stays finite and means "times a rounding error".
def unit_roundoff(dtype: str) -> float:
    """Half the dtype's machine epsilon (2**-24 for float32), from torch's own table of its dtypes."""
    return torch.finfo(getattr(torch, dtype)).eps / 2 if isinstance(getattr(torch, str(dtype), None), torch.dtype) else float("nan")


def add_err_vs_vendor(df: pd.DataFrame) -> pd.DataFrame:
    """Fill `err_vs_vendor` = rel_err / (cudnn's rel_err for the same case), where both are known.
    Within tolerance is not the same as accurate: an algorithm 50x less accurate than the vendor
    (Winograd F(4x4,3x3)) passes the check and shows up here."""
    df = df.copy()
    keys = df[VENDOR_CASE].astype("string").fillna("")
    finite = df["rel_err"].notna() & (df["rel_err"] != float("inf"))
    vendor = (df["impl"] == VENDOR) & (df["status"] == "ok") & finite
    vendor_err = (df.loc[vendor, ["rel_err"]].join(keys).groupby(VENDOR_CASE)["rel_err"].median()
                  .rename("_vendor_err"))
    floor = df["dtype"].map(unit_roundoff).astype("float64")
    denom = keys.join(vendor_err, on=VENDOR_CASE)["_vendor_err"].astype("float64").clip(lower=floor)
    df["err_vs_vendor"] = (df["rel_err"] / denom).where(finite & denom.notna()).astype("float64")
    return df


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Folders (at any depth) that hold a job's rows."""
    found = {p.parent for name in (JOB_TABLE, ROWS_FILE) for p in sweep_dir.rglob(name)}
    return sorted(found)


def read_job(job_dir: Path) -> pd.DataFrame:
    """The job's final table when it completed, else whatever rows it appended."""
    table = finished_table(job_dir)
    return table if table is not None else conform(pd.DataFrame(read_rows(job_dir / ROWS_FILE)), str(job_dir))


def write_results(df: pd.DataFrame, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(df, out / RESULTS_PARQUET)
    write_atomic(df, out / RESULTS_CSV)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else conform(pd.DataFrame())


def aggregate(sweep_dir: Path | str, write: bool = True) -> pd.DataFrame:
    """One tidy table for the sweep, sorted by job number; written next to the job folders."""
    sweep_dir = Path(sweep_dir)
    df = _concat([read_job(d) for d in job_dirs(sweep_dir)])
    df["_order"] = range(len(df))
    df = df.drop_duplicates(subset=ROW_KEY, keep="last")
    df = df.sort_values(["job", "_order"], kind="stable").drop(columns="_order").reset_index(drop=True)
    df = add_err_vs_vendor(df)
    if write:
        write_results(df, sweep_dir)
    return df


def read_sweep(path: Path) -> pd.DataFrame:
    """A sweep's rows: from its job folders, else from its results table (a copy without them)."""
    if job_dirs(path):
        return aggregate(path, write=False)
    try:
        return read_results(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no job folders and no {RESULTS_PARQUET} / {RESULTS_CSV}") from None


def merge(sweep_dirs: list[Path | str], out: Path | str, write: bool = True) -> pd.DataFrame:
    """Every row of several sweeps in one table (in the order given, then by job). A sweep given twice
    counts once; rows of different sweeps, hosts or devices never replace each other."""
    df = _concat([read_sweep(Path(d)) for d in sweep_dirs])
    df = add_err_vs_vendor(df.drop_duplicates(subset=MERGE_KEY, keep="first").reset_index(drop=True))
    if write:
        write_results(df, Path(out))
    return df
