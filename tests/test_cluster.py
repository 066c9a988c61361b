"""Beyond one process: launcher configs (SLURM's sbatch script through a fake sbatch, Ray composing),
the submitit_local path end to end, jobs sharing a device marked `concurrent`, and sweeps of several
machines merged into one table."""
from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from harness import aggregate as agg
from harness.table import collect
from harness.table.schema import MERGE_KEY
from harness.callbacks import overlap_warnings
from harness.measure.concurrency import DeviceClaim, _start_stamp
from harness.measure.job import run_job
from harness.table.jobfolder import COMPLETE

from conftest import REPO, run_harness  # (the basic launcher marks nothing: test_harness_e2e)
from test_harness import job_config as _job_config


def job_config(impl, **kw):
    """test_harness's small job, with a budget no busy machine runs past (timeouts would leave no times)."""
    return _job_config(impl, **{"budget_s": 60.0, **kw})


DEFAULT_IMPLS = {"loop", "unfold", "fft", "cudnn", "winograd"}
HAS_RAY_PLUGIN = importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is not None


# ------------------------------------------------------------------------------ launcher configs
@pytest.mark.parametrize("launcher, target", [
    ("slurm", "SlurmLauncher"), ("submitit_local", "LocalLauncher"),
    pytest.param("ray", "RayLauncher", marks=pytest.mark.skipif(not HAS_RAY_PLUGIN, reason="hydra-ray-launcher "
                                                                "not installed (pip install -e '.[ray]')")),
])
def test_launcher_composes_with_the_default_sweep(compose, launcher, target):
    cfg = compose(f"+launcher={launcher}", hydra=True)
    assert cfg.hydra.launcher._target_.endswith(target)
    assert set(cfg.hydra.sweeper.params.impl.split(",")) == DEFAULT_IMPLS
    if launcher == "slurm":  # one GPU per job: nothing predicted to overlap
        assert overlap_warnings(cfg) == []
        assert cfg.device == "cuda" and cfg.hydra.launcher.gpus_per_node == 1
        assert compose("+launcher=slurm", "device=cpu").device == "cpu"  # the command line still wins
    if launcher == "submitit_local":
        assert cfg.hydra.launcher.gpus_per_node == torch.cuda.device_count()  # not hidden
        assert overlap_warnings(cfg) and not overlap_warnings(compose("+launcher=submitit_local",
                                                                      "hydra.sweeper.max_batch_size=1", hydra=True))
    if launcher == "ray":
        assert cfg.hydra.launcher.ray.remote.num_gpus == 0 and not cfg.hydra.launcher.ray.init.include_dashboard
        assert any("num_gpus=1" in n for n in overlap_warnings(compose("+launcher=ray", "device=cuda", hydra=True)))


def test_ray_launcher_composes_from_the_unpacked_wheel(tmp_path):
    """Without the plug-in installed, still check the config against its real schema when its wheel is
    at hand (the development machine unpacks it in /tmp/raytmp)."""
    wheel = os.environ.get("CONVBENCH_RAY_PLUGIN_DIR", "/tmp/raytmp")
    if HAS_RAY_PLUGIN or not os.path.isdir(os.path.join(wheel, "hydra_plugins", "hydra_ray_launcher")):
        pytest.skip("hydra-ray-launcher installed (tested above) or its unpacked wheel is absent")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([wheel, str(REPO)]))
    proc = subprocess.run([sys.executable, "-m", "harness", "+launcher=ray", "--cfg", "hydra", "--package",
                           "hydra.launcher"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "RayLauncher" in proc.stdout and "include_dashboard: false" in proc.stdout
    assert "num_cpus: 1" in proc.stdout


def test_slurm_sbatch_script(tmp_path):
    """The SLURM launcher's submission, caught by a fake sbatch that keeps the script and fails (so
    nothing waits for a cluster)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = tmp_path / "submitted.sh"
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {script}\necho "sbatch: fake" >&2\nexit 1\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit looks for srun to believe it is on SLURM
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "harness", "-m", "+launcher=slurm", "suite=smoke", f"hydra.sweep.dir={tmp_path / 's'}",
           "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=90", "hydra.launcher.array_parallelism=3",
           "hydra.launcher.cpus_per_task=4", 'hydra.launcher.setup=["module load cuda"]', "results_link=null"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "sbatch: fake" in proc.stderr, proc.stderr[-2000:]
    text = script.read_text()
    for line in ["#SBATCH --gpus-per-node=1", "#SBATCH --partition=gpu", "#SBATCH --time=90",
                 "#SBATCH --array=0-4%3", "#SBATCH --cpus-per-task=4", "#SBATCH --job-name=convbench",
                 "#SBATCH --ntasks-per-node=1", "module load cuda"]:
        assert line in text.splitlines(), f"{line!r} not in:\n{text}"
    assert "submitit.core._submit" in text and text.index("module load cuda") < text.index("srun")


# ------------------------------------------------------------------------------------ concurrency
@pytest.fixture
def claim_dir(tmp_path):
    """A sweep folder and the device's registry folder in it."""
    folder = DeviceClaim(tmp_path, torch.device("cpu")).folder
    folder.mkdir(parents=True)
    return tmp_path, folder


def _other_live_job(folder):
    pid = os.getppid()  # a live process that is not this one
    (folder / f"{pid}-{_start_stamp(pid)}").touch()


def test_rows_measured_beside_a_live_job_are_concurrent(claim_dir, caplog):
    sweep, folder = claim_dir
    _other_live_job(folder)
    with caplog.at_level(logging.WARNING, logger="harness.measure.concurrency"):
        df = run_job(job_config("unfold"), sweep / "0", sweep_dir=sweep, progress=False)
    assert df["concurrent"].all() and set(df["status"]) == {"ok"}
    assert len([r for r in caplog.records if "concurrent=True" in r.message]) == 1  # warned once per job
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="harness.measure.concurrency"):
        df = run_job(job_config("unfold", allow_concurrent=True), sweep / "1", sweep_dir=sweep, progress=False)
    assert df["concurrent"].all() and not caplog.records  # opted in: silent, but the rows still say so


def test_alone_on_the_device_is_not_concurrent(claim_dir):
    sweep, folder = claim_dir
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    stamp = _start_stamp(dead.pid)
    dead.wait()
    (folder / f"{dead.pid}-{stamp}").touch()                     # SIGKILLed long ago: its entry stayed
    os.utime(folder / f"{dead.pid}-{stamp}", (0, 0))
    (folder / f"{os.getppid()}-12_00").touch()                   # a reused pid: not the job that registered
    os.utime(folder / f"{os.getppid()}-12_00", (0, 0))
    (folder / "99-1_00.done").touch()                            # a job that ended before
    os.utime(folder / "99-1_00.done", (0, 0))
    df = run_job(job_config("unfold"), sweep / "0", sweep_dir=sweep, progress=False)
    assert not df["concurrent"].any()
    assert [p.name for p in folder.iterdir() if p.name.startswith(str(os.getpid()))] == \
        [f"{os.getpid()}-{_start_stamp(os.getpid())}.done"]  # this job signed off


def test_a_job_that_ended_during_the_window_counts(claim_dir):
    sweep, folder = claim_dir
    claim = DeviceClaim(sweep, torch.device("cpu"))
    with claim:
        since = time.time() - 1
        (folder / "99-1_00.done").touch()                        # ended now, after `since`
        assert claim.busy(since) and not claim.busy()


@pytest.mark.slow
def test_submitit_local_smoke_sweep(tmp_path):
    """The cluster path on one machine: the default impls in separate processes, all at once, each
    timing for long enough that they overlap; the aggregate is complete and says they overlapped."""
    proc = run_harness(tmp_path, "+launcher=submitit_local", "suite=smoke", "timing.min_run_time=0.1",
                       "budget_s=60")  # four jobs on two busy cores: no timeouts
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = tmp_path / "sweep"
    df = pd.read_parquet(sweep / "results.parquet")
    assert len(df) == 4 * 3 * 2 and set(df["impl"]) == DEFAULT_IMPLS and set(df["status"]) == {"ok"}
    assert not df.duplicated(["impl", "layer", "pass"]).any() and df["job"].is_monotonic_increasing
    assert all((sweep / str(j) / COMPLETE).exists() for j in range(4))
    assert df["concurrent"].any(), "four jobs started at once on one CPU and none overlapped?"
    assert "LocalLauncher may run several jobs at once" in proc.stderr
    assert "Fastest correct implementation" in proc.stdout


# ------------------------------------------------------------------------------- several machines
def test_merge_sweeps_of_two_machines(tmp_path):
    a, b, out = tmp_path / "machine_a", tmp_path / "machine_b", tmp_path / "merged"
    run_job(job_config("unfold"), a / "0", sweep="day/a", job=0, progress=False)
    run_job(job_config("cudnn"), a / "1", sweep="day/a", job=1, progress=False)
    collect.aggregate(a)
    b.mkdir()  # the other machine's table only (copied back without its job folders), same job numbers
    other = pd.read_parquet(a / "results.parquet").assign(sweep="day/b", host="gpu-node-7",
                                                         device_name="NVIDIA A100-SXM4-80GB")
    other.to_parquet(b / "results.parquet")
    assert agg.main([str(a), str(b), str(a), "--out", str(out), "--no-report"]) == 0  # a given twice: once
    df = pd.read_parquet(out / "results.parquet")
    assert len(df) == 2 * len(other) and len(pd.read_csv(out / "results.csv")) == len(df)
    assert df.groupby("device_name").size().to_dict() == {"NVIDIA A100-SXM4-80GB": 8, df["device_name"][0]: 8}
    assert not df.duplicated(MERGE_KEY).any() and df["host"].nunique() == 2


def test_merge_needs_out_for_several_sweeps(tmp_path, capsys):
    with pytest.raises(SystemExit):
        agg.main([str(tmp_path), str(tmp_path)])
    assert "--out" in capsys.readouterr().err
