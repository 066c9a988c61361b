"""The README's Ray commands against a real local Ray: the plug-in's own `ray.init`, then a cluster started
with `ray start --head` and joined with address=auto (finding 5). Needs the .[ray] extra."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from clusterlib import readme, run_command

pytestmark = [pytest.mark.ray, pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None,
    reason="hydra-ray-launcher not installed (pip install -e '.[ray]'; make test-cluster does)")]

LOCAL = "RAY_AUTH_MODE=disabled python -m harness -m +launcher=ray impl=unfold,fft,cudnn suite=smoke"
START = "RAY_AUTH_MODE=disabled ray start --head --include-dashboard=false"
JOIN = ("RAY_AUTH_MODE=disabled python -m harness -m +launcher=ray hydra.launcher.ray.init.address=auto "
        "impl=unfold,fft,cudnn suite=smoke")
STOP = "ray stop"


def ray_running() -> bool:
    ray = shutil.which("ray", path=str(Path(sys.executable).parent))
    return subprocess.run([ray, "status"], capture_output=True, timeout=60,
                          env=dict(os.environ, RAY_AUTH_MODE="disabled")).returncode == 0


def check_sweep(proc, tmp_path) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = pd.read_parquet(tmp_path / "sweep" / "results.parquet")
    assert len(df) == 18 and set(df["status"]) == {"ok"} and set(df["impl"]) == {"unfold", "fft", "cudnn"}
    assert f"concurrent: {int(df['concurrent'].sum())} of 18 rows" in proc.stdout
    assert "(0 GPU)" in proc.stdout  # device=auto on a machine without GPUs: no GPU held


def test_readme_ray_commands(tmp_path):
    if ray_running():
        pytest.skip("a Ray cluster is already running here: not starting (or stopping) another one")
    (tmp_path / "local").mkdir()
    check_sweep(run_command(readme(LOCAL), tmp_path / "local"), tmp_path / "local")
    assert not ray_running()  # the plug-in's own Ray ended with the sweep
    start = run_command(readme(START), tmp_path, "--num-cpus=2", timeout=180)
    assert start.returncode == 0, start.stderr[-3000:]
    try:
        (tmp_path / "joined").mkdir()
        proc = run_command(readme(JOIN), tmp_path / "joined")
        assert "object_store_memory must not be provided" not in proc.stderr  # finding 5
        check_sweep(proc, tmp_path / "joined")
        assert "Connecting to existing Ray cluster" in proc.stderr + proc.stdout
    finally:
        stop = run_command(readme(STOP), tmp_path, timeout=120)
    assert stop.returncode == 0 and not ray_running()
