"""Issue #22 on the real one-node SLURM (tests/cluster/slurm.sh): the worker lives inside each SLURM
job, so planted plug-ins that crash or patch torch give their own rows there too, and the honest
implementations of the same sweep stay ok. `make test-cluster` runs it."""
from __future__ import annotations

import pandas as pd
import pytest

from clusterlib import REPO, run_command, slurm_cluster  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slurm
PLUGINS = REPO / "tests" / "plugins"


def test_planted_failures_on_slurm(slurm_cluster, tmp_path):
    proc = run_command(f"PYTHONPATH={PLUGINS}:{REPO} python -m harness -m +launcher=slurm suite=smoke device=cpu "
                       "plugins=[hostile] impl=hostile_segfault,hostile_os_exit,hostile_patches_conv,unfold,cudnn",
                       tmp_path, "worker_memory_gb=2", "timing.min_run_time=0.01")
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = pd.read_parquet(tmp_path / "sweep" / "results.parquet")
    status = {impl: set(g) for impl, g in df.groupby("impl")["status"]}
    assert status["hostile_segfault"] == {"crashed"} and status["hostile_os_exit"] == {"crashed"}
    assert status["hostile_patches_conv"] == {"error"}
    assert df[df["impl"] == "hostile_segfault"]["message"].str.contains("SIGSEGV").all()
    assert df[df["impl"] == "hostile_os_exit"]["message"].str.contains("exited with status 5").all()
    for impl in ("unfold", "cudnn"):
        rows = df[df["impl"] == impl]
        assert status[impl] == {"ok"} and rows["rel_err"].lt(1e-5).all() and len(rows) == 6
