"""The README's SLURM commands against a real one-node SLURM cluster (tests/cluster/slurm.sh): the
issue #14 findings, each on the real scheduler. `make test-cluster` runs them."""
from __future__ import annotations

import re
import shlex
import subprocess
import time

import pandas as pd
import pytest
import yaml

from clusterlib import REPO, readme, run_command, slurm_cluster  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slurm

KEY = ["impl", "layer", "pass"]
DEFAULT_IMPLS = yaml.safe_load((REPO / "conf" / "config.yaml").read_text())["hydra"]["sweeper"]["params"]["impl"].split(",")


def table(tmp_path) -> pd.DataFrame:
    return pd.read_parquet(tmp_path / "sweep" / "results.parquet")


def scripts(tmp_path) -> str:
    return "\n".join(p.read_text() for p in (tmp_path / "sweep" / ".submitit").rglob("*_submission.sh"))


def test_cpu_sweep_of_a_new_user(slurm_cluster, tmp_path):
    """Findings 1 and 3: device=cpu asks for no GPU, the default request fits a small node, each CPU job
    has the node to itself (no concurrent rows), the terminal shows progress and the count."""
    proc = run_command(readme("python -m harness -m +launcher=slurm suite=smoke device=cpu"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = table(tmp_path)
    jobs = len(DEFAULT_IMPLS)  # the default sweep: one job per built-in, 6 rows each on the smoke suite
    # winograd declares strided shapes unsupported: rows, not failures
    assert len(df) == 6 * jobs and set(df["status"]) <= {"ok", "unsupported"} and not df.duplicated(["job", *KEY]).any()
    assert not df["concurrent"].any()
    assert f"concurrent: 0 of {6 * jobs} rows" in proc.stdout and "report:" in proc.stdout
    assert re.search(rf"SLURM {jobs} jobs: .*running", proc.stderr) and f"SLURM {jobs} jobs: {jobs} done" in proc.stderr
    text = scripts(tmp_path)
    assert "#SBATCH --exclusive" in text and "gpu" not in text and "gres" not in text


def test_shared_cpu_nodes_are_reported(slurm_cluster, tmp_path):
    """Finding 3's other half: when CPU jobs do share the node (exclusive=false), the sweep warns and the
    summary counts the rows measured side by side."""
    proc = run_command(readme("python -m harness -m +launcher=slurm suite=smoke device=cpu "
                              "hydra.launcher.exclusive=false hydra.launcher.cpus_per_task=1 hydra.launcher.mem_gb=4"),
                       tmp_path, "timing.min_run_time=0.3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = table(tmp_path)
    shared = int(df["concurrent"].sum())
    assert len(df) == 6 * len(DEFAULT_IMPLS) and shared > 0, "two 1-CPU jobs on a 2-CPU node never overlapped?"
    assert f"concurrent: {shared} of {len(df)} rows" in proc.stdout
    assert "may share a node's cores" in proc.stderr


def test_additional_parameters_form_of_the_readme(slurm_cluster, tmp_path):
    """Finding 3: the README's form for extra sbatch flags is accepted by Hydra and by sbatch."""
    assert "+hydra.launcher.additional_parameters.comment=convbench" in readme_text()
    proc = run_command("python -m harness -m +launcher=slurm suite=smoke device=cpu impl=unfold", tmp_path,
                       "+hydra.launcher.additional_parameters.comment=convbench")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "#SBATCH --comment=convbench" in scripts(tmp_path) and len(table(tmp_path)) == 6


def readme_text() -> str:
    from clusterlib import README
    return README


@pytest.mark.parametrize("command, says", [
    ("python -m harness -m +launcher=slurm suite=smoke device=cpu hydra.launcher.cpus_per_task=64",
     "its largest node has 2: hydra.launcher.cpus_per_task=2. Nothing was submitted."),
    ("python -m harness -m +launcher=slurm suite=smoke",  # finding 1: a GPU asked of a node without one
     "no node of it has a GPU: run on the CPU with device=cpu"),
])
def test_request_that_cannot_fit_fails_before_submission(slurm_cluster, tmp_path, command, says):
    """Findings 1 and 2: checked against the partition (sinfo) before sbatch, with the fix named."""
    start = time.monotonic()
    proc = run_command(readme(command), tmp_path)
    assert proc.returncode != 0 and says in proc.stderr, proc.stderr[-3000:]
    assert time.monotonic() - start < 60 and not (tmp_path / "sweep" / ".submitit").exists()


def test_request_that_never_starts_ends_the_wait(slurm_cluster, tmp_path):
    """Finding 2 without the check: SLURM keeps the jobs PENDING (PartitionConfig) forever; the driver
    cancels them, says why, and still ends the sweep (table, resume command)."""
    start = time.monotonic()
    proc = run_command("python -m harness -m +launcher=slurm suite=smoke device=cpu impl=unfold,fft", tmp_path,
                       "hydra.launcher.preflight=false", "hydra.launcher.cpus_per_task=8", timeout=180)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert time.monotonic() - start < 120
    assert "pending (PartitionConfig)" in proc.stderr and "NEVER STARTS" in proc.stderr
    assert "resume=true" in proc.stderr and "table:" in proc.stdout
    ids = re.search(r"submitted SLURM job (\d+)", proc.stderr).group(1)
    left = subprocess.run(["squeue", "-h", "-j", ids, "-t", "PENDING,RUNNING"], capture_output=True, text=True)
    assert left.stdout.strip() == ""


def test_cancelled_array_then_the_printed_resume_command(slurm_cluster, tmp_path):
    """Finding 4: scancel of the array ends the wait in bounded time (no accounting here), the finished
    job's rows are in the table, and the printed command completes the sweep without duplicates."""
    cmd = readme("python -m harness -m +launcher=slurm impl=loop,unfold,fft,cudnn suite=smoke device=cpu")
    driver = run_command(cmd, tmp_path, background=True)
    try:
        deadline = time.monotonic() + 240
        while not (tmp_path / "sweep" / "0" / "COMPLETE").exists():
            assert driver.poll() is None and time.monotonic() < deadline, (tmp_path / "driver.err").read_text()
            time.sleep(0.5)
        array = re.search(r"submitted SLURM job (\d+)", (tmp_path / "driver.err").read_text()).group(1)
        subprocess.run(["scancel", array], check=True)
        cancelled = time.monotonic()
        rc = driver.wait(timeout=120)
        waited = time.monotonic() - cancelled
    finally:
        if driver.poll() is None:
            driver.kill()
    out, err = (tmp_path / "driver.out").read_text(), (tmp_path / "driver.err").read_text()
    assert rc == 1 and waited < 90, err[-3000:]
    assert "did not finish" in err and "CANCELLED" in err and "table:" in out
    assert "sacct" not in err  # no accounting here: squeue says what happened, no warning per poll
    first = table(tmp_path)
    assert set(first[first["job"] == 0]["status"]) == {"ok"} and (first["job"] == 0).sum() == 6
    printed = [line.strip() for line in err.splitlines() if line.strip().startswith("python -m harness")]
    assert len(printed) == 1 and printed[0].endswith("resume=true")
    assert shlex.split(printed[0])[:len(shlex.split(cmd))] == shlex.split(cmd)  # the same sweep, plus where and resume
    proc = run_command(printed[0], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = table(tmp_path)
    assert len(df) == 24 and set(df["status"]) == {"ok"} and not df.duplicated(["job", *KEY]).any()
    assert not df["concurrent"].any() and "concurrent: 0 of 24 rows" in proc.stdout
    kept = df[df["job"] == 0].reset_index(drop=True)
    assert kept["time_median_s"].tolist() == first[first["job"] == 0]["time_median_s"].tolist()  # not re-measured
