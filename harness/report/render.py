"""A sweep's report for people: `report.md`, a self-contained `report.html` and the plots as PNGs.

    python -m harness.report results/latest   (harness/report/__main__.py)

The results table answers questions only if you know how to ask; the report answers the usual
ones at a glance: which implementation wins where and by how much (speedup against `cudnn`),
how close each gets to the machine (GFLOP/s against the measured matmul peak), and whether
anything is wrong (correctness). Only rows with status `ok` (run and correct) are ever ranked:
a fast wrong answer is shown as such, never as a win.
"""
from __future__ import annotations

import base64
import html
import pathlib
import warnings

import pandas as pd

from harness.table.schema import FAILURES, NOT_RUN, clip

from .analysis import REFERENCE, accuracy_cost, enrich, environment_summary, load_results, summary
from .totals import TOTALS_LEGEND, network_totals, totals_tables


# ------------------------------------------------------------------------------------ formatting
def _fmt_time(s: float) -> str:
    if pd.isna(s):
        return ""
    for unit, f in (("s", 1), ("ms", 1e3), ("µs", 1e6)):
        if s * f >= 1:
            return f"{s * f:.3g} {unit}"
    return f"{s * 1e9:.3g} ns"


def _fmt(v, spec: str) -> str:
    return "" if pd.isna(v) else format(v, spec)


def display_table(df: pd.DataFrame) -> pd.DataFrame:
    """The full table as strings, one row per result, in a person's order and units."""
    order = {"float32": 0, "float64": 1, "float16": 2, "bfloat16": 3, "forward": 0, "backward": 1}
    df = df.sort_values(["suite", "flops", "shape", "device", "dtype", "pass", "time_median_s"], na_position="last",
                        key=lambda c: c.map(order) if c.name in ("dtype", "pass") else c)
    return pd.DataFrame({
        "impl": df["impl"].fillna(""),
        "suite": df["suite"].fillna(""),
        "layer": df["layer"].fillna(""),
        "shape": df["shape"].fillna(""),
        "device": df["device"].fillna(""),
        "dtype": df["dtype"].fillna(""),
        "pass": df["pass"].fillna(""),
        "status": df["status"].fillna("") + df["winner"].map({True: " ★", False: ""}),
        "median": df["noisy"].map({True: "~ ", False: ""}).fillna("") + df["time_median_s"].map(_fmt_time),
        "95% CI": [f"{_fmt_time(lo)}–{_fmt_time(hi)}" if pd.notna(lo) else ""
                   for lo, hi in zip(df["time_ci_low_s"], df["time_ci_high_s"])],
        "IQR": df["time_iqr_s"].map(_fmt_time),
        "cold": df["cold_median_s"].map(_fmt_time),
        "first call": df["first_call_s"].map(_fmt_time),
        "GFLOP/s": df["gflops"].map(lambda v: _fmt(v, ",.1f")),
        "% peak": df["pct_peak"].map(lambda v: _fmt(v, ".0f")),
        f"× {REFERENCE}": df["speedup"].where(df["status"] == "ok").map(lambda v: _fmt(v, ".3g")),
        "rel err": df["rel_err"].map(lambda v: _fmt(v, ".1e")),
        "tol": df["tol"].map(lambda v: _fmt(v, ".0e")),
        f"err × {REFERENCE}": df["err_vs_vendor"].map(lambda v: _fmt(v, ".3g")),
        "repeats": [("" if pd.isna(d) else "identical" if d else f"differ by {_fmt(m, '.1e')}")
                    for d, m in zip(df["deterministic"], df["repeat_max_diff"])],
        "message": df["message"].fillna("").map(lambda m: clip(m, 120)),
    })


def _summary_strings(s: pd.DataFrame) -> pd.DataFrame:
    s = s.reset_index()
    col = f"median speedup vs {REFERENCE}"
    s[col] = s[col].map(lambda v: "" if pd.isna(v) else f"{v:.3g}×")
    for col in (f"error vs {REFERENCE} (median)", f"error vs {REFERENCE} (worst)"):
        s[col] = s[col].map(lambda v: "" if pd.isna(v) else f"{v:.3g}×")
    return s.astype(str)


def _accuracy_strings(a: pd.DataFrame) -> pd.DataFrame:
    a = a.copy()
    for col in a.columns:
        if "×" in col and "rows" not in col:
            a[col] = a[col].map(lambda v: "" if pd.isna(v) else f"{v:.3g}×")
    a["largest repeat difference"] = a["largest repeat difference"].map(lambda v: _fmt(v, ".1e"))
    return a.astype(str)


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub Markdown table of string cells (pipes escaped)."""
    def cells(values):
        return "| " + " | ".join(str(v).replace("|", "\\|").replace("\n", " ") for v in values) + " |"
    lines = [cells(df.columns), "|" + "---|" * len(df.columns)]
    lines += [cells(row) for row in df.itertuples(index=False)]
    return "\n".join(lines)


def html_table(df: pd.DataFrame, status_col: str | None = None) -> str:
    """An HTML table of string cells; rows get a class named after their status."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    statuses = df[status_col].str.split().str[0].fillna("") if status_col else pd.Series("", index=df.index)
    for status, row in zip(statuses, df.itertuples(index=False)):
        cls = f' class="{html.escape(status)}"' if status else ""
        rows.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


# -------------------------------------------------------------------------------------- writing
CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 2em auto;
       max-width: 1300px; color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { padding: 0.25em 0.6em; border-bottom: 1px solid #eee; text-align: left; white-space: nowrap; }
td:last-child { white-space: normal; min-width: 16em; }
.scroll { overflow-x: auto; }
th { background: #f4f4f4; position: sticky; top: 0; }
td:nth-child(n+2) { font-variant-numeric: tabular-nums; }
tr.incorrect td, tr.error td, tr.crashed td, tr.timeout td { background: #fde8e8; }
tr.unsupported td, tr.skipped td { color: #888; }
dl.env { display: grid; grid-template-columns: max-content 1fr; gap: 0.2em 1em; }
dl.env dt { font-weight: 600; } dl.env dd { margin: 0; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; margin-bottom: 0.4em; }
.warning { color: #a40; }
"""


def _render_plots(df: pd.DataFrame, sweep_dir: pathlib.Path) -> list[tuple[str, str, pathlib.Path]]:
    """Draw every plot that has data; (title, caption, png path) for each one written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import plots  # after matplotlib.use: the report draws off-screen

    written = []
    for name, title, caption, draw in plots.PLOTS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            fig = draw(df)
        path = sweep_dir / f"{name}.png"
        if fig is None:
            path.unlink(missing_ok=True)  # a stale plot from an earlier report would mislead
            continue
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append((title, caption, path))
    return written


def write_report(sweep_dir: pathlib.Path) -> pathlib.Path:
    """Write report.md, report.html and the PNG plots into `sweep_dir`; return report.html's path."""
    sweep_dir = pathlib.Path(sweep_dir)
    df = enrich(load_results(sweep_dir))
    env = environment_summary(df)
    summ = _summary_strings(summary(df))
    figures = _render_plots(df, sweep_dir)
    accuracy = accuracy_cost(df)
    accuracy_text = (f"Correct is not the same as accurate: each ok row's relative error divided by {REFERENCE}'s "
                     f"for the same case (`err_vs_vendor`; {REFERENCE}'s error counted as at least one rounding "
                     "of the dtype). Nondeterministic rows gave different (still correct) results on repeated "
                     "checked calls.")
    full = display_table(df)
    title = f"convbench report: {env.get('sweep', sweep_dir.name)}"
    legend = (f"Only `ok` rows (run, and correct against the float64 reference) are ranked. "
              f"Speedup is {REFERENCE}'s median time divided by the implementation's, for the same "
              f"shape, device, dtype and pass (> 1 is faster). A win is the fastest ok result of a case. "
              f"Failures: {', '.join(FAILURES)}; not run: {', '.join(NOT_RUN)}.")

    md = [f"# {title}", "", "## Environment", ""]
    md += [f"- **{k}**: {v}" for k, v in env.items()]
    md += ["", "## Summary", "", legend, "", markdown_table(summ), ""]
    if not accuracy.empty:
        md += ["## Accuracy against the vendor", "", accuracy_text, "", markdown_table(_accuracy_strings(accuracy)), ""]
    totals = totals_tables(network_totals(df), _fmt_time)
    if totals:
        md += ["## Network totals", "", TOTALS_LEGEND, ""]
        for key, t in totals.items():
            md += [f"### {' · '.join(key)}", "", markdown_table(t), ""]
    md += ["## Plots", ""]
    for t, cap, path in figures:
        md += [f"### {t}", "", cap, "", f"![{t}]({path.name})", ""]
    if not figures:
        md += ["No timed rows: nothing to plot.", ""]
    md += ["## All results", "", markdown_table(full), ""]
    (sweep_dir / "report.md").write_text("\n".join(md), encoding="utf-8")

    body = [f"<h1>{html.escape(title)}</h1>", "<h2>Environment</h2>", '<dl class="env">']
    for k, v in env.items():
        cls = ' class="warning"' if k == "warning" else ""
        body.append(f"<dt{cls}>{html.escape(k)}</dt><dd{cls}>{html.escape(v)}</dd>")
    body += ["</dl>", "<h2>Summary</h2>", f"<p>{html.escape(legend).replace('`', '')}</p>",
             html_table(summ)]
    if not accuracy.empty:
        body += ["<h2>Accuracy against the vendor</h2>", f"<p>{html.escape(accuracy_text).replace('`', '')}</p>",
                 html_table(_accuracy_strings(accuracy))]
    if totals:
        body += ["<h2>Network totals</h2>", f"<p>{html.escape(TOTALS_LEGEND)}</p>"]
        body += [f"<h3>{html.escape(' · '.join(key))}</h3>{html_table(t)}" for key, t in totals.items()]
    body.append("<h2>Plots</h2>")
    for t, cap, path in figures:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        body.append(f'<figure><h3>{html.escape(t)}</h3><figcaption>{html.escape(cap)}</figcaption>'
                    f'<img alt="{html.escape(t)}" src="data:image/png;base64,{data}"></figure>')
    if not figures:
        body.append("<p>No timed rows: nothing to plot.</p>")
    body += ["<h2>All results</h2>", f'<div class="scroll">{html_table(full, status_col="status")}</div>']
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>")
    out = sweep_dir / "report.html"
    out.write_text(page, encoding="utf-8")
    return out


