"""The one-screen summary printed at the end of a sweep: per shape the fastest *correct*
implementation of each pass, then what went wrong. Only `ok` rows can win."""
from __future__ import annotations

import pandas as pd
from rich.console import Console
from rich.table import Table

from .report.totals import network_totals, totals_tables
from .table.schema import FAILURES

GROUP = ["suite", "layer", "shape", "device", "dtype"]


def fastest(df: pd.DataFrame) -> pd.DataFrame:
    """Per (shape, device, dtype, pass): the ok row with the smallest median time."""
    ok = df[(df["status"] == "ok") & df["time_median_s"].notna()]
    if ok.empty:
        return ok
    return ok.loc[ok.groupby(GROUP + ["pass"], sort=False)["time_median_s"].idxmin()]


def _ms(t: float) -> str:
    return f"{t * 1e3:.3g}ms"


def summarize(df: pd.DataFrame, console: Console | None = None, max_shapes: int = 24,
              max_failures: int = 8) -> None:
    console = console or Console()
    best = fastest(df)
    passes = [p for p in ("forward", "backward") if p in set(df["pass"].dropna())]
    table = Table(title=f"Fastest correct implementation per shape ({len(df)} rows)", title_justify="left",
                  show_edge=False, pad_edge=False, box=None)
    table.add_column("layer", no_wrap=True, max_width=16)
    table.add_column("shape", no_wrap=True, overflow="ellipsis", max_width=30)
    for p in passes:
        table.add_column(p, no_wrap=True, min_width=15)
    shapes = df.drop_duplicates(GROUP)[GROUP]
    winner = {(*key, p): row for key, p, row in zip(best[GROUP].itertuples(index=False, name=None),
                                                    best["pass"], best.itertuples(index=False))}
    for i, key in enumerate(shapes.itertuples(index=False)):
        if i == max_shapes:
            table.add_row("…", f"{len(shapes) - max_shapes} more shapes in results.csv")
            break
        cells = []
        for p in passes:
            row = winner.get((*key, p))
            cells.append(f"{row.impl} {_ms(row.time_median_s)}" if row is not None else "[red]none correct[/]")
        label = key.layer if len(df["suite"].unique()) == 1 else f"{key.suite}/{key.layer}"
        table.add_row(label, key.shape, *cells)
    console.print(table)
    if len(best):
        wins = best["impl"].value_counts()
        console.print("wins: " + ", ".join(f"{impl} {n}" for impl, n in wins.items()))
    if "concurrent" in df:
        # every sweep says whether its timings were measured alone: a launcher may run jobs side by side
        shared = int(df["concurrent"].fillna(False).astype(bool).sum())
        console.print(f"concurrent: {shared} of {len(df)} rows timed while another job used the same device"
                      + (" (their times are distorted; see the `concurrent` column)" if shared else ""),
                      markup=False, highlight=False)
    counts = df["status"].value_counts()
    console.print("status: " + ", ".join(f"{s} {n}" for s, n in counts.items()))
    print_totals(df, console)
    bad = df[df["status"].isin(FAILURES)]
    if len(bad):
        console.print(f"[bold red]{len(bad)} failed rows[/] (first {min(len(bad), max_failures)}):")
        for row in bad.head(max_failures).to_dict("records"):
            msg = str(row["message"])[:110]
            console.print(f"  {row['status']:9} {row['impl']} {row['layer']} {row['pass']}: {msg}",
                          markup=False, highlight=False, no_wrap=True, overflow="ellipsis")


def _time(t: float) -> str:
    return f"{t:.3g}s" if t >= 1 else _ms(t)


def print_totals(df: pd.DataFrame, console: Console) -> None:
    """Suites captured from a model: per device and dtype, each implementation's network total
    (sum of count x median) per pass, the best-per-layer mix and × cudnn (harness.report.totals),
    then why an implementation has no total."""
    for (suite, device, dtype), t in totals_tables(network_totals(df), _time).items():
        table = Table(title=f"Network totals: {suite}, {device} {dtype} (sum of count × median)", title_justify="left",
                      show_edge=False, pad_edge=False, box=None)
        columns = [c for c in t.columns if c != "note"]
        for col in columns:  # 'forward ×cudnn' -> '×cudnn': the pass is the column before
            table.add_column(col.split(" ")[-1] if "×" in col else col, no_wrap=True)
        for row in t[columns].itertuples(index=False):
            table.add_row(*map(str, row))
        console.print(table)
        for impl, note in zip(t["impl"], t["note"]):
            if note:
                console.print(f"  {impl}: {note}", markup=False, highlight=False)
