"""A job's folder on disk, and what a resumed job may keep from it.

    rows.jsonl       one line per row, appended (flushed, fsynced) after each case
    job_config.json  the job's measurement config, written before the first row
    job.parquet      the job's table, written atomically at the end
    COMPLETE         marker written last
    env.json         the environment the job ran in

Resume (`resume=true`) trusts a folder only when `job_config.json` matches the job being run: a
COMPLETE job is kept whole, an unfinished one keeps every case whose passes all reached rows.jsonl
(a case is appended in one write, so a kill loses at most the case in flight).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Optional

import pandas as pd
from omegaconf import OmegaConf

from .io import read_table, write_atomic  # noqa: F401  (write_atomic: the job writes its table with it)

ROWS_FILE = "rows.jsonl"
JOB_TABLE = "job.parquet"
ENV_FILE = "env.json"
CONFIG_FILE = "job_config.json"
COMPLETE = "COMPLETE"

# Keys that change what happens after the measurement, not the measurement: a resume may differ in them.
NOT_MEASURED = ("strict", "results_link", "resume", "allow_concurrent")

log = logging.getLogger(__name__)


def fingerprint(cfg: Any) -> dict:
    """The job's config as plain JSON data, without the keys that do not affect the rows."""
    data = OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True, resolve=True)
    return json.loads(json.dumps({k: v for k, v in data.items() if k not in NOT_MEASURED}, sort_keys=True))


def _saved_config(out: Path) -> Optional[dict]:
    try:
        return json.loads((out / CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def append_rows(path: Path, rows: Iterable[dict]) -> None:
    """Append rows durably: a job killed later keeps them."""
    with open(path, "a") as f:
        for row in rows:
            f.write(json.dumps(row, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_rows(path: Path) -> list[dict]:
    """The rows of a rows.jsonl, skipping a last line cut short by a kill."""
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def finished_table(out: Path) -> Optional[pd.DataFrame]:
    """The job's final table if it completed (COMPLETE written after job.parquet), else None."""
    if (out / COMPLETE).exists() and (out / JOB_TABLE).exists():
        return read_table(out / JOB_TABLE)
    return None


def start(out: Path, fp: dict, resume: bool, passes: list[str]) -> tuple[Optional[pd.DataFrame], dict]:
    """Prepare the folder for a run of the job `fp`.

    Returns (table, {}) when resuming a job that already completed with this config (nothing to do),
    else (None, kept) where kept maps (layer, shape) -> rows of a case finished by an earlier run
    (empty unless resuming); rows.jsonl then holds exactly those rows and `job_config.json` is `fp`."""
    out.mkdir(parents=True, exist_ok=True)
    saved = _saved_config(out)
    rows_path = out / ROWS_FILE
    same = resume and saved == fp
    if resume and saved is not None and not same:
        log.warning("resume: %s holds a job with a different config; running this job again from scratch", out)
    if same and (table := finished_table(out)) is not None:
        return table, {}
    kept: dict[tuple, list[dict]] = {}
    if same:
        for row in read_rows(rows_path):
            kept.setdefault((row.get("layer"), row.get("shape")), []).append(row)
        kept = {case: rows for case, rows in kept.items() if sorted(r.get("pass") for r in rows) == sorted(passes)}
    (out / COMPLETE).unlink(missing_ok=True)
    (out / CONFIG_FILE).write_text(json.dumps(fp, indent=2) + "\n")
    tmp = rows_path.with_name(f".{ROWS_FILE}.tmp")
    tmp.write_text("")
    append_rows(tmp, [r for rows in kept.values() for r in rows])
    os.replace(tmp, rows_path)
    return None, kept
