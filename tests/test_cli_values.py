"""The command line through the real entry point: values are read the way Hydra reads them (dotted
`package.module:function` paths anywhere in a sweep, quoted or not), and a value the schema rejects
is one line naming the key, the value and what is allowed, exit status 2, no traceback."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from harness.overrides import swept_values

from conftest import REPO, run_harness


def test_swept_values_are_read_as_hydra_reads_them():
    assert swept_values(["impl=fft,mypkg.mod:my_conv"], "impl") == ["fft", "mypkg.mod:my_conv"]
    assert swept_values(["impl='mypkg.mod:f',\"a.b:c\",cudnn"], "impl") == ["mypkg.mod:f", "a.b:c", "cudnn"]
    assert swept_values(["impl=mypkg.mod:f"], "impl") == ["mypkg.mod:f"]
    assert swept_values(["impl=choice(loop,a.b:c)"], "impl") == ["loop", "a.b:c"]
    assert swept_values(["plugins=[a,b]"], "plugins") == [["a", "b"]]


def _package_outside_the_repo(tmp_path):
    pkg = tmp_path / "outside" / "mypkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    shutil.copy(REPO / "examples" / "my_conv.py", pkg / "mod.py")
    return tmp_path / "outside"


def test_dotted_paths_mixed_with_names_quoted_or_not_in_a_sweep(tmp_path):
    outside = _package_outside_the_repo(tmp_path)
    proc = run_harness(tmp_path, "suite=smoke", "passes=[forward]", "timing.min_run_time=0.01",
                       "impl=fft,mypkg.mod:conv2d_windows,'mypkg.mod:conv2d_windows'", pythonpath=(outside,))
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = pd.read_parquet(tmp_path / "sweep" / "results.parquet")
    assert df["impl"].drop_duplicates().tolist() == ["fft", "mypkg.mod:conv2d_windows"]
    assert len(df) == 3 * 3 and set(df["status"]) == {"ok"}


@pytest.mark.slow
def test_a_dotted_path_alone_in_a_single_run(tmp_path):
    outside = _package_outside_the_repo(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(outside))
    proc = subprocess.run([sys.executable, "-m", "harness", "impl=\"mypkg.mod:conv2d_windows\"", "suite=smoke",
                           "passes=[forward]", "timing.min_run_time=0.01", f"hydra.run.dir={tmp_path / 'run'}",
                           "results_link=null"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert set(pd.read_parquet(tmp_path / "run" / "results.parquet")["impl"]) == {"mypkg.mod:conv2d_windows"}


def _harness(tmp_path, *args, env=None):
    return subprocess.run([sys.executable, "-m", "harness", *args, "suite=smoke",
                           f"hydra.sweep.dir={tmp_path / 'sweep'}", f"hydra.run.dir={tmp_path / 'run'}",
                           "results_link=null"], cwd=tmp_path, capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})), timeout=120)


SLOW = pytest.mark.slow
BAD_VALUES = [
    pytest.param(["batch=-1"], "batch=-1 is not valid; expected a positive integer", id="single batch=-1"),
    pytest.param(["-m", "impl=fft", "timing.min_run_time=1,-1"],
                 "timing.min_run_time=-1.0 is not valid; expected seconds, > 0", id="swept timing.min_run_time"),
    pytest.param(["-m", "budget_s=0"], "budget_s=0.0 is not valid; expected seconds, > 0", id="multirun budget_s=0",
                 marks=SLOW),
    pytest.param(["-m", "check.calls=0"], "check.calls=0 is not valid; expected an integer >= 1", id="check.calls=0",
                 marks=SLOW),
    pytest.param(["dtype=float8"], "dtype=float8 is not valid; expected one of float32, float64", id="enum",
                 marks=SLOW),
    pytest.param(["-m", "batch=abc"], "batch=abc is not valid; expected an integer", id="type", marks=SLOW),
]


@pytest.mark.parametrize("args, line", BAD_VALUES)
def test_a_bad_value_is_one_line_and_exit_status_2(tmp_path, args, line):
    proc = _harness(tmp_path, *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().startswith(f"convbench: {line}"), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "run").exists(), "nothing may run"


@pytest.mark.slow
def test_hydra_full_error_still_shows_the_traceback(tmp_path):
    proc = _harness(tmp_path, "batch=-1", env={"HYDRA_FULL_ERROR": "1"})
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "batch=-1 is not valid" in proc.stderr


def test_a_bad_name_is_one_line_and_exit_status_2_too(tmp_path):
    proc = _harness(tmp_path, "-m", "impl=fft,nosuch")
    assert proc.returncode == 2 and "unknown implementation 'nosuch'" in proc.stderr
    assert "Traceback" not in proc.stderr
