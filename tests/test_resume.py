"""resume=true: a complete job is kept as it is, a killed one keeps its finished cases and runs the
rest, and the aggregate holds every row exactly once (in-process, and a real SIGKILLed multirun)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pandas as pd
import pytest

from harness.config import Pass, Timing
from harness.measure.job import run_job
from harness.table.jobfolder import COMPLETE, JOB_TABLE, ROWS_FILE

from conftest import REPO
from test_harness import SMOKE, job_config as _job_config


def job_config(impl, **kw):
    """test_harness's small job, with a budget no busy machine runs past (timeouts would leave no times)."""
    return _job_config(impl, **{"budget_s": 60.0, **kw})


CASE = ["impl", "layer", "shape", "device", "dtype", "pass"]


def _kill_after_first_case(job_dir):
    """What a SIGKILL during the second case leaves: the first case's rows and a line cut short."""
    lines = (job_dir / ROWS_FILE).read_text().splitlines()
    (job_dir / ROWS_FILE).write_text("\n".join(lines[:2]) + "\n" + lines[2][:40])
    (job_dir / COMPLETE).unlink()
    (job_dir / JOB_TABLE).unlink()


def test_resume_keeps_finished_cases_and_runs_the_rest(tmp_path):
    first = run_job(job_config("unfold"), tmp_path, progress=False)
    _kill_after_first_case(tmp_path)
    again = run_job(job_config("unfold", resume=True), tmp_path, progress=False)
    assert len(again) == len(first) == 4 and not again.duplicated(CASE).any()
    assert again[CASE].equals(first[CASE])  # suite order, whatever was kept
    kept, redone = again["layer"] == SMOKE.shapes[0].layer, again["layer"] == SMOKE.shapes[1].layer
    assert again[kept]["samples"].tolist() == first[kept]["samples"].tolist()   # not measured again
    assert again[redone]["samples"].tolist() != first[redone]["samples"].tolist()
    assert set(again["status"]) == {"ok"} and (tmp_path / COMPLETE).exists()
    assert len((tmp_path / ROWS_FILE).read_text().splitlines()) == 4
    assert json.loads((tmp_path / COMPLETE).read_text())["kept"] == 2


def test_resume_skips_a_complete_job(tmp_path):
    first = run_job(job_config("unfold"), tmp_path, progress=False)
    before = (tmp_path / JOB_TABLE).stat().st_mtime_ns
    again = run_job(job_config("unfold", resume=True, strict=True), tmp_path, progress=False)  # strict: not measured
    assert (tmp_path / JOB_TABLE).stat().st_mtime_ns == before
    assert again["samples"].tolist() == first["samples"].tolist()


def test_resume_reruns_a_job_measured_differently(tmp_path):
    run_job(job_config("unfold"), tmp_path, progress=False)
    _kill_after_first_case(tmp_path)
    cfg = job_config("unfold", resume=True)
    cfg = replace(cfg, timing=Timing(min_run_time=0.02, warmup=0))  # another measurement: keep nothing
    df = run_job(cfg, tmp_path, progress=False)
    assert json.loads((tmp_path / COMPLETE).read_text())["kept"] == 0 and len(df) == 4


def test_without_resume_a_job_starts_over(tmp_path):
    first = run_job(job_config("unfold"), tmp_path, progress=False)
    again = run_job(job_config("unfold"), tmp_path, progress=False)
    assert len(again) == 4 and again["samples"].tolist() != first["samples"].tolist()


SWEEP = ["suite=smoke", "impl=loop,unfold,fft,cudnn", "timing.min_run_time=0.15", "budget_s=30"]


def _multirun(tmp_path, *extra, **popen):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "harness", "-m", f"hydra.sweep.dir={tmp_path / 'sweep'}",
           f"results_link={tmp_path / 'latest'}", *SWEEP, *extra]
    return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **popen)


def _finished_rows(job_dir) -> list[dict]:
    try:
        lines = (job_dir / ROWS_FILE).read_text().splitlines()
    except FileNotFoundError:
        return []
    rows = [json.loads(line) for line in lines if line.endswith("}")]
    layers = [r["layer"] for r in rows]
    return [r for r in rows if layers.count(r["layer"]) == 2]  # both passes: a finished case


@pytest.mark.slow
def test_sigkilled_sweep_resumes_and_holds_every_row_once(tmp_path):
    sweep = tmp_path / "sweep"
    proc = _multirun(tmp_path, start_new_session=True)  # its own process group, killed as a whole
    in_flight = None
    try:
        deadline = time.monotonic() + 240
        while in_flight is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            if (sweep / "0" / COMPLETE).exists():  # wait for a later job with a finished case, not complete
                in_flight = next((j for j in range(1, 4) if not (sweep / str(j) / COMPLETE).exists()
                                  and len(_finished_rows(sweep / str(j))) >= 2), None)
        assert in_flight is not None and proc.poll() is None, "the sweep ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert not (sweep / "results.parquet").exists() and not (sweep / str(in_flight) / COMPLETE).exists()
    done_mtime = (sweep / "0" / JOB_TABLE).stat().st_mtime_ns
    done_rows = pd.read_parquet(sweep / "0" / JOB_TABLE)
    partial = _finished_rows(sweep / str(in_flight))
    assert 2 <= len(partial) < 6

    resumed = _multirun(tmp_path, "resume=true")
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out[-3000:]
    df = pd.read_parquet(sweep / "results.parquet")
    assert len(df) == 4 * 3 * 2 and not df.duplicated(CASE).any() and set(df["status"]) == {"ok"}
    assert sorted(df["impl"].unique()) == ["cudnn", "fft", "loop", "unfold"]
    assert (sweep / "0" / JOB_TABLE).stat().st_mtime_ns == done_mtime          # job 0 was not re-run
    job0 = df[df["job"] == 0].reset_index(drop=True)
    assert job0["samples"].tolist() == done_rows["samples"].tolist()
    kept = {(r["layer"], r["pass"]): r["samples"] for r in partial}  # the killed job's finished cases stayed
    job = df[df["job"] == in_flight]
    assert all(job[(job["layer"] == l) & (job["pass"] == p)]["samples"].item() == s for (l, p), s in kept.items())


def test_resume_into_a_folder_without_jobs_warns(compose, tmp_path):
    from harness.callbacks import resume_warnings
    cfg = compose("resume=true", f"hydra.sweep.dir={tmp_path}", hydra=True)
    assert "holds no earlier jobs" in resume_warnings(cfg)[0]
    run_job(job_config("cudnn", passes=[Pass.forward]), tmp_path / "0", progress=False)
    assert resume_warnings(cfg) == [] and resume_warnings(compose(f"hydra.sweep.dir={tmp_path}", hydra=True)) == []
