"""`python -m harness.aggregate`: rebuild a sweep's table (a sweep whose driver died), or merge several
sweeps (one per machine) into one table and report:

    python -m harness.aggregate DIR
    python -m harness.aggregate DIR1 DIR2 ... --out DIR
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .table.collect import aggregate, merge


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
        from .finish import build_report
        report = build_report(out)
        if report is not None:
            print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
