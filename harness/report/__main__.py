"""`python -m harness.report [DIR]`: rebuild a sweep's report (default results/latest)."""
from __future__ import annotations

import argparse
import pathlib
import sys

from .render import write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.report", description="Rebuild a sweep's report: report.md, report.html and the plots.")
    parser.add_argument("sweep_dir", type=pathlib.Path, nargs="?", default=pathlib.Path("results/latest"),
                        help="sweep folder holding results.parquet (default: results/latest)")
    args = parser.parse_args(argv)
    try:
        out = write_report(args.sweep_dir)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {out}\n        {out.with_name('report.md')}")
    return 0




if __name__ == "__main__":
    sys.exit(main())
