"""Network totals: what each implementation does to a whole network's convolutions, from the table alone.

A suite captured from a model (`model` column set, `harness.capture`) lists each unique conv shape
once with its `count`, the calls per forward pass. Per suite, device, dtype and pass:

- an implementation's total is sum(count x median time) over every layer of the suite; it gets no total
  if any layer is not `ok` (wrong, failed, timed out, not run): a network is only as right as its worst
  layer, and a sum that skips the slow layers would flatter it. The note says which layers and why;
- the best-per-layer mix takes, per layer, the fastest `ok` implementation: what a network choosing
  per layer (as `implementations.Conv2d(impl=...)` per module allows) would spend;
- `× cudnn` is cudnn's total divided by the row's (> 1 is faster).

`forward+backward` adds the two passes per layer (a layer counts only when both are ok), and its mix
picks one implementation per layer for both, as one module would run them."""
from __future__ import annotations

from typing import Callable

import pandas as pd

from .analysis import REFERENCE

GROUP = ["suite", "device", "dtype", "pass"]
LAYER = ["layer", "shape"]
MIX = "best per layer"
TRAIN = "forward+backward"
PASS_ORDER = {"forward": 0, "backward": 1, TRAIN: 2}
TOTALS_LEGEND = ("Per suite captured from a model: sum of count × median time over its layers (count = calls per "
                 "forward pass). An implementation that is not ok on every layer gets no total (the note says why). "
                 "The best-per-layer mix takes each layer's fastest ok implementation; fwd+bwd picks one per layer "
                 f"for both passes. ×{REFERENCE}: {REFERENCE}'s total / this total (> 1 is faster).")
SHORT = {"forward": "forward", "backward": "backward", TRAIN: "fwd+bwd"}
COLUMNS = ["suite", "device", "dtype", "pass", "impl", "total_s", "speedup", "layers_ok", "layers", "note"]


def network_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The per-layer rows of suites captured from a model (not the swap check's whole-model rows)."""
    if "model" not in df or "count" not in df:
        return df.iloc[0:0]
    has_model = df["model"].fillna("").astype(str) != ""
    return df[has_model & ~df["suite"].fillna("").astype(str).str.startswith("network:")]


def _with_train_pass(rows: pd.DataFrame) -> pd.DataFrame:
    """Add forward+backward rows: per impl and layer, the two passes' times summed, ok only if both are."""
    keys = ["impl", "suite", "device", "dtype", *LAYER]
    fwd = rows[rows["pass"] == "forward"].drop_duplicates(keys).set_index(keys)
    bwd = rows[rows["pass"] == "backward"].drop_duplicates(keys).set_index(keys)
    both = fwd.index.intersection(bwd.index)
    if not len(both):
        return rows
    f, b = fwd.loc[both], bwd.loc[both]
    train = f[["count"]].copy()
    train["time_median_s"] = f["time_median_s"] + b["time_median_s"]
    ok = (f["status"] == "ok") & (b["status"] == "ok")
    train["status"] = f["status"].where(f["status"] != "ok", b["status"]).where(~ok, "ok")
    train["pass"] = TRAIN
    return pd.concat([rows, train.reset_index()], ignore_index=True)


def _layer_list(names: list[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (f", … ({len(names)} in all)" if len(names) > limit else "")


def network_totals(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (suite, device, dtype, pass, impl or the mix): total_s (NA with a note when the
    implementation failed a layer), speedup over cudnn, layers ok out of the suite's layers."""
    rows = network_rows(df)
    if rows.empty:
        return pd.DataFrame(columns=COLUMNS)
    rows = rows[["impl", "suite", "device", "dtype", "pass", *LAYER, "count", "status", "time_median_s"]].copy()
    rows["count"] = rows["count"].fillna(1).astype(float)
    rows = _with_train_pass(rows)
    out = []
    for key, g in rows.groupby(GROUP, sort=False, dropna=False):
        layers = g.drop_duplicates(LAYER).set_index(LAYER)["count"]
        ok = g[(g["status"] == "ok") & g["time_median_s"].notna()]
        records = []
        for impl, gi in g.groupby("impl", sort=False):
            good = ok[ok["impl"] == impl].drop_duplicates(LAYER)
            bad = gi[~gi.set_index(LAYER).index.isin(good.set_index(LAYER).index)].drop_duplicates(LAYER)
            missing = [lay for lay, _ in layers.index.difference(gi.set_index(LAYER).index)]
            notes = [f"{status} on {len(b)} layer{'s' if len(b) > 1 else ''} ({_layer_list(b['layer'].tolist())})"
                     for status, b in bad.groupby("status", sort=False)]
            if missing:
                notes.append(f"not run on {len(missing)} layers ({_layer_list(missing)})")
            total = float((good["count"] * good["time_median_s"]).sum()) if not notes else float("nan")
            records.append(dict(impl=impl, total_s=total, layers_ok=len(good), layers=len(layers),
                                note="no total: " + "; ".join(notes) if notes else ""))
        best = ok.loc[ok.groupby(LAYER, sort=False)["time_median_s"].idxmin()] if len(ok) else ok
        lacking = [lay for lay, _ in layers.index.difference(best.set_index(LAYER).index)] if len(best) else \
            [lay for lay, _ in layers.index]
        picks = best["impl"].value_counts()
        mix_note = ("no total: no correct implementation for " + _layer_list(lacking)) if lacking else \
            "picks " + ", ".join(f"{impl} on {n} layer{'s' if n > 1 else ''}" for impl, n in picks.items())
        records.append(dict(impl=MIX, layers_ok=len(best), layers=len(layers), note=mix_note,
                            total_s=float((best["count"] * best["time_median_s"]).sum()) if not lacking else float("nan")))
        ref = next((r["total_s"] for r in records if r["impl"] == REFERENCE), float("nan"))
        for r in records:
            r["speedup"] = ref / r["total_s"] if r["total_s"] and pd.notna(r["total_s"]) else float("nan")
            out.append(dict(zip(GROUP, key), **r))
    tot = pd.DataFrame(out, columns=COLUMNS)
    return tot.sort_values(["suite", "device", "dtype", "pass"], key=lambda c: c.map(PASS_ORDER) if c.name == "pass" else c,
                           kind="stable").reset_index(drop=True)


def totals_tables(tot: pd.DataFrame, fmt_time: Callable[[float], str]) -> dict[tuple, pd.DataFrame]:
    """(suite, device, dtype) -> a table of strings for people: one row per implementation (the mix
    last), per pass its total and × cudnn, then the notes."""
    tables = {}
    for key, g in tot.groupby(["suite", "device", "dtype"], sort=False):
        passes = sorted(g["pass"].unique(), key=lambda p: PASS_ORDER.get(p, 9))
        impls = list(dict.fromkeys([i for i in g["impl"] if i != MIX] + [MIX]))
        rows = []
        for impl in impls:
            gi = g[g["impl"] == impl].set_index("pass")
            row = {"impl": impl}
            notes = {}
            for p in passes:
                r = gi.loc[p] if p in gi.index else None
                row[SHORT.get(p, p)] = fmt_time(r["total_s"]) if r is not None and pd.notna(r["total_s"]) else "—"
                row[f"{SHORT.get(p, p)} ×{REFERENCE}"] = f"{r['speedup']:.3g}×" if r is not None and pd.notna(r["speedup"]) else ""
                if r is not None and r["note"]:
                    notes[p] = r["note"]
            if impl == MIX and passes[-1] in notes and not notes[passes[-1]].startswith("no total"):
                notes = {passes[-1]: notes[passes[-1]]}  # the mix's picks: the last pass's are what a module runs
            if len(set(notes.values())) == 1 and (len(notes) == len(passes) or impl == MIX):
                row["note"] = next(iter(notes.values()))
            else:  # passes with the same note share it
                same: dict[str, list[str]] = {}
                for p, n in notes.items():
                    same.setdefault(n, []).append(SHORT.get(p, p))
                row["note"] = "; ".join(f"{', '.join(ps)}: {n}" for n, ps in same.items())
            rows.append(row)
        tables[key] = pd.DataFrame(rows)
    return tables
