"""`make bench-gpu` (harness/bench_gpu.py), tested on a machine without a GPU: the target exists,
refuses clearly without CUDA, its sweep's command line composes into the intended jobs, and one
failing step does not hide the others. Also: every CUDA-only test carries the `cuda` marker."""
from __future__ import annotations

import ast
import itertools
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser

from harness import bench_gpu
from harness.callbacks import check_sweep
from harness.config import to_config

from conftest import REPO

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def test_make_target_runs_the_script():
    makefile = (REPO / "Makefile").read_text()
    rule = re.search(r"^bench-gpu:.*## (.+)\n\t(.+)$", makefile, re.M)
    assert rule, "no documented bench-gpu target in the Makefile"
    assert rule.group(2) == "$(PY) -m harness.bench_gpu $(ARGS)"
    assert "bench-gpu" in re.search(r"^\.PHONY:(.*)$", makefile, re.M).group(1).split()


@NO_CUDA
def test_refuses_without_cuda(tmp_path, capsys, monkeypatch):
    """Exit 2 with a message that says why and what to do; nothing runs, nothing is written."""
    monkeypatch.setattr(bench_gpu, "run_all", lambda *a: pytest.fail("ran steps without a GPU"))
    assert bench_gpu.main(["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no CUDA device" in err and "make setup TORCH=" in err and "--dry-run" in err
    assert not (tmp_path / "out").exists()


def test_dry_run_lists_every_step_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert bench_gpu.main(["--out", str(out), "--dry-run", "budget_s=5"]) == 0
    text = capsys.readouterr().out
    for needle in ("-m pytest -q -m 'not slow'", "suite=resnet50,kernels dtype=float32,float16,bfloat16 device=cuda",
                   f"hydra.sweep.dir={out / 'sweep'} budget_s=5", "harness.timer_agreement --device cuda",
                   "harness.perf --device cuda"):
        assert needle in text, needle
    assert not out.exists()


def _jobs(overrides: list[str], sweeper_params: dict) -> list[list[str]]:
    """The jobs Hydra's basic sweeper makes of a multirun command line: the product of every
    swept value (the config's own sweeper params first, as Hydra does)."""
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in sweeper_params.items()] + overrides)
    axes = {}
    for o in parsed:
        key = o.get_key_element()
        axes[key] = [f"{key}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override() else [o.input_line]
    return [list(job) for job in itertools.product(*axes.values())]


def test_sweep_command_composes_into_one_job_per_impl_suite_dtype(compose, tmp_path):
    """The sweep step's Hydra overrides, expanded as the sweeper will: every implementation the
    config sweeps by default x 2 suites x 3 dtypes, each a valid config on device=cuda, all in the
    one sweep folder."""
    (sweep,) = [s for s in bench_gpu.steps(tmp_path) if s.name == "sweep"]
    assert sweep.argv[1:4] == ["-m", "harness", "-m"]
    overrides = sweep.argv[4:]
    assert f"hydra.sweep.dir={tmp_path / 'sweep'}" in overrides
    task = [o for o in overrides if not o.startswith("hydra.")]
    hydra_cfg = compose(hydra=True)
    hydra_cfg.hydra.overrides.task = task
    check_sweep(hydra_cfg)  # what the app checks before the first job
    jobs = _jobs(task, dict(hydra_cfg.hydra.sweeper.params))
    seen = set()
    for job in jobs:
        conf = to_config(compose(*job))
        assert conf.device == "cuda"
        seen.add((conf.impl, conf.suite.name, conf.dtype.name))
    impls = str(hydra_cfg.hydra.sweeper.params.impl).split(",")
    assert {"loop", "unfold", "fft", "cudnn"} <= set(impls)
    assert len(jobs) == len(seen) == len(impls) * len(bench_gpu.SUITES) * len(bench_gpu.DTYPES)
    assert seen == set(itertools.product(impls, bench_gpu.SUITES, bench_gpu.DTYPES))


def test_a_failing_step_does_not_hide_the_others(tmp_path, capsys):
    """Every step runs whatever the earlier ones did; the exit status and SUMMARY.md tell which failed."""
    py = sys.executable
    run = [bench_gpu.Step("first", "fails", [py, "-c", "print('boom'); raise SystemExit(3)"]),
           bench_gpu.Step("second", "works", [py, "-c", "print('still ran')"])]
    assert bench_gpu.run_all(run, tmp_path, REPO, "test device") == 1
    assert [s.rc for s in run] == [3, 0]
    assert "still ran" in (tmp_path / "second.log").read_text()
    text = (tmp_path / "SUMMARY.md").read_text()
    assert "| first | fails | FAILED (exit 3) |" in text and "| second | works | ok |" in text and "boom" in text
    printed = capsys.readouterr().out
    assert "FAILED: first" in printed and str(tmp_path / "SUMMARY.md") in printed


@NO_CUDA
@pytest.mark.slow
def test_sweep_command_runs_end_to_end(tmp_path):
    """The sweep step's exact command on a CPU-only machine: one sweep folder, one table, one report;
    every row is `skipped` (no CUDA), none failed."""
    (sweep,) = [s for s in bench_gpu.steps(tmp_path) if s.name == "sweep"]
    sweep.argv.append(f"results_link={tmp_path / 'latest'}")
    bench_gpu.run_step(sweep, tmp_path / "sweep.log", REPO)
    assert sweep.rc == 0, (tmp_path / "sweep.log").read_text()[-3000:]
    df = pd.read_parquet(tmp_path / "sweep" / "results.parquet")
    assert set(df["status"]) == {"skipped"} and set(df["suite"]) == set(bench_gpu.SUITES)
    assert set(df["dtype"]) == set(bench_gpu.DTYPES) and {"loop", "unfold", "fft", "cudnn"} <= set(df["impl"])
    assert (tmp_path / "sweep" / "report.html").exists()


def _decorators(fn: ast.FunctionDef) -> list[str]:
    return [ast.unparse(d) for d in fn.decorator_list]


def test_every_cuda_only_test_carries_the_cuda_marker():
    """A test skipped without CUDA must be marked `cuda`, so `-m cuda` selects every CUDA path
    (test_fft.py's CUDA test once lacked the marker)."""
    unmarked, found = [], 0
    for path in sorted((REPO / "tests").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                decorators = _decorators(node)
                if any("cuda.is_available()" in d and "skipif" in d for d in decorators):
                    found += 1
                    if "pytest.mark.cuda" not in decorators:
                        unmarked.append(f"{path.name}::{node.name}")
    assert found >= 4, found  # conformance (all its CUDA checks in one test since convbench.testing), errors, fft, unfold/loop
    assert not unmarked, f"CUDA-only tests without @pytest.mark.cuda: {unmarked}"
