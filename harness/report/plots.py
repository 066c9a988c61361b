"""The report's figures. Each function takes the enriched results table (`analysis.enrich`) and
returns a matplotlib Figure, or None when the sweep has no data for it (the report then leaves
the plot out rather than drawing an empty frame).

Conventions, so the figures read alike: one colour per implementation everywhere (`cudnn` first),
shapes on the vertical axis (their labels are long), log scales wherever values span decades,
units in every axis label, and results that are not `ok` never drawn as the fastest.
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import TwoSlopeNorm
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from .analysis import REFERENCE

sns.set_theme(style="whitegrid", context="notebook", font_scale=0.9)

STATUS_MARK = {"incorrect": "✗ wrong", "error": "error", "crashed": "crashed", "timeout": "timeout",
               "unsupported": "n/a", "skipped": "skipped"}


# ---------------------------------------------------------------------------------------- helpers
def _timed(df: pd.DataFrame, statuses=("ok",)) -> pd.DataFrame:
    return df[df["status"].isin(statuses) & (df["time_median_s"] > 0)]


BUILTINS = (REFERENCE, "unfold", "fft", "loop", "winograd")  # fixed colours, so every report reads alike


def palette(df: pd.DataFrame) -> dict[str, tuple]:
    """impl -> colour: the built-ins always in the same colour, other implementations after them."""
    present = set(df["impl"].dropna())
    others = sorted(present - set(BUILTINS))
    base = sns.color_palette("colorblind", 10)
    order = [0, 1, 2, 4, 9, 5, 6, 8, 3, 7]  # blue, orange, green, purple first: far apart for any eye
    colours = [base[order[i % 10]] for i in range(len(BUILTINS) + len(others))]
    pal = dict(zip(list(BUILTINS) + others, colours))
    return {impl: c for impl, c in pal.items() if impl in present}


def case_labels(df: pd.DataFrame) -> pd.Series:
    """A short, unique label per shape: 'layer  shape' where the layer name is known."""
    layer = df["layer"].fillna("")
    return (layer + "  " + df["shape"].fillna("?")).str.strip().where(layer != "", df["shape"].fillna("?"))


def _facet_title(keys: tuple, names: list[str]) -> str:
    return " · ".join(str(k) for k, n in zip(keys, names) if pd.notna(k) and str(k) != "")


ORDER = {"dtype": ["float32", "float64", "float16", "bfloat16"], "pass": ["forward", "backward"]}


def _groups(d: pd.DataFrame, facets: list[str]) -> list[tuple[tuple, pd.DataFrame]]:
    """d split into panels, in a reader's order: float32 before float16, forward before backward."""
    def rank(keys):
        return tuple((ORDER[f].index(k), "") if k in ORDER.get(f, []) else (99, str(k))
                     for f, k in zip(facets, keys))
    groups = [((k if isinstance(k, tuple) else (k,)), g) for k, g in d.groupby(facets, sort=False, dropna=False)]
    return sorted(groups, key=lambda kg: rank(kg[0]))


def _varying(df: pd.DataFrame, cols: list[str]) -> list[str]:
    """The facet columns that actually vary (a single-device sweep needs no device panels)."""
    out = [c for c in cols if df[c].nunique(dropna=True) > 1]
    return out or cols[-1:]


def _times_formatter():
    def fmt(s, _):
        for unit, f in (("s", 1), ("ms", 1e3), ("µs", 1e6)):
            if s * f >= 1 - 1e-9:
                return f"{s * f:g} {unit}"
        return f"{s * 1e9:g} ns"
    return FuncFormatter(fmt)


def _ratio_formatter():
    return FuncFormatter(lambda v, _: f"{v:g}×")


def _legend(fig, handles):
    """Outside the panels, on the right: never over data or the title, whatever the figure's size."""
    fig.legend(handles=handles, loc="outside right center", frameon=False)


def _log_ticks(axis, lo: float, hi: float, fmt) -> None:
    """Readable ticks on a log axis: 1-2-5 steps over a narrow range, decades over a wide one."""
    narrow = hi / lo < 100 if lo > 0 else False
    axis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5) if narrow else (1.0,), numticks=6))
    axis.set_major_formatter(fmt)
    axis.set_minor_formatter(NullFormatter())


def _grid(n_panels: int, ncols: int, panel_w: float, panel_h: float, labels=(), extra_w: float = 0, **kw):
    """Panels in a constrained layout, the figure widened for the longest tick label in `labels`
    (shape names on the vertical axis) and `extra_w` inches (legend, colour bar)."""
    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    label_w = 0.075 * max((len(str(x)) for x in labels), default=0)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_w * ncols + label_w + extra_w, max(panel_h, 2.4) * nrows),
                             squeeze=False, layout="constrained", **kw)
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n_panels])


# ----------------------------------------------------------------------- 1. time vs problem size
def time_vs_size(df: pd.DataFrame):
    """Median time against FLOPs, log-log, one colour per implementation, panels per pass × device
    (× dtype when there are several). Points are shapes; the faint line only joins one
    implementation's points in size order, to follow it by eye."""
    d = _timed(df).dropna(subset=["flops"])
    d = d[d["flops"] > 0]
    if d.empty:
        return None
    pal = palette(df)
    facets = [c for c in ("device", "dtype") if d[c].nunique() > 1] + ["pass"]
    groups = _groups(d, facets)
    ncols = d["pass"].nunique()
    fig, axes = _grid(len(groups), ncols, 5.6, 4.2, extra_w=1.6, sharex=True, sharey=True)
    lo, hi = d["flops"].min() / 1.5, d["flops"].max() * 1.5
    tlo, thi = d["time_median_s"].min() / 2, d["time_median_s"].max() * 2
    for ax, (keys, sub) in zip(axes, groups):
        for impl, s in sub.groupby("impl"):
            s = s.sort_values("flops")
            ax.plot(s["flops"], s["time_median_s"], color=pal[impl], alpha=0.35, lw=1)
            ax.scatter(s["flops"], s["time_median_s"], color=pal[impl], s=30, zorder=3,
                       edgecolor="white", lw=0.5)
        peak = sub["peak_gflops"].dropna()
        if len(peak):
            xs = np.array([lo, hi])
            ax.plot(xs, xs / (float(peak.median()) * 1e9), color="#c00", lw=1, ls="--", zorder=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(tlo, thi)  # the peak line is a guide: it must not squash the data
        _log_ticks(ax.xaxis, lo, hi, FuncFormatter(lambda v, _: f"{v:.0e}".replace("e+0", "e").replace("e+", "e")))
        _log_ticks(ax.yaxis, tlo, thi, _times_formatter())
        ax.set_title(_facet_title(keys, facets))
        ax.set_xlabel("problem size (FLOP, log scale)")
        ax.set_ylabel("median time per call (log scale)")
        ax.label_outer()
    handles = [Line2D([], [], marker="o", color=c, label=i) for i, c in pal.items() if i in set(d["impl"])]
    handles.append(Line2D([], [], color="#c00", ls="--", label="time at the measured peak"))
    _legend(fig, handles)
    fig.suptitle("Time against problem size (ok results only; lower is better)")
    return fig


# ----------------------------------------------------------------------------- 2. speedup vs cudnn
def speedup(df: pd.DataFrame):
    """Speedup against cudnn per shape (log), the fastest correct implementation starred,
    incorrect results drawn hollow in grey: fast, but not a result."""
    d = df[df["speedup"].notna()].copy()
    if d.empty:
        return None
    pal = palette(df)
    d["case"] = case_labels(d)
    facets = _varying(d, ["device", "dtype", "pass"])
    order = (d.drop_duplicates("case").sort_values(["suite", "flops"], na_position="last")["case"].tolist())
    groups = _groups(d, facets)
    fig, axes = _grid(len(groups), 2, 5.0, 0.9 + 0.32 * len(order), labels=order, extra_w=2.2,
                      sharex=True, sharey=True)
    ypos = {c: i for i, c in enumerate(order)}
    for ax, (keys, sub) in zip(axes, groups):
        ax.axvline(1, color="0.3", lw=1)
        for impl, s in sub.groupby("impl"):
            ok = s[s["status"] == "ok"]
            bad = s[s["status"] != "ok"]
            y = ok["case"].map(ypos).astype("float64") + (list(pal).index(impl) - (len(pal) - 1) / 2) * 0.12
            err = np.array([(ok["speedup"] - ok["speedup_low"]).clip(lower=0).fillna(0),
                            (ok["speedup_high"] - ok["speedup"]).clip(lower=0).fillna(0)])
            ax.errorbar(ok["speedup"], y, xerr=err, fmt="none", ecolor=pal[impl], elinewidth=1, capsize=2, zorder=2)
            quiet = ~ok["noisy"].fillna(False).astype(bool)
            ax.scatter(ok["speedup"][quiet], y[quiet], color=pal[impl], s=36, zorder=3, edgecolor="white", lw=0.5)
            ax.scatter(ok["speedup"][~quiet], y[~quiet], color="white", s=36, zorder=3, edgecolor=pal[impl], lw=1.2)
            win = ok[ok["winner"]]
            ax.scatter(win["speedup"], y[ok["winner"]], marker="*", s=240, color=pal[impl],
                       edgecolor="black", lw=0.8, zorder=4)
            if len(bad):
                ax.scatter(bad["speedup"], bad["case"].map(ypos).astype("float64"), marker="X", s=60, color="none",
                           edgecolor="#c00", lw=1.2, zorder=3)
        ax.set_title(_facet_title(keys, facets))
        ax.set_xscale("log")
        ax.set_xlabel(f"speedup vs {REFERENCE} (× faster, log scale)")
    lo, hi = min(d["speedup"].min(), 0.5) / 1.5, max(d["speedup"].max(), 2) * 1.5
    axes[0].set_xlim(lo, hi)
    for ax in axes:
        _log_ticks(ax.xaxis, lo, hi, _ratio_formatter())
        ax.label_outer()  # shared axes: name them once
    for ax in axes:
        ax.set_yticks(range(len(order)), order)
        ax.set_ylim(len(order) - 0.5, -0.5)
    handles = [Line2D([], [], marker="o", ls="", color=c, label=i) for i, c in pal.items()]
    handles += [Line2D([], [], marker="o", ls="", color="white", mec="0.4", label="noisy (see noisy_reason)"),
                Line2D([], [], marker="*", ls="", color="0.6", mec="black", ms=13, label="fastest correct"),
                Line2D([], [], marker="X", ls="", color="none", mec="#c00", ms=8, label="incorrect (not ranked)")]
    _legend(fig, handles)
    fig.suptitle(f"Speedup against {REFERENCE} per shape (right of the line is faster)")
    return fig


# ------------------------------------------------------------------------ 3. GFLOP/s and the peak
def throughput(df: pd.DataFrame):
    """Achieved GFLOP/s per shape against the measured matmul ceiling; % of peak on the top axis."""
    d = _timed(df).dropna(subset=["gflops"]).copy()
    if d.empty:
        return None
    pal = palette(df)
    d["case"] = case_labels(d)
    facets = _varying(d, ["device", "dtype", "pass"])
    order = d.drop_duplicates("case").sort_values(["suite", "flops"], na_position="last")["case"].tolist()
    ypos = {c: i for i, c in enumerate(order)}
    groups = _groups(d, facets)
    fig, axes = _grid(len(groups), 2, 5.0, 1.1 + 0.32 * len(order), labels=order, extra_w=2.4, sharey=True)
    for ax, (keys, sub) in zip(axes, groups):
        log = sub["gflops"].max() / sub["gflops"].min() > 10
        for impl, s in sub.groupby("impl"):
            y = s["case"].map(ypos).astype("float64") + (list(pal).index(impl) - (len(pal) - 1) / 2) * 0.12
            ax.scatter(s["gflops"], y, color=pal[impl], s=36, zorder=3, edgecolor="white", lw=0.5)
        peak = sub["peak_gflops"].dropna()
        xmax = max(sub["gflops"].max(), peak.max() if len(peak) else 0) * 1.3
        xmin = sub["gflops"].min() / 1.5 if log else 0
        if log:
            ax.set_xscale("log")
            _log_ticks(ax.xaxis, xmin, xmax, FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlim(xmin, xmax)
        if len(peak):
            p = float(peak.median())
            ax.axvline(p, color="#c00", lw=1.5, ls="--")
            top = ax.secondary_xaxis("top", functions=(lambda x, p=p: 100 * x / p, lambda q, p=p: q * p / 100))
            top.set_xlabel(f"% of measured peak ({p:,.0f} GFLOP/s)", fontsize=8)
            if log:
                _log_ticks(top.xaxis, 100 * xmin / p, 100 * xmax / p, FuncFormatter(lambda v, _: f"{v:g}%"))
                top.tick_params(which="minor", length=0)
            else:
                top.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0f}%"))
            top.tick_params(labelsize=8)
        ax.set_title(_facet_title(keys, facets))
        ax.set_xlabel("GFLOP/s" + (" (log scale)" if log else ""))
        ax.set_yticks(range(len(order)), order)
        ax.set_ylim(len(order) - 0.5, -0.5)
    handles = [Line2D([], [], marker="o", ls="", color=c, label=i) for i, c in pal.items()]
    handles.append(Line2D([], [], color="#c00", ls="--", label="measured peak (large matmul)"))
    _legend(fig, handles)
    fig.suptitle("Achieved throughput (ok results only; further right is better)")
    return fig


# ------------------------------------------------------------------------------- 4. correctness
def correctness(df: pd.DataFrame):
    """rel_err / tol per implementation × shape: green well inside the tolerance, red beyond it;
    cells that did not produce a checked result say why."""
    d = df.copy()
    if d.empty or (d["rel_err"].isna().all() and not d["status"].isin(STATUS_MARK).any()):
        return None
    pal = palette(df)
    d["case"] = case_labels(d)
    d["ratio"] = np.log10((d["rel_err"] / d["tol"]).where(d["tol"] > 0).clip(lower=1e-6))
    facets = _varying(d, ["device", "dtype", "pass"])
    order = d.drop_duplicates("case").sort_values(["suite", "flops"], na_position="last")["case"].tolist()
    groups = _groups(d, facets)
    vals = d["ratio"].dropna()
    vmin = min(-1.0, math.floor(vals.min())) if len(vals) else -4
    vmax = max(1.0, math.ceil(vals.max())) if len(vals) else 1
    norm = TwoSlopeNorm(vmin=vmin, vcenter=0, vmax=vmax)
    cmap = sns.diverging_palette(145, 10, s=80, l=55, as_cmap=True)
    ncols = min(len(groups), 2)  # two panels a row keep the shape names readable in the page
    fig, axes = _grid(len(groups), ncols, 0.75 * len(pal) + 0.6, 1.2 + 0.34 * len(order), labels=order,
                      extra_w=1.2, sharey=True)
    for ax, (keys, sub) in zip(axes, groups):
        mat = sub.pivot_table(index="case", columns="impl", values="ratio", aggfunc="max", dropna=False)
        mat = mat.reindex(index=order, columns=list(pal))
        status = sub.drop_duplicates(["case", "impl"]).set_index(["case", "impl"])["status"]
        ax.imshow(mat.to_numpy(dtype=float), cmap=cmap, norm=norm, aspect="auto")
        for i, case in enumerate(order):
            for j, impl in enumerate(pal):
                st = status.get((case, impl))
                if st is None or pd.isna(st):
                    continue
                if st in STATUS_MARK:
                    fail = st in ("incorrect", "error", "crashed", "timeout")
                    ax.text(j, i, STATUS_MARK[st], ha="center", va="center", fontsize=7,
                            color="#900" if fail else "0.45", fontweight="bold" if fail else "normal")
        ax.set_xticks(range(len(pal)), list(pal), rotation=30, ha="right")
        ax.set_yticks(range(len(order)), order)
        ax.set_xticks(np.arange(-0.5, len(pal)), minor=True)
        ax.set_yticks(np.arange(-0.5, len(order)), minor=True)
        ax.grid(False)
        ax.grid(which="minor", color="white", lw=1.5)
        ax.tick_params(which="minor", length=0)
        ax.set_title(_facet_title(keys, facets), fontsize=10)
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    cb = fig.colorbar(sm, ax=axes, shrink=0.9, pad=0.02, aspect=25)
    cb.set_label("rel. error / tolerance (> 1 fails)")
    cb.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"$10^{{{v:g}}}$" if v else "1 (tol)"))
    fig.suptitle("Correctness against the float64 reference (blank: no error measured)")
    return fig


# ------------------------------------------------------------------------------- 5. the crossover
FAMILY = ["device", "dtype", "pass", "n", "c_in", "h", "w", "c_out", "stride", "dilation", "groups", "bias"]


def kernel_families(df: pd.DataFrame, min_sizes: int = 3) -> pd.DataFrame:
    """Rows whose problems differ only in kernel size (and the padding that goes with it), in
    families of at least `min_sizes` kernel sizes; the `kernels` suite when the sweep has it."""
    d = df.dropna(subset=["kh", "n", "c_in", "h", "w", "c_out"])
    if (d["suite"] == "kernels").any():
        d = d[d["suite"] == "kernels"]
    if d.empty:
        return d
    sizes = d.groupby(FAMILY, dropna=False)["kh"].transform("nunique")
    return d[sizes >= min_sizes]


def crossover(df: pd.DataFrame):
    """Time against kernel size, one line per implementation, with where the fastest correct
    implementation changes (e.g. FFT overtaking the direct methods)."""
    d = kernel_families(df)
    d = d[d["status"].isin(["ok", "incorrect"]) & (d["time_median_s"] > 0)]
    if d.empty or d["kh"].nunique() < 3:
        return None
    pal = palette(df)
    d = d.assign(family=d["n"].astype(str) + "," + d["c_in"].astype(str) + "," + d["h"].astype(str) + ","
                 + d["w"].astype(str) + "→" + d["c_out"].astype(str) + " s" + d["stride"].fillna("?"))
    facets = _varying(d, ["family", "device", "dtype", "pass"])
    groups = _groups(d, facets)
    fig, axes = _grid(len(groups), 2, 5.2, 3.8, extra_w=1.2, sharex=True)
    ks = sorted(d["kh"].unique())
    for ax, (keys, sub) in zip(axes, groups):
        for impl, s in sub.groupby("impl"):
            ok = s[s["status"] == "ok"].sort_values("kh")
            ax.plot(ok["kh"], ok["time_median_s"], marker="o", color=pal[impl], label=impl)
            spread = ok["time_iqr_s"].fillna(0) / 2  # the samples' spread: how far to trust a crossing
            ax.fill_between(ok["kh"], (ok["time_median_s"] - spread).clip(lower=ok["time_median_s"] / 10),
                            ok["time_median_s"] + spread, color=pal[impl], alpha=0.15, lw=0)
            bad = s[s["status"] != "ok"]
            ax.scatter(bad["kh"], bad["time_median_s"], marker="X", s=60, color="none", edgecolor="#c00",
                       lw=1.2, zorder=4)
        ok = sub[sub["status"] == "ok"]
        best = ok.loc[ok.groupby("kh")["time_median_s"].idxmin()].sort_values("kh")
        prev = None
        for k, impl in zip(best["kh"], best["impl"]):
            if prev is not None and impl != prev:
                ax.axvline(k, color=pal[impl], ls=":", lw=1.5)
                ax.text(k, 0.98, f"{impl} fastest\nfrom k={k}", transform=ax.get_xaxis_transform(), fontsize=8,
                        color="0.2", va="top", ha="right", bbox=dict(fc="white", ec="none", alpha=0.8, pad=1))
            prev = impl
        ax.set_yscale("log")
        ax.set_xticks(ks, [str(k) for k in ks])
        _log_ticks(ax.yaxis, sub["time_median_s"].min(), sub["time_median_s"].max(), _times_formatter())
        ax.set_title(_facet_title(keys, facets), fontsize=10)
        ax.set_xlabel("kernel size k (k×k)")
        ax.set_ylabel("median time per call")
    handles = [Line2D([], [], marker="o", color=c, label=i) for i, c in pal.items() if i in set(d["impl"])]
    handles.append(Line2D([], [], marker="X", ls="", color="none", mec="#c00", ms=8, label="incorrect"))
    _legend(fig, handles)
    fig.suptitle("Crossover: time against kernel size (lower is better)")
    return fig


# name (PNG file stem), title, how to read it, drawing function
PLOTS = [
    ("time_vs_size", "Time against problem size",
     "Median time per call against the problem's FLOPs (direct-method count), log-log; each point is "
     "one shape. The dashed red line is the time the device's measured matmul peak would need.",
     time_vs_size),
    ("speedup", f"Speedup against {REFERENCE}",
     f"{REFERENCE}'s median time divided by each implementation's, per shape (log scale, > 1 is faster). "
     "A star marks the fastest correct implementation; a red X is an incorrect result, never ranked. Error bars: "
     "the 95% confidence interval of each median (order statistics); hollow points are noisy rows.", speedup),
    ("throughput", "Achieved GFLOP/s and % of peak",
     "Effective GFLOP/s per shape (the direct method's FLOP count over the time, so a method that "
     "does less arithmetic, like FFT on large kernels, can pass the peak); the dashed red line is the "
     "device's measured large-matmul throughput for that dtype, the top axis the percentage of it.",
     throughput),
    ("correctness", "Correctness",
     "Relative error against the float64 reference divided by the dtype's tolerance: green passes, "
     "red fails. Cells name why a result is missing or wrong.", correctness),
    ("crossover", "Crossover against kernel size",
     "Time against kernel size for problems that differ only in the kernel (the kernels suite), the band "
     "around each line its interquartile range; dotted lines mark where the fastest correct implementation "
     "changes.", crossover),
]
