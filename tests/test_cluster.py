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
    ("slurm", "ConvbenchSlurmLauncher"), ("submitit_local", "ConvbenchLocalLauncher"),
    pytest.param("ray", "ConvbenchRayLauncher", marks=pytest.mark.skipif(
        not HAS_RAY_PLUGIN, reason="hydra-ray-launcher not installed (pip install -e '.[ray]')")),
])
def test_launcher_composes_with_the_default_sweep(compose, launcher, target):
    cfg = compose(f"+launcher={launcher}", hydra=True)
    assert cfg.hydra.launcher._target_ == f"hydra_plugins.convbench_launchers.{target}"
    assert set(cfg.hydra.sweeper.params.impl.split(",")) == DEFAULT_IMPLS
    if launcher == "slurm":  # requests follow the device (null = follow): nothing predicted to overlap
        assert overlap_warnings(cfg) == []
        assert cfg.device == "cuda" and cfg.hydra.launcher.gpus_per_node is None
        assert cfg.hydra.launcher.exclusive is None and cfg.hydra.launcher.preflight
        assert compose("+launcher=slurm", "device=cpu").device == "cpu"  # the command line still wins
        shared = compose("+launcher=slurm", "device=cpu", "hydra.launcher.exclusive=false", hydra=True)
        assert any("exclusive=false" in n for n in overlap_warnings(shared))
    if launcher == "submitit_local":
        assert overlap_warnings(cfg) and not overlap_warnings(compose("+launcher=submitit_local",
                                                                      "hydra.sweeper.max_batch_size=1", hydra=True))
    if launcher == "ray":
        assert cfg.hydra.launcher.ray.remote.num_gpus is None and not cfg.hydra.launcher.ray.init.include_dashboard
        assert any("num_gpus" in n for n in overlap_warnings(
            compose("+launcher=ray", "device=cuda", "hydra.launcher.ray.remote.num_gpus=0", hydra=True)))


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
    assert "ConvbenchRayLauncher" in proc.stdout and "include_dashboard: false" in proc.stdout
    assert "num_cpus: 1" in proc.stdout


SINFO_CPU_NODE = "debug*|up|infinite|2|7800|(null)|laptop\n"
SINFO_GPU_NODE = "gpu|up|2:00:00|16|64000|gpu:a100:4(S:0-1)|node7\n"


def fake_slurm(tmp_path, sinfo=SINFO_CPU_NODE + SINFO_GPU_NODE):
    """PATH with a fake sinfo (the given nodes) and a fake sbatch that keeps the script and fails (so
    nothing waits for a cluster). Rendering only: the real scheduler is tests/cluster/."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = tmp_path / "submitted.sh"
    (bin_dir / "sinfo").write_text(f"#!/bin/sh\nprintf '{sinfo}'\n")
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {script}\necho "sbatch: fake" >&2\nexit 1\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit looks for srun to believe it is on SLURM
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(REPO))
    return env, script


def submit(tmp_path, env, *overrides):
    cmd = [sys.executable, "-m", "harness", "-m", "+launcher=slurm", "suite=smoke",
           f"hydra.sweep.dir={tmp_path / 's'}", "results_link=null", *overrides]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_slurm_sbatch_script_for_gpu_jobs(tmp_path):
    env, script = fake_slurm(tmp_path)
    proc = submit(tmp_path, env, "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=90",
                  "hydra.launcher.array_parallelism=3", "hydra.launcher.cpus_per_task=4",
                  'hydra.launcher.setup=["module load cuda"]')
    assert proc.returncode != 0 and "sbatch: fake" in proc.stderr, proc.stderr[-2000:]
    text = script.read_text()
    for line in ["#SBATCH --gpus-per-node=1", "#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --mem=8GB",
                 "#SBATCH --array=0-4%3", "#SBATCH --cpus-per-task=4", "#SBATCH --job-name=convbench",
                 "#SBATCH --ntasks-per-node=1", "module load cuda"]:
        assert line in text.splitlines(), f"{line!r} not in:\n{text}"
    assert "--exclusive" not in text  # GPU jobs share nodes, never GPUs
    assert "submitit.core._submit" in text and text.index("module load cuda") < text.index("srun")


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_slurm_sbatch_script_for_cpu_jobs(tmp_path, device):
    """device=cpu, or auto on a partition without GPUs: no GPU asked for, a whole node per job."""
    env, script = fake_slurm(tmp_path)
    proc = submit(tmp_path, env, f"device={device}", "+hydra.launcher.additional_parameters.comment=hi")
    assert proc.returncode != 0 and "sbatch: fake" in proc.stderr, proc.stderr[-2000:]
    lines = script.read_text().splitlines()
    assert "#SBATCH --exclusive" in lines and "#SBATCH --comment=hi" in lines
    assert not [x for x in lines if "gpu" in x or "gres" in x or "--mem" in x], lines


def test_slurm_device_sweep_submits_one_array_per_request(tmp_path):
    env, script = fake_slurm(tmp_path)
    # the first array (CPU jobs, whole node) is refused by the fake sbatch: that stops the sweep at once
    proc = submit(tmp_path, env, "device=cpu,cuda", "hydra.launcher.partition=gpu", "impl=unfold")
    assert proc.returncode != 0 and "SLURM refused the jobs" in proc.stderr
    assert "(0 GPU, whole node)" in proc.stderr and "(1 GPU)" in proc.stderr


@pytest.mark.parametrize("overrides, says", [
    (["device=cuda"], "no node of it has a GPU: run on the CPU with device=cpu"),
    (["device=cpu", "hydra.launcher.cpus_per_task=8"], "hydra.launcher.cpus_per_task=2"),
    (["device=cpu", "hydra.launcher.mem_gb=32"], "hydra.launcher.mem_gb=7"),
    (["hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=600"], "hydra.launcher.timeout_min=120"),
    (["hydra.launcher.partition=nope"], "set hydra.launcher.partition to one of debug, gpu"),
    (["device=cuda:1", "hydra.launcher.partition=gpu"], "use device=cuda"),
])
def test_slurm_request_that_cannot_fit_fails_before_sbatch(tmp_path, overrides, says):
    env, script = fake_slurm(tmp_path)
    proc = submit(tmp_path, env, *overrides)
    assert proc.returncode != 0 and says in proc.stderr, proc.stderr[-2000:]
    assert not script.exists() and "Traceback" not in proc.stderr


def test_sinfo_parsing():
    from harness.launch.slurm import _gpus, _minutes
    assert [_minutes(x) for x in ("infinite", "30", "2:00:00", "1-00:00:00", "45:30")] == [None, 30, 120, 1440, 45.5]
    assert [_gpus(x) for x in ("(null)", "gpu:4", "gpu:a100:4(S:0-1),shard:8", "mps:100,gpu:v100:2")] == [0, 4, 4, 2]


# --------------------------------------------------------------------------- one GPU per job
def test_gpus_follow_the_device(monkeypatch):
    from harness.launch import gpus
    assert [gpus.gpus_for(d, True) for d in ("cpu", "mps", "cuda", "cuda:0", "auto")] == [0, 0, 1, 1, 1]
    assert gpus.gpus_for("auto", False) == 0
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert gpus.visible_gpus({}) == ["0", "1"]
    assert gpus.visible_gpus({"CUDA_VISIBLE_DEVICES": "5,7"}) == ["5", "7"]  # the parent's mask is kept
    assert gpus.visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-a,GPU-b,GPU-c"}) == ["GPU-a", "GPU-b"]
    # three CUDA jobs on two GPUs: two at once on distinct GPUs, then the third; CPU jobs need none
    assert gpus.one_gpu_each(["cuda", "auto", "cpu", "cuda"], ["5", "7"]) == [["5", "7", None], ["5"]]
    assert gpus.one_gpu_each(["cuda", "cuda"], []) == [[None, None]]  # no GPU: the jobs write skipped rows


def test_ray_options_follow_the_device():
    from harness.launch.gpus import ray_init_options, ray_remote_options
    assert ray_remote_options({"num_cpus": 1, "num_gpus": None}, "cuda", 0)["num_gpus"] == 1
    assert ray_remote_options({"num_gpus": None}, "auto", 2)["num_gpus"] == 1
    cpu = ray_remote_options({"num_gpus": None}, "cpu", 2)
    assert cpu == {"num_gpus": 0}
    # a job holding no GPU is shown none (today's Ray would show it every GPU)
    assert ray_remote_options({"num_gpus": None}, "auto", 0)["runtime_env"]["env_vars"] == {"CUDA_VISIBLE_DEVICES": ""}
    assert ray_remote_options({"num_gpus": 2}, "cuda", 4)["num_gpus"] == 2  # explicit: kept
    assert "object_store_memory" not in ray_init_options({"address": "auto", "include_dashboard": False})
    assert ray_init_options({"address": None})["object_store_memory"] > 0


@pytest.mark.slow
def test_submitit_local_gives_each_job_one_gpu_of_the_parents_mask(tmp_path):
    """A "GPU machine" (torch.cuda.device_count patched to 2 in every process, by a sitecustomize:
    plug-ins are imported only in the workers now, never by the driver that hands out the masks) whose
    parent mask is 5,7: four device=auto jobs each see exactly one of 5 and 7, two of them each. The
    implementation runs in each job's worker, which gets the job's environment."""
    (tmp_path / "sitecustomize.py").write_text("import torch\ntorch.cuda.device_count = lambda: 2\n")
    (tmp_path / "gpu_seen.py").write_text(
        "import os, torch, torch.nn.functional as F, implementations\n"
        "@implementations.register('seen')\n"
        "def seen(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):\n"
        "    with open(os.environ['SEEN_FILE'], 'a') as f:\n"
        "        f.write(f\"{os.environ.get('SUBMITIT_LOCAL_JOB_ID')} {os.environ.get('CUDA_VISIBLE_DEVICES')}\\n\")\n"
        "    return F.conv2d(input, weight, bias, stride, padding, dilation, groups)\n")
    seen = tmp_path / "seen.txt"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="5,7", SEEN_FILE=str(seen),
               PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]))
    cmd = [sys.executable, "-m", "harness", "-m", "+launcher=submitit_local", "plugins=[gpu_seen]", "impl=seen",
           "seed=0,1,2,3", "device=auto", "suite=smoke", "passes=[forward]", "timing.min_run_time=0.01",
           f"hydra.sweep.dir={tmp_path / 's'}", "results_link=null"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    masks = {}
    for line in seen.read_text().splitlines():
        job, mask = line.split()
        masks.setdefault(job, set()).add(mask)
    assert len(masks) == 4 and all(len(m) == 1 for m in masks.values())
    assert sorted(m.pop() for m in masks.values()) == ["5", "5", "7", "7"]


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
    assert df["concurrent"].all()  # opted in: silent, but the rows still say so
    assert not [r for r in caplog.records if r.name == "harness.measure.concurrency"]


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
                       "budget_s=60")  # five jobs on two busy cores: no timeouts
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = tmp_path / "sweep"
    df = pd.read_parquet(sweep / "results.parquet")
    assert len(df) == len(DEFAULT_IMPLS) * 3 * 2 and set(df["impl"]) == DEFAULT_IMPLS and set(df["status"]) <= {"ok", "unsupported"}
    assert not df.duplicated(["impl", "layer", "pass"]).any() and df["job"].is_monotonic_increasing
    assert all((sweep / str(j) / COMPLETE).exists() for j in range(len(DEFAULT_IMPLS)))
    assert df["concurrent"].any(), "five jobs started at once on one CPU and none overlapped?"
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


@pytest.mark.parametrize("line", [
    "python -m harness -m +launcher=slurm hydra.launcher.partition=gpu impl=loop,unfold,fft,cudnn suite=resnet50 "
    "dtype=float32,float16",
    "python -m harness -m +launcher=slurm hydra.launcher.partition=gpu hydra.launcher.constraint=a100 "
    "hydra.launcher.timeout_min=120 hydra.launcher.array_parallelism=8 "
    "'hydra.launcher.setup=[\"module load cuda/12.4\",\"source .venv/bin/activate\"]' suite=vgg16",
])
def test_readme_gpu_slurm_commands_render_one_gpu_per_job(tmp_path, line):
    """The README's GPU commands (no GPU cluster here): rendered against a fake GPU partition."""
    import shlex
    readme = (REPO / "README.md").read_text()
    assert line in readme, "the README no longer shows this command"
    env, script = fake_slurm(tmp_path)
    cmd = [sys.executable, *shlex.split(line)[1:], f"hydra.sweep.dir={tmp_path / 's'}", "results_link=null"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "sbatch: fake" in proc.stderr, proc.stderr[-2000:]
    lines = script.read_text().splitlines()
    assert {"#SBATCH --gpus-per-node=1", "#SBATCH --partition=gpu", "#SBATCH --mem=8GB"} <= set(lines)
    assert "#SBATCH --exclusive" not in lines
