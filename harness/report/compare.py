"""What changed between two sweeps: per (impl, shape, device, dtype, pass), NEW's median over OLD's.

    python -m harness.report.compare OLD NEW [--threshold 1.10] [--alpha 0.05] [--fail-on-regression]

Timings are noisy, so a ratio alone proves nothing. As airspeed velocity (asv) does, a row is
flagged only when both hold: the ratio of medians passes the threshold (NEW/OLD >= 1.10 is a
regression, <= 1/1.10 an improvement) AND a two-sided Mann-Whitney U test on the raw per-call
samples says the two distributions differ (p < alpha). Where a side has no samples at all, the
ratio decides alone (asv's fallback). Results that stop being correct are flagged too ('broken').

Writes compare.csv, compare.md and compare.png next to NEW (or into --out) and prints a summary.
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu

from harness.table.schema import FAILURES

from .analysis import IMPL_CASE, REFERENCE, load_results
from .render import markdown_table

THRESHOLD = 1.10
ALPHA = 0.05
FLAGGED = ("regression", "broken")  # what --fail-on-regression fails on
MAX_PRINTED = 20
CARRY = ["status", "time_median_s", "samples", "device_name", "git_rev"]


def _samples(cell) -> np.ndarray | None:
    """The JSON list of per-call seconds, or None when absent or unreadable."""
    if cell is None or (not isinstance(cell, str) and pd.isna(cell)) or str(cell).strip() == "":
        return None
    try:
        values = np.asarray(json.loads(cell), dtype=float)
    except (ValueError, TypeError):
        return None
    values = values[np.isfinite(values)]
    return values if values.size else None


def p_value(old_samples, new_samples) -> float:
    """Two-sided Mann-Whitney U p-value of two sample lists; NaN when a side has none. A side with
    one sample (a slow case under the time budget) still gets a test: it rarely reaches
    significance, which is the honest answer for one sample."""
    a, b = _samples(old_samples), _samples(new_samples)
    if a is None or b is None:
        return math.nan
    if np.ptp(np.concatenate([a, b])) == 0:
        return 1.0  # all identical: no evidence of a difference
    return float(mannwhitneyu(a, b, alternative="two-sided").pvalue)


def _classify(row, threshold: float, alpha: float) -> str:
    if row["_merge"] == "left_only":
        return "removed"
    if row["_merge"] == "right_only":
        return "added"
    so, sn = row["status_old"], row["status_new"]
    if so == "ok" and sn in FAILURES:
        return "broken"
    if so in FAILURES and sn == "ok":
        return "fixed"
    if not (so == "ok" and sn == "ok") or not (row["ratio"] > 0):
        return "not timed"
    significant = row["p_value"] < alpha if not math.isnan(row["p_value"]) else True
    if row["ratio"] >= threshold:
        return "regression" if significant else "noise"
    if row["ratio"] <= 1 / threshold:
        return "improvement" if significant else "noise"
    return "no change"


def compare(old: pd.DataFrame, new: pd.DataFrame, threshold: float = THRESHOLD,
            alpha: float = ALPHA) -> pd.DataFrame:
    """One row per (impl, shape, device, dtype, pass) in either table: both medians, the ratio
    NEW/OLD, the Mann-Whitney p-value and the verdict (`change`)."""
    if threshold <= 1:
        raise ValueError(f"threshold must be > 1 (a ratio such as 1.10), got {threshold}")
    old = old.drop_duplicates(IMPL_CASE)[IMPL_CASE + CARRY]
    new = new.drop_duplicates(IMPL_CASE)[IMPL_CASE + CARRY]
    m = old.merge(new, on=IMPL_CASE, how="outer", suffixes=("_old", "_new"), indicator=True)
    m["ratio"] = (m["time_median_s_new"] / m["time_median_s_old"]).astype("float64")
    m["p_value"] = [p_value(a, b) for a, b in zip(m["samples_old"], m["samples_new"])]
    m["change"] = m.apply(_classify, axis=1, threshold=threshold, alpha=alpha) if len(m) else []
    order = {c: i for i, c in enumerate(["broken", "regression", "fixed", "improvement", "noise",
                                         "no change", "not timed", "added", "removed"])}
    m = m.sort_values(by=["change", "ratio"], key=lambda s: s.map(order) if s.name == "change" else -s,
                      na_position="last")
    return m.drop(columns=["_merge", "samples_old", "samples_new"]).reset_index(drop=True)


# ---------------------------------------------------------------------------------------- output
def _display(c: pd.DataFrame) -> pd.DataFrame:
    def ms(v):
        return "" if pd.isna(v) else f"{v * 1e3:.4g}"
    return pd.DataFrame({
        "change": c["change"], "impl": c["impl"], "shape": c["shape"], "device": c["device"],
        "dtype": c["dtype"], "pass": c["pass"],
        "old ms": c["time_median_s_old"].map(ms), "new ms": c["time_median_s_new"].map(ms),
        "new/old": c["ratio"].map(lambda v: "" if pd.isna(v) else f"{v:.3f}"),
        "p": c["p_value"].map(lambda v: "" if pd.isna(v) else f"{v:.2g}"),
        "old status": c["status_old"].fillna(""), "new status": c["status_new"].fillna(""),
    }).astype(str)


def summary_line(c: pd.DataFrame) -> str:
    counts = c["change"].value_counts()
    both = c[c["change"].isin(["regression", "improvement", "noise", "no change"])]
    geo = float(np.exp(np.log(both["ratio"]).mean())) if len(both) else math.nan
    parts = [f"{counts.get(k, 0)} {k}" for k in ("regression", "improvement", "broken", "fixed", "noise",
                                                  "no change", "not timed", "added", "removed")
             if counts.get(k, 0) or k in ("regression", "improvement")]
    return f"{len(c)} rows: " + ", ".join(parts) + (f"; geometric mean new/old {geo:.3f}" if not math.isnan(geo) else "")


def plot(c: pd.DataFrame, threshold: float, max_rows: int = 60):
    """Ratio NEW/OLD per row timed ok on both sides (log scale), the no-change band shaded,
    flagged rows coloured; the largest changes first when there are too many rows to read."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from . import plots  # noqa: F401  (the report's seaborn look)

    d = c[c["change"].isin(["regression", "improvement", "noise", "no change"])].copy()
    if d.empty:
        return None
    d["size"] = np.abs(np.log(d["ratio"]))
    d["flagged"] = d["change"].isin(["regression", "improvement"])
    d = d.sort_values(["flagged", "size"], ascending=False).head(max_rows).sort_values("ratio")
    d["y"] = np.arange(len(d))
    labels = d["impl"] + " · " + d["shape"] + " · " + d["dtype"] + " · " + d["pass"]
    colors = {"regression": "#c62828", "improvement": "#2e7d32", "noise": "#f9a825", "no change": "0.6"}
    names = {"regression": "regression (significant)", "improvement": "improvement (significant)",
             "noise": "past the threshold, not significant", "no change": "within the threshold"}
    fig, ax = plt.subplots(figsize=(9.5, 1.2 + 0.26 * len(d)))
    ax.axvspan(1 / threshold, threshold, color="0.92", zorder=0)
    ax.axvline(1, color="0.4", lw=1)
    for change in colors:
        s = d[d["change"] == change]
        if len(s):
            ax.scatter(s["ratio"], s["y"], color=colors[change], s=40, zorder=3, label=names[change])
    ax.set_yticks(d["y"], labels, fontsize=8)
    ax.set_ylim(-0.7, len(d) - 0.3)
    ax.set_xscale("log")
    lo, hi = min(d["ratio"].min(), 1 / threshold), max(d["ratio"].max(), threshold)
    ax.set_xlim(lo / 1.3, hi * 1.3)
    span = hi / lo
    subs = (1.0,) if span > 100 else (1, 2, 5) if span > 3 else (1, 1.25, 1.5, 2, 3, 5, 8)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs, numticks=8))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"new median / old median (log scale; > 1 is slower; grey band: within ×{threshold:g})")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8, frameon=False)
    shown = "" if len(d) == c["change"].isin(list(colors)).sum() else f", the {len(d)} largest"
    ax.set_title(f"Change in median time per case{shown}", pad=36)
    fig.tight_layout()
    return fig


def caveats(c: pd.DataFrame) -> list[str]:
    """Reasons to distrust the verdicts: different hardware, or the vendor baseline itself moving
    (its code rarely changes between runs, so a significant change there means the conditions did:
    load, threads, clocks; on a shared machine the test is then right that the timings differ)."""
    out = []
    old_dev, new_dev = set(c["device_name_old"].dropna()), set(c["device_name_new"].dropna())
    if old_dev and new_dev and old_dev != new_dev:
        out.append(f"different devices: {', '.join(sorted(old_dev))} vs {', '.join(sorted(new_dev))}")
    ref = c[(c["impl"] == REFERENCE) & c["change"].isin(["regression", "improvement"])]
    if len(ref):
        out.append(f"{REFERENCE} itself changed significantly in {len(ref)} of "
                   f"{int((c['impl'] == REFERENCE).sum())} rows: the measuring conditions differ between the runs "
                   "(load, threads, clocks), so other flags may be the machine, not the code")
    return out


def write(c: pd.DataFrame, out: pathlib.Path, threshold: float, alpha: float, old_dir, new_dir) -> list[pathlib.Path]:
    """compare.csv (every column), compare.md (summary and table) and compare.png into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "compare.csv", out / "compare.md"]
    c.to_csv(paths[0], index=False)
    md = ["# convbench compare", "", f"- old: `{old_dir}`", f"- new: `{new_dir}`",
          f"- flagged when new/old passes {threshold:g} (or 1/{threshold:g}) and Mann-Whitney U p < {alpha:g}",
          f"- {summary_line(c)}"] + [f"- **warning**: {w}" for w in caveats(c)] + [""]
    if (out / "compare.png").exists():
        (out / "compare.png").unlink()
    fig = plot(c, threshold)
    if fig is not None:
        import matplotlib.pyplot as plt
        fig.savefig(out / "compare.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(out / "compare.png")
        md += ["![ratio new/old](compare.png)", ""]
    md += [markdown_table(_display(c)), ""]
    paths[1].write_text("\n".join(md), encoding="utf-8")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.report.compare", description=__doc__.splitlines()[0])
    parser.add_argument("old", type=pathlib.Path, help="the earlier sweep folder (holding results.parquet)")
    parser.add_argument("new", type=pathlib.Path, help="the later sweep folder")
    parser.add_argument("--threshold", type=float, default=THRESHOLD,
                        help=f"ratio of medians that counts as a change (default {THRESHOLD})")
    parser.add_argument("--alpha", type=float, default=ALPHA,
                        help=f"significance level of the Mann-Whitney U test (default {ALPHA})")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="output folder (default: NEW)")
    parser.add_argument("--fail-on-regression", action="store_true",
                        help="exit 1 when any row is a significant regression or stopped being correct")
    args = parser.parse_args(argv)
    try:
        old, new = load_results(args.old), load_results(args.new)
        c = compare(old, new, args.threshold, args.alpha)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    paths = write(c, args.out or args.new, args.threshold, args.alpha, args.old, args.new)
    print(summary_line(c))
    for warning in caveats(c):
        print(f"warning: {warning}")
    flagged = c[c["change"].isin(["regression", "improvement", "broken", "fixed"])]
    for r in flagged.head(MAX_PRINTED).to_dict("records"):
        ratio = "" if pd.isna(r["ratio"]) else f"  {r['ratio']:.2f}x (p={r['p_value']:.2g})"
        print(f"  {r['change']:<11} " + " ".join(str(r[k]) for k in IMPL_CASE) + ratio)
    if len(flagged) > MAX_PRINTED:
        print(f"  ... and {len(flagged) - MAX_PRINTED} more flagged rows in compare.md")
    print("wrote " + ", ".join(str(p) for p in paths))
    if args.fail_on_regression and c["change"].isin(FLAGGED).any():
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
