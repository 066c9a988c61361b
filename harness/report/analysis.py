"""What a results table says, as numbers: each row's speedup against the vendor (`cudnn`), the
fraction of the measured peak, the winner of each case (only `ok` rows can win), a per-implementation
summary and the environment the rows were measured in."""
from __future__ import annotations

import pathlib

import pandas as pd

from harness.table.collect import add_err_vs_vendor
from harness.table.io import read_results
from harness.table.schema import CASE_KEY, FAILURES, NOT_RUN

CASE = CASE_KEY  # one problem, as every implementation sees it
IMPL_CASE = ["impl", *CASE]  # one result of the table
REFERENCE = "cudnn"


def load_results(sweep_dir: pathlib.Path | str) -> pd.DataFrame:
    """The sweep's table in the current format, devices named by model when machines are mixed."""
    return by_device_name(read_results(sweep_dir))


def by_device_name(df: pd.DataFrame) -> pd.DataFrame:
    """A table merged from several machines has `device` = 'cuda' for an A100 and an H100 alike:
    name each device by its model too, so every ranking, speedup and plot panel keeps machines
    apart. A single-machine table is left as it is."""
    if df.empty or df.groupby("device", dropna=False)["device_name"].nunique().max() <= 1:
        return df
    df = df.copy()
    df["device"] = (df["device"].fillna("?") + " (" + df["device_name"].fillna("unknown") + ")").astype("string")
    return df



# ------------------------------------------------------------------------------- derived figures
def enrich(df: pd.DataFrame) -> pd.DataFrame:
    """Add `speedup` (cudnn's median / this median, same case), `pct_peak`, and `winner` (the
    fastest ok row of its case). Incorrect rows get a speedup, so plots can show them as
    suspicious, but never `winner`."""
    df = df.reset_index(drop=True)  # winners are marked by index: it must be unique
    if df["err_vs_vendor"].isna().all():  # a table aggregated before the column existed
        df = add_err_vs_vendor(df)
    ok = df["status"] == "ok"
    timed = df["time_median_s"].notna() & (df["time_median_s"] > 0)
    ref = (df[ok & timed & (df["impl"] == REFERENCE)]
           .groupby(CASE, dropna=False)["time_median_s"].min().rename("_ref"))
    df = df.join(ref, on=CASE)
    df["speedup"] = (df["_ref"] / df["time_median_s"]).where(timed & df["status"].isin(["ok", "incorrect"]))
    # the speedup's interval from this row's 95% interval of its median (the reference's median held fixed)
    df["speedup_low"] = (df["_ref"] / df["time_ci_high_s"]).where(df["speedup"].notna())
    df["speedup_high"] = (df["_ref"] / df["time_ci_low_s"]).where(df["speedup"].notna())
    df["cold_ratio"] = df["cold_median_s"] / df["time_median_s"]
    df = df.drop(columns="_ref")
    df["pct_peak"] = 100 * df["gflops"] / df["peak_gflops"]
    rankable = df[ok & timed]
    best = rankable.groupby(CASE, dropna=False)["time_median_s"].idxmin()
    df["winner"] = False
    df.loc[best.values, "winner"] = True
    return df


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per implementation: cases run, correct, failures, not run, median speedup, wins."""
    df = df if "winner" in df else enrich(df)
    g = df.groupby("impl", dropna=False)
    out = pd.DataFrame({
        "cases run": g["status"].apply(lambda s: int((~s.isin(NOT_RUN)).sum())),
        "correct": g["status"].apply(lambda s: int((s == "ok").sum())),
        "failures": g["status"].apply(lambda s: int(s.isin(FAILURES).sum())),
        "not run": g["status"].apply(lambda s: int(s.isin(NOT_RUN).sum())),
        f"median speedup vs {REFERENCE}": df[df["status"] == "ok"].groupby("impl")["speedup"].median(),
        "wins": g["winner"].sum().astype(int),
        "nondeterministic": g["deterministic"].apply(lambda s: int((s == False).sum())),  # noqa: E712
        f"error vs {REFERENCE} (median)": df[df["status"] == "ok"].groupby("impl")["err_vs_vendor"].median(),
        f"error vs {REFERENCE} (worst)": df[df["status"] == "ok"].groupby("impl")["err_vs_vendor"].max(),
    })
    out.index.name = "impl"
    return out.sort_values(["wins", "correct"], ascending=False)


def accuracy_cost(df: pd.DataFrame) -> pd.DataFrame:
    """Per implementation, dtype and pass: how many times the vendor's error its ok rows have (median,
    worst), how many exceed 10x, and how many rows gave different results on repeated calls."""
    d = df[(df["status"] == "ok") & df["err_vs_vendor"].notna()]
    if d.empty:
        return pd.DataFrame()
    g = d.groupby(["impl", "dtype", "pass"], dropna=False)
    out = pd.DataFrame({
        "rows": g.size(),
        f"median × {REFERENCE} error": g["err_vs_vendor"].median(),
        f"worst × {REFERENCE} error": g["err_vs_vendor"].max(),
        "rows > 10×": g["err_vs_vendor"].apply(lambda s: int((s > 10).sum())),
        "nondeterministic": g["deterministic"].apply(lambda s: int((s == False).sum())),  # noqa: E712
        "largest repeat difference": g["repeat_max_diff"].max(),
    })
    return out.reset_index().sort_values([f"worst × {REFERENCE} error"], ascending=False)


def environment_summary(df: pd.DataFrame) -> dict[str, str]:
    """What the numbers were measured on: each environment column's distinct values."""
    env = {}
    for col, label in [("sweep", "sweep"), ("host", "host"), ("device_name", "devices"),
                       ("cpu", "CPU"), ("threads", "torch threads"), ("torch", "torch"),
                       ("cuda", "CUDA"), ("cudnn", "cuDNN"), ("git_rev", "convbench revision")]:
        values = sorted({str(v) for v in df[col].dropna() if str(v) != ""})
        if values:
            env[label] = ", ".join(values)
    if "convbench revision" in env:
        env["convbench revision"] = ", ".join(r[:12] for r in env["convbench revision"].split(", "))
    if env.get("devices") == env.get("CPU"):
        env.pop("devices", None)
    if df["git_dirty"].fillna(False).any():
        env["convbench revision"] = env.get("convbench revision", "?") + " (uncommitted changes)"
    times = df["time"].dropna()
    if len(times):
        env["started"] = f"{times.min()} to {times.max()}" if times.min() != times.max() else times.min()
    peaks = df.dropna(subset=["peak_gflops"]).groupby(["device", "dtype"])["peak_gflops"].median()
    if len(peaks):
        env["measured peak (matmul)"] = ", ".join(f"{d} {t}: {v:,.0f} GFLOP/s" for (d, t), v in peaks.items())
    env["rows"] = f"{len(df)} ({', '.join(f'{n} {s}' for s, n in df['status'].value_counts().items())})"
    warnings = []
    if df["concurrent"].fillna(False).any():
        warnings.append(f"{int(df['concurrent'].fillna(False).sum())} rows were timed while other jobs "
                        "may have shared the device: their times are noisy")
    noisy = df["noisy"].fillna(False)
    if noisy.any():
        warnings.append(f"{int(noisy.sum())} of {int(df['noisy'].notna().sum())} timed rows are noisy "
                        "(marked ~ in the table; see noisy_reason)")
    if df["throttled"].fillna(False).any():
        warnings.append(f"{int(df['throttled'].fillna(False).sum())} rows were timed on a throttled GPU")
    unfit = sorted({str(v) for v in df["machine_warning"].dropna() if str(v)})
    if unfit:
        warnings.append("machine unfit to time at job start: " + " | ".join(unfit[:3]) +
                        (f" (+{len(unfit) - 3} more)" if len(unfit) > 3 else ""))
    if warnings:
        env["warning"] = "; ".join(warnings)
    return env


