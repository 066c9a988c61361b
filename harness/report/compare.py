"""What changed between two sweeps: per (impl, shape, device, dtype, pass), NEW against OLD.

    python -m harness.report.compare OLD NEW [--threshold 1.05] [--alpha 0.05] [--fail-on-regression]

Timings move with the machine (frequency, allocator and page state, neighbours, a shared host), so,
as bench-perf and nvbench do, each row is judged on what drift cancels in: its time relative to
torch's own conv measured side by side in the same rounds (`vs_vendor`; the basis "vs vendor"), and
the test is made at the level at which values are independent: one value per worker process
(`timing.processes`, spread over the job), by a moderated t-test on their logs whose variance is
shrunk toward the other rows' of the same implementation (harness.report.moderated): three values a
side alone have no power, and rows that happen to agree look falsely certain. A row is flagged only
when both hold: the ratio passes the threshold (NEW/OLD >= 1.05 is a regression, <= 1/1.05 an
improvement) AND q < alpha, where q is the p-value adjusted for the number of rows compared
(Benjamini-Hochberg, `q_value`): a sweep tests hundreds of rows at once, and at p < 0.05 one unchanged
row in twenty would pass by chance.

Rows without a vendor ratio (the `cudnn` rows themselves, `timing.vs_vendor=false`, tables of older
versions) are judged on absolute medians: per-process medians when recorded (the same test), else the raw
samples (Mann-Whitney U, an overconfident test for a run-to-run question, said so in a warning). There,
if the reference itself moved past the threshold on the same case, the row is 'cannot tell' rather
than flagged; so is any change measured on a machine its own check called unfit to time
(`machine_warning`: load, other processes, governor); a `cudnn` row that moved while torch stayed the same is 'reference moved': the machine
changed, not the code. Results that stop being correct are flagged too ('broken').

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
from scipy.stats import false_discovery_control, mannwhitneyu

from harness.table.schema import FAILURES

from . import moderated
from .analysis import CASE, IMPL_CASE, REFERENCE, load_results
from .render import markdown_table

THRESHOLD = 1.05
ALPHA = 0.05
FLAGGED = ("regression", "broken")  # what --fail-on-regression fails on
MAX_PRINTED = 20
CARRY = ["status", "time_median_s", "samples", "round_medians", "vs_vendor", "vs_vendor_rounds", "device_name",
         "git_rev", "torch", "machine_warning"]
VS_VENDOR, ROUNDS, SAMPLES = "vs vendor", "rounds", "samples"  # what a row is judged on


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


def _judge(row) -> tuple[str, float, object, object]:
    """(basis, the ratio judged, OLD's and NEW's values to test) for one merged row: the per-process
    ratios to the vendor, else per-process medians (two or more a side), else raw samples."""
    if pd.notna(row.get("vs_vendor_old")) and pd.notna(row.get("vs_vendor_new")):
        return VS_VENDOR, row["vs_vendor_new"] / row["vs_vendor_old"], \
            _samples(row.get("vs_vendor_rounds_old")), _samples(row.get("vs_vendor_rounds_new"))
    a, b = _samples(row.get("round_medians_old")), _samples(row.get("round_medians_new"))
    if a is not None and b is not None and len(a) >= 2 and len(b) >= 2:
        return ROUNDS, row["ratio"], a, b
    return SAMPLES, row["ratio"], row.get("samples_old"), row.get("samples_new")


def p_values(bases: list[str], impls: list[str], values: list[tuple], tested: list[bool]) -> list[float]:
    """Each row's p-value: per-process values by the moderated t-test on their logs, its variance
    prior estimated from the tested rows of the same basis and implementation (harness.report.
    moderated: an implementation's rows share its noise, a Python loop's far more than a library
    call's, so a prior pooled over all would make the noisy ones overconfident); raw samples by
    Mann-Whitney. NaN where there is nothing to test."""
    out = [math.nan] * len(bases)
    for group in dict.fromkeys(zip(bases, impls)):
        if group[0] == SAMPLES:
            continue
        rows = [i for i, g in enumerate(zip(bases, impls)) if g == group]
        stats = {i: moderated.row_stats(*values[i]) for i in rows}
        s0_2, d0 = moderated.prior([st for i, st in stats.items() if st is not None and tested[i]])
        for i, st in stats.items():
            if st is not None:
                out[i] = moderated.p_value(st, s0_2, d0)
    for i, b in enumerate(bases):
        if b == SAMPLES:
            out[i] = p_value(*values[i])
    return out


def _unfit(warning) -> bool:
    """A busy machine (the job's load or other processes' CPU share: harness.measure.machine). A
    governor warning alone is not: a laptop's ramping clocks are the same in both runs."""
    return isinstance(warning, str) and ("load average" in warning or "other processes" in warning)


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
    if not (so == "ok" and sn == "ok") or not (row["judged"] > 0):
        return "not timed"
    significant = row["q_value"] < alpha if not math.isnan(row["q_value"]) else True
    moved = row["judged"] >= threshold or row["judged"] <= 1 / threshold
    if moved and significant and (_unfit(row.get("machine_warning_old")) or _unfit(row.get("machine_warning_new"))):
        return "cannot tell"  # measured on a machine its own check called unfit to time
    if moved and significant and row["basis"] != VS_VENDOR:
        same_torch = str(row.get("torch_old", "")) == str(row.get("torch_new", ""))
        if row["impl"] == REFERENCE and same_torch:
            return "reference moved"
        ref = row.get("reference_ratio")
        if pd.notna(ref) and (ref >= threshold or ref <= 1 / threshold):
            return "cannot tell"
    if row["judged"] >= threshold:
        return "regression" if significant else "noise"
    if row["judged"] <= 1 / threshold:
        return "improvement" if significant else "noise"
    return "no change"


def q_values(m: pd.DataFrame) -> pd.Series:
    """Benjamini-Hochberg adjusted p-values over the rows timed ok on both sides (the tests this
    compare makes), NaN elsewhere: a flag then bounds the expected share of false alarms among the
    flags at alpha, however many rows the sweeps hold."""
    tested = ((m["status_old"] == "ok") & (m["status_new"] == "ok") & (m["judged"] > 0)
              & m["p_value"].astype("float64").notna())
    q = pd.Series(math.nan, index=m.index, dtype="float64")
    if tested.any():
        q[tested] = false_discovery_control(m.loc[tested, "p_value"].astype("float64").clip(0, 1), method="bh")
    return q


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
    ref = m[m["impl"] == REFERENCE].set_index(CASE)["ratio"]
    m["reference_ratio"] = [ref.get(tuple(k), math.nan) if len(ref) else math.nan
                            for k in m[CASE].itertuples(index=False)]
    judged = [_judge(r) for r in m.to_dict("records")]
    m["basis"] = [j[0] for j in judged]
    m["judged"] = pd.Series([j[1] for j in judged], index=m.index, dtype="float64")
    tested = ((m["status_old"] == "ok") & (m["status_new"] == "ok") & (m["judged"] > 0)).tolist()
    m["p_value"] = p_values(m["basis"].tolist(), m["impl"].tolist(), [j[2:] for j in judged], tested)
    m["q_value"] = q_values(m)
    m["change"] = m.apply(_classify, axis=1, threshold=threshold, alpha=alpha) if len(m) else []
    order = {c: i for i, c in enumerate(["broken", "regression", "fixed", "improvement", "cannot tell",
                                         "reference moved", "noise", "no change", "not timed", "added",
                                         "removed"])}
    m = m.sort_values(by=["change", "judged"], key=lambda s: s.map(order) if s.name == "change" else -s,
                      na_position="last")
    drop = ["_merge"] + [f"{c}_{side}" for c in ("samples", "round_medians", "vs_vendor_rounds") for side in ("old", "new")]
    return m.drop(columns=drop).reset_index(drop=True)


# ---------------------------------------------------------------------------------------- output
def _display(c: pd.DataFrame) -> pd.DataFrame:
    def ms(v):
        return "" if pd.isna(v) else f"{v * 1e3:.4g}"
    return pd.DataFrame({
        "change": c["change"], "impl": c["impl"], "shape": c["shape"], "device": c["device"],
        "dtype": c["dtype"], "pass": c["pass"],
        "old ms": c["time_median_s_old"].map(ms), "new ms": c["time_median_s_new"].map(ms),
        "new/old": c["ratio"].map(lambda v: "" if pd.isna(v) else f"{v:.3f}"),
        "judged": c["judged"].map(lambda v: "" if pd.isna(v) else f"{v:.3f}"), "basis": c["basis"].fillna(""),
        "p": c["p_value"].map(lambda v: "" if pd.isna(v) else f"{v:.2g}"),
        "q": c["q_value"].map(lambda v: "" if pd.isna(v) else f"{v:.2g}"),
        "old status": c["status_old"].fillna(""), "new status": c["status_new"].fillna(""),
    }).astype(str)


def summary_line(c: pd.DataFrame) -> str:
    counts = c["change"].value_counts()
    both = c[c["change"].isin(["regression", "improvement", "noise", "no change", "cannot tell", "reference moved"])]
    geo = float(np.exp(np.log(both["ratio"]).mean())) if len(both) else math.nan
    parts = [f"{counts.get(k, 0)} {k}" for k in ("regression", "improvement", "broken", "fixed", "cannot tell",
                                                  "reference moved", "noise", "no change", "not timed", "added",
                                                  "removed")
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
    d["ratio"] = d["judged"]  # what was judged: the ratio to the vendor where there is one
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
    ax.set_xlabel(f"new / old, relative to the vendor where measured (log scale; > 1 is slower; "
                  f"grey band: within ×{threshold:g})")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8, frameon=False)
    shown = "" if len(d) == c["change"].isin(list(colors)).sum() else f", the {len(d)} largest"
    ax.set_title(f"Change in median time per case{shown}", pad=36)
    fig.tight_layout()
    return fig


def caveats(c: pd.DataFrame) -> list[str]:
    """Reasons to distrust the verdicts: different hardware, the vendor baseline itself moving (its
    code rarely changes between runs, so a change there means the conditions did), rows judged on raw
    samples of one process each."""
    out = []
    old_dev, new_dev = set(c["device_name_old"].dropna()), set(c["device_name_new"].dropna())
    if old_dev and new_dev and old_dev != new_dev:
        out.append(f"different devices: {', '.join(sorted(old_dev))} vs {', '.join(sorted(new_dev))}")
    moved = c[(c["impl"] == REFERENCE) & c["change"].isin(["regression", "improvement", "reference moved"])]
    if len(moved):
        out.append(f"{REFERENCE} itself moved in {len(moved)} of {int((c['impl'] == REFERENCE).sum())} rows: the "
                   "measuring conditions differ between the runs (load, clocks, memory state); rows with a "
                   "vendor ratio are judged on it, the others are 'cannot tell' where their reference moved")
    unfit = c[c["machine_warning_old"].map(_unfit) | c["machine_warning_new"].map(_unfit)] \
        if "machine_warning_old" in c else c.iloc[:0]
    if len(unfit):
        out.append(f"{len(unfit)} rows were measured on a machine unfit to time (machine_warning, e.g. "
                   f"'{next(w for w in pd.concat([unfit['machine_warning_old'], unfit['machine_warning_new']]) if _unfit(w))}'): "
                   "their changes are 'cannot tell', not flags")
    raw = c[(c["basis"] == SAMPLES) & c["change"].isin(["regression", "improvement"])]
    if len(raw):
        out.append(f"{len(raw)} flagged rows were judged on raw samples from one process each (tables without "
                   "rounds): their p-values understate run-to-run variation")
    return out


def write(c: pd.DataFrame, out: pathlib.Path, threshold: float, alpha: float, old_dir, new_dir) -> list[pathlib.Path]:
    """compare.csv (every column), compare.md (summary and table) and compare.png into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "compare.csv", out / "compare.md"]
    c.to_csv(paths[0], index=False)
    md = ["# convbench compare", "", f"- old: `{old_dir}`", f"- new: `{new_dir}`",
          f"- flagged when new/old (relative to the vendor in the same rounds where measured) passes "
          f"{threshold:g} (or 1/{threshold:g}) and q < {alpha:g} (moderated t-test on per-process logs; q: p adjusted "
          "for the number of rows compared, Benjamini-Hochberg)",
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
                        help=f"significance level of the per-round test (default {ALPHA})")
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
        ratio = "" if pd.isna(r["judged"]) else f"  {r['judged']:.2f}x {r['basis']} (p={r['p_value']:.2g}, q={r['q_value']:.2g})"
        print(f"  {r['change']:<11} " + " ".join(str(r[k]) for k in IMPL_CASE) + ratio)
    if len(flagged) > MAX_PRINTED:
        print(f"  ... and {len(flagged) - MAX_PRINTED} more flagged rows in compare.md")
    print("wrote " + ", ".join(str(p) for p in paths))
    if args.fail_on_regression and c["change"].isin(FLAGGED).any():
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
