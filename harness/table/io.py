"""Writing and reading stored tables. Writes are atomic (a temporary file and `os.replace`); reads
accept every format version up to `schema.TABLE_VERSION` and convert them to the current one in one
place, so old sweeps still load and a table from a newer convbench fails with a clear message."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from .schema import COLUMNS, TABLE_VERSION

RESULTS_PARQUET = "results.parquet"
RESULTS_CSV = "results.csv"


class UnknownTableVersion(ValueError):
    """A table written by a newer convbench than this one."""


def write_atomic(df: pd.DataFrame, path: Path) -> None:
    """Write a parquet or csv file through a temporary file and os.replace: never half-written."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".csv":
        df.to_csv(tmp, index=False)
    else:
        df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _as_bool(v):
    if isinstance(v, str):
        return {"true": True, "false": False}.get(v.strip().lower(), pd.NA)
    return bool(v)


def conform(df: pd.DataFrame, source: str = "table") -> pd.DataFrame:
    """Any stored table -> the current format: every schema column in the schema's dtype (absent ones
    NA, so partial tables with no CUDA or no backward rows read like complete ones), extra columns
    kept after them. Version 1 tables (no `table_version`) are read as version 1."""
    df = df.copy()
    versions = pd.to_numeric(df["table_version"], errors="coerce") if "table_version" in df else pd.Series(1, index=df.index)
    newest = versions.max() if len(versions) else TABLE_VERSION
    if pd.notna(newest) and newest > TABLE_VERSION:
        raise UnknownTableVersion(f"{source}: table format version {int(newest)} is newer than this convbench reads "
                                  f"({TABLE_VERSION}); update convbench to read it")
    df["table_version"] = versions.fillna(1)
    for name, (dtype, _) in COLUMNS.items():
        col = df[name] if name in df else pd.Series(pd.NA, index=df.index, dtype="object")
        if dtype in ("float64", "Int64"):
            col = pd.to_numeric(col.astype("object").where(col.notna(), None), errors="coerce")
            col = col.astype("float64") if dtype == "float64" else col.round().astype("Int64")
        elif dtype == "boolean":
            col = col.map(_as_bool, na_action="ignore").astype("boolean")
        else:
            col = col.astype("string")
        df[name] = col
    return df[list(COLUMNS) + [c for c in df.columns if c not in COLUMNS]]


def read_table(path: Path | str) -> pd.DataFrame:
    """One stored table (parquet or csv), of any version, in the current format."""
    path = Path(path)
    if path.suffix == ".csv":
        df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    else:
        df = pd.read_parquet(path)
    return conform(df, source=str(path))


def read_results(sweep_dir: Path | str) -> pd.DataFrame:
    """A sweep's table (`results.parquet`, else `results.csv`), in the current format."""
    sweep_dir = Path(sweep_dir)
    for name in (RESULTS_PARQUET, RESULTS_CSV):
        if (sweep_dir / name).exists():
            return read_table(sweep_dir / name)
    raise FileNotFoundError(f"no {RESULTS_PARQUET} or {RESULTS_CSV} in {sweep_dir}")
