"""The end of a sweep, without Hydra: aggregate the jobs, point `results/latest` at the sweep, build the
report, print the summary. The table is written first and nothing after it can lose it: a report
failure is printed, not raised. The Hydra callback and `python -m harness.aggregate` both end here."""
from __future__ import annotations

import os
import traceback
from pathlib import Path
from typing import Any, Optional

from rich.console import Console

from .summary import summarize
from .table.collect import aggregate
from .table.schema import Status

STRICT_FAILURES = (Status.incorrect.value, Status.error.value, Status.crashed.value)


def point_link(link: Path, target: Path) -> None:
    """Atomically (re)point the symlink `link` at `target` (relative, so the tree can move)."""
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.exists() and not link.is_symlink():
        print(f"convbench: {link} exists and is not a symlink; not updating it")
        return
    tmp = link.with_name(f".{link.name}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(os.path.relpath(target.resolve(), link.parent.resolve()), tmp)
    os.replace(tmp, link)


def build_report(sweep_dir: Path) -> Optional[Any]:
    """harness.report.write_report(sweep_dir), tolerating its absence and printing its failures."""
    try:
        from .report import write_report
    except ImportError as exc:
        print(f"convbench: no report ({exc})")
        return None
    try:
        return write_report(sweep_dir)
    except Exception:  # the table is already written; say what broke and go on
        print("convbench: building the report failed (the table is intact):")
        traceback.print_exc()
        return None


def finish(sweep_dir: Path, results_link: Optional[str] = "results/latest", strict: bool = False) -> int:
    """Aggregate, link, report, summarise. Returns the exit status: 1 when `strict` and any row is
    incorrect, error or crashed, else 0."""
    sweep_dir = Path(sweep_dir)
    df = aggregate(sweep_dir)
    if results_link:
        try:
            point_link(Path(results_link), sweep_dir)
        except OSError as exc:
            print(f"convbench: could not point {results_link} at {sweep_dir}: {exc}")
    report = build_report(sweep_dir)
    console = Console()
    if len(df):
        summarize(df, console)
    # plain print: paths must not be wrapped by rich, so they can be copied
    print(f"table:  {sweep_dir / 'results.parquet'}  ({len(df)} rows; also results.csv)")
    if report is not None:
        print(f"report: {report}")
    if results_link:
        print(f"latest: {results_link} -> {sweep_dir}")
    bad = df[df["status"].isin(STRICT_FAILURES)]
    if strict and len(bad):
        console.print(f"[bold red]strict: {len(bad)} incorrect/error/crashed rows[/]")
        return 1
    return 0
