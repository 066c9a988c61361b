"""The real entry point in a subprocess: `python -m harness -m ...` into a temporary sweep folder."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pandas as pd
import pytest

from harness.table.jobfolder import COMPLETE

from conftest import PLUGINS, REPO, run_harness


def test_multirun_with_a_plugin_outside_the_repo(tmp_path):
    plug = tmp_path / "outside"
    plug.mkdir()
    shutil.copy(REPO / "examples" / "my_conv.py", plug / "my_convs.py")
    proc = run_harness(tmp_path, "suite=smoke", "impl=my_conv,unfold,cudnn", "plugins=[my_convs]",
                       "timing.min_run_time=0.01", pythonpath=(plug,))
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = tmp_path / "sweep"
    df = pd.read_parquet(sweep / "results.parquet")
    assert len(pd.read_csv(sweep / "results.csv")) == len(df) == 3 * 3 * 2
    assert df["impl"].tolist()[::6] == ["my_conv", "unfold", "cudnn"] and df["job"].is_monotonic_increasing
    assert set(df["status"]) == {"ok"} and df["correct"].all() and df["time_median_s"].gt(0).all()
    assert df["deterministic"].all() and df["checked_calls"].eq(3).all() and df["repeat_max_diff"].eq(0).all()
    assert df["err_vs_vendor"].between(0.1, 10).all()
    assert all((sweep / str(j) / COMPLETE).exists() for j in range(3))
    # the basic launcher runs one job at a time: nothing shared the device, nothing to warn about
    assert not df["concurrent"].any() and "concurrent=True" not in proc.stderr + proc.stdout
    assert f"concurrent: 0 of {len(df)} rows" in proc.stdout  # every summary says whether timings overlapped
    assert (tmp_path / "latest").resolve() == sweep.resolve()
    assert "Fastest correct implementation" in proc.stdout and "results.parquet" in proc.stdout


@pytest.mark.slow
def test_broken_plugins_and_strict(tmp_path):
    impls = "cudnn,broken_raises,broken_values,broken_hangs"
    proc = run_harness(tmp_path, "suite=smoke", f"impl={impls}", "plugins=[broken_convs]", "strict=true",
                       "budget_s=1.0", "timing.min_run_time=0.01", pythonpath=(PLUGINS,))
    assert proc.returncode != 0, "strict=true must fail on incorrect/error rows"
    df = pd.read_parquet(tmp_path / "sweep" / "results.parquet")
    status = {impl: set(rows["status"]) for impl, rows in df.groupby("impl")}
    assert status == {"cudnn": {"ok"}, "broken_raises": {"error"}, "broken_values": {"incorrect"},
                      "broken_hangs": {"timeout"}}
    assert "strict" in proc.stdout


@pytest.mark.slow
def test_absent_device_and_aggregate_cli(tmp_path):
    proc = run_harness(tmp_path, "suite=smoke", "impl=cudnn", "device=cpu,cuda", "timing.min_run_time=0.01")
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = pd.read_parquet(tmp_path / "sweep" / "results.parquet")
    assert set(df[df["device"] == "cpu"]["status"]) == {"ok"}
    if not __import__("torch").cuda.is_available():
        skipped = df[df["device"] == "cuda"]
        assert set(skipped["status"]) == {"skipped"} and skipped["message"].str.contains("CUDA").all()
    (tmp_path / "sweep" / "results.parquet").unlink()
    cli = subprocess.run([sys.executable, "-m", "harness.aggregate", str(tmp_path / "sweep")], cwd=REPO,
                         capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    assert len(pd.read_parquet(tmp_path / "sweep" / "results.parquet")) == len(df)


@pytest.mark.slow
def test_typo_in_swept_impl_fails_before_any_job(tmp_path):
    proc = run_harness(tmp_path, "suite=smoke", "impl=cudnn,lop")
    assert proc.returncode != 0 and "known implementations" in proc.stderr + proc.stdout
    assert not list((tmp_path / "sweep").glob("*/rows.jsonl"))
