"""Gather every job folder of a sweep into `results.parquet` and `results.csv`.

Works on a sweep whose driver died: a finished job contributes its `job.parquet`, an unfinished one
the rows it had appended to `rows.jsonl`. Jobs are ordered by job number (folder names sort as
text: 10 before 2), and a case recorded twice (a resumed job) keeps its last row.

    python -m harness.aggregate DIR
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from . import schema
from .run import COMPLETE, JOB_TABLE, ROWS_FILE, write_atomic

KEY = ["job", "impl", "suite", "layer", "shape", "device", "dtype", "pass"]


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Folders (at any depth) that hold a job's rows."""
    found = {p.parent for name in (JOB_TABLE, ROWS_FILE) for p in sweep_dir.rglob(name)}
    return sorted(found)


def read_job(job_dir: Path) -> pd.DataFrame:
    """The job's final table when it completed, else whatever rows it appended."""
    if (job_dir / COMPLETE).exists() and (job_dir / JOB_TABLE).exists():
        return pd.read_parquet(job_dir / JOB_TABLE)
    rows = []
    path = job_dir / ROWS_FILE
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
    return schema.frame(rows)


def aggregate(sweep_dir: Path | str, write: bool = True) -> pd.DataFrame:
    """One tidy table for the sweep, sorted by job number; written next to the job folders."""
    sweep_dir = Path(sweep_dir)
    frames = [df for df in (read_job(d) for d in job_dirs(sweep_dir)) if len(df)]
    df = pd.concat(frames, ignore_index=True) if frames else schema.frame([])
    df["_order"] = range(len(df))
    df = df.drop_duplicates(subset=KEY, keep="last")
    df = df.sort_values(["job", "_order"], kind="stable").drop(columns="_order").reset_index(drop=True)
    if write:
        write_atomic(df, sweep_dir / "results.parquet")
        write_atomic(df, sweep_dir / "results.csv")
    return df


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.aggregate", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a sweep folder, e.g. results/latest")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        parser.error(f"{args.sweep_dir} is not a folder")
    df = aggregate(args.sweep_dir)
    print(f"{len(df)} rows from {df['job'].nunique()} jobs -> {args.sweep_dir / 'results.parquet'}, "
          f"{args.sweep_dir / 'results.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
