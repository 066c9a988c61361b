"""Gather every job folder of a sweep into `results.parquet` and `results.csv`; merge several sweeps.

Works on a sweep whose driver died: a finished job contributes its `job.parquet`, an unfinished one
the rows it had appended to `rows.jsonl`. Jobs are ordered by job number (folder names sort as
text: 10 before 2), and a case recorded twice (a resumed job) keeps its last row.

Several sweeps (one per machine, or copies from a cluster with mixed GPUs) merge into one table and
one report; rows keep their `sweep`, `host` and `device_name`, so nothing of two machines collides:

    python -m harness.aggregate DIR
    python -m harness.aggregate DIR1 DIR2 ... --out DIR
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from . import schema
from .jobfolder import JOB_TABLE, ROWS_FILE, finished_table, read_rows, write_atomic

KEY = ["job", "impl", "suite", "layer", "shape", "device", "dtype", "pass"]
MERGE_KEY = ["sweep", "host", "device_name", *KEY]  # one row across machines


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Folders (at any depth) that hold a job's rows."""
    found = {p.parent for name in (JOB_TABLE, ROWS_FILE) for p in sweep_dir.rglob(name)}
    return sorted(found)


def read_job(job_dir: Path) -> pd.DataFrame:
    """The job's final table when it completed, else whatever rows it appended."""
    table = finished_table(job_dir)
    return table if table is not None else schema.frame(read_rows(job_dir / ROWS_FILE))


def _write(df: pd.DataFrame, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(df, out / "results.parquet")
    write_atomic(df, out / "results.csv")


def aggregate(sweep_dir: Path | str, write: bool = True) -> pd.DataFrame:
    """One tidy table for the sweep, sorted by job number; written next to the job folders."""
    sweep_dir = Path(sweep_dir)
    frames = [df for df in (read_job(d) for d in job_dirs(sweep_dir)) if len(df)]
    df = pd.concat(frames, ignore_index=True) if frames else schema.frame([])
    df["_order"] = range(len(df))
    df = df.drop_duplicates(subset=KEY, keep="last")
    df = df.sort_values(["job", "_order"], kind="stable").drop(columns="_order").reset_index(drop=True)
    if write:
        _write(df, sweep_dir)
    return df


def read_sweep(path: Path) -> pd.DataFrame:
    """A sweep's rows: from its job folders, else from its results table (a copy without them)."""
    if job_dirs(path):
        return aggregate(path, write=False)
    for name in ("results.parquet", "results.csv"):
        if (path / name).exists():
            table = pd.read_parquet(path / name) if name.endswith("parquet") else pd.read_csv(path / name)
            return schema.frame(table.to_dict("records"))
    raise FileNotFoundError(f"{path}: no job folders and no results.parquet / results.csv")


def merge(sweep_dirs: list[Path | str], out: Path | str, write: bool = True) -> pd.DataFrame:
    """Every row of several sweeps in one table (in the order given, then by job). A sweep given twice
    counts once; rows of different sweeps, hosts or devices never replace each other."""
    frames = [read_sweep(Path(d)) for d in sweep_dirs]
    df = pd.concat(frames, ignore_index=True) if frames else schema.frame([])
    df = df.drop_duplicates(subset=MERGE_KEY, keep="first").reset_index(drop=True)
    if write:
        _write(df, Path(out))
    return df


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.aggregate", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dirs", type=Path, nargs="+", metavar="DIR",
                        help="sweep folders, e.g. results/latest (or copies of other machines' sweeps)")
    parser.add_argument("--out", type=Path, help="where the merged table and report go (needed for several DIRs)")
    parser.add_argument("--report", action=argparse.BooleanOptionalAction, default=None,
                        help="also build the report (default: with --out)")
    args = parser.parse_args(argv)
    for d in args.sweep_dirs:
        if not d.is_dir():
            parser.error(f"{d} is not a folder")
    if len(args.sweep_dirs) > 1 and args.out is None:
        parser.error("several sweeps: say where the merged table goes with --out DIR")
    if args.out is None:
        out = args.sweep_dirs[0]
        df = aggregate(out)
    else:
        out = args.out
        df = merge(args.sweep_dirs, out)
    devices = ", ".join(sorted(df["device_name"].dropna().unique())) or "-"
    print(f"{len(df)} rows from {len(args.sweep_dirs)} sweep(s), {df[['sweep', 'job']].drop_duplicates().shape[0]} "
          f"jobs, devices: {devices} -> {out / 'results.parquet'}, {out / 'results.csv'}")
    if args.report or (args.report is None and args.out is not None):
        from .callbacks import build_report
        report = build_report(out)
        if report is not None:
            print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
