"""Issue #22: no plug-in can take a sweep down or change what another row is judged against.

The planted plug-ins (tests/plugins/hostile.py) fail the way native code and "drop-in accelerator"
packages fail. First the pieces (torch's own functions, global state, the supervisor's deadline and
crash accounting) in this process, then each planted failure through a real worker, then whole
sweeps through `python -m harness` (basic launcher; submitit_local is slow; SLURM is in
tests/cluster/test_isolation_slurm.py)."""
from __future__ import annotations

import sys

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import implementations
from harness.config import Cache, Shape, Timing
from harness.measure import guard, supervise
from harness.measure.cases import make_case
from harness.measure.check import reference
from harness.measure.passes import CaseSettings, PassResult
from harness.measure.supervise import Phase, Supervisor, crashed_results, describe_exit, grace, tail
from harness.measure.worker import WorkerSpec
from harness.table.schema import Status

from conftest import PLUGINS, run_harness

TINY = Shape(layer="tiny", n=1, c_in=2, h=6, w=6, c_out=3, kernel=3, padding=1)
CPU = torch.device("cpu")


def _one_percent_off(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return torch.ops.aten.convolution(input, weight, bias, [stride] * 2, [padding] * 2, [dilation] * 2,
                                      False, [0, 0], groups) * 1.01


# ----------------------------------------------------------------------------- torch's own functions
def test_a_replaced_conv_is_named_with_the_module_that_replaced_it(monkeypatch):
    own = guard.TorchOwn()
    assert own.changes() == []
    monkeypatch.setattr(torch.nn.functional, "conv2d", _one_percent_off)
    monkeypatch.setattr(torch.nn.Conv2d, "forward", lambda self, x: x)
    changes = own.changes()
    assert f"torch.nn.functional.conv2d was replaced by {__name__}._one_percent_off (module {__name__})" in changes
    assert any(c.startswith("torch.nn.Conv2d.forward was replaced by") for c in changes) and len(changes) == 2
    monkeypatch.undo()
    assert own.changes() == []


def test_a_function_mode_left_on_is_named():
    from torch.overrides import TorchFunctionMode
    own = guard.TorchOwn()
    with TorchFunctionMode():
        assert "mode was left active" in " ".join(own.changes())
    assert own.changes() == []


def test_the_reference_and_cudnn_ignore_a_patched_f_conv2d(monkeypatch):
    case = make_case(TINY, CPU, torch.float32, 0)
    clean_out, clean_grads = reference(case)
    clean_cudnn = implementations.get("cudnn")(case.x, case.weight, case.bias, padding=1)
    monkeypatch.setattr(torch.nn.functional, "conv2d", _one_percent_off)
    monkeypatch.setattr(torch, "conv2d", _one_percent_off)
    out, grads = reference(case)
    assert torch.equal(out, clean_out) and all(torch.equal(grads[k], clean_grads[k]) for k in clean_grads)
    assert torch.equal(implementations.get("cudnn")(case.x, case.weight, case.bias, padding=1), clean_cudnn)
    assert not torch.equal(F.conv2d(case.x, case.weight, case.bias, padding=1), clean_cudnn)  # the patch is live


# --------------------------------------------------------------------------------------- global state
def test_global_state_changes_are_named_and_undone():
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    state = guard.GlobalState.capture(seed=0)
    state.reset()
    assert state.restore() == []
    try:
        torch.set_num_threads(threads + 1)
        torch.set_default_dtype(torch.float64)
        torch.backends.cudnn.deterministic = not torch.backends.cudnn.deterministic
        torch.rand(1)
        changed = state.restore()
    finally:
        torch.set_num_threads(threads)
        torch.set_default_dtype(dtype)
    assert f"torch.get_num_threads() {threads} -> {threads + 1}" in changed
    assert "torch.get_default_dtype() torch.float32 -> torch.float64" in changed
    assert any(c.startswith("torch.backends.cudnn.deterministic") for c in changed)
    assert "torch's global random generator was drawn from or reseeded" in changed
    assert torch.get_num_threads() == threads and torch.backends.cudnn.deterministic is state.values[
        "torch.backends.cudnn.deterministic"], "undone"


def test_flush_denormal_is_seen_and_undone():
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush denormals")
    torch.set_flush_denormal(False)
    state = guard.GlobalState.capture()
    torch.set_flush_denormal(True)
    assert [c for c in state.restore() if c.startswith("flush denormal")] == ["flush denormal (torch.set_flush_denormal) False -> True"]
    assert not guard._flushes_denormals()


# ------------------------------------------------------------------------- the supervisor's accounting
def test_a_phase_may_run_its_budget_plus_the_grace():
    assert grace(2.0) == supervise.MIN_GRACE_S and grace(30.0) == 30.0
    assert Phase.starting("forward", 2.0, now=100.0).kill_at == 100.0 + 2.0 + supervise.MIN_GRACE_S
    assert Phase.starting("reference", None, now=100.0).kill_at == 100.0 + supervise.UNBUDGETED_S


def test_exits_are_described():
    assert describe_exit(-11) == "was killed by SIGSEGV (Segmentation fault)"
    assert describe_exit(-9) == "was killed by SIGKILL (Killed)" and describe_exit(3) == "exited with status 3"


def test_the_stderr_tail_keeps_where_a_fatal_signal_hit(tmp_path):
    log = tmp_path / "worker.log"
    log.write_text("old worker's noise\n" + "Fatal Python error: Segmentation fault\n\nCurrent thread 0x1 (most recent "
                   "call first):\n  File \"/p/hostile.py\", line 19 in segfault\n  File \"/h/passes.py\", line 1 in "
                   "forward\nExtension modules: numpy, torch (total: 2)\n")
    text = tail(log, len("old worker's noise\n"))
    assert text.startswith("Fatal Python error: Segmentation fault | File \"/p/hostile.py\", line 19 in segfault")
    assert "Extension modules" not in text and "noise" not in text


def test_a_crash_keeps_the_passes_already_done():
    fwd = PassResult(status=Status.ok, done=True)
    res = crashed_results(("forward", "backward"), "backward", "the worker was killed", {"forward": fwd})
    assert res["forward"] is fwd and res["backward"].status == Status.crashed
    res = crashed_results(("forward", "backward"), "forward", "boom", None)
    assert res["backward"].message == "forward pass crashed first: boom"
    res = crashed_results(("forward", "backward"), "reference", "boom", None)
    assert [r.message for r in res.values()] == ["boom", "boom"]


# ------------------------------------------------------------------- each planted failure in a worker
def _spec(impl: str, budget_s: float = 30.0, **kw) -> WorkerSpec:
    settings = CaseSettings(torch.float32, ("forward", "backward"), Timing(min_run_time=0.01, warmup=0, cache=Cache.warm),
                            threads=1, budget_s=budget_s, seed=0)
    return WorkerSpec(impl=impl, modules=("hostile",), device="cpu", settings=settings, warm=False,
                      sys_path=(str(PLUGINS), *sys.path), **kw)


def _run(tmp_path, impl: str, cases: int = 1, **kw):
    with Supervisor(_spec(impl, **kw), tmp_path / "worker.log") as sup:
        assert sup.start() == (None, "")
        results = [sup.run(TINY) for _ in range(cases)]
        return results, sup.started


@pytest.mark.parametrize("impl, says", [
    ("hostile_segfault", "the worker was killed by SIGSEGV (Segmentation fault) in the forward pass"),
    ("hostile_abort", "the worker was killed by SIGABRT (Aborted) in the forward pass"),
    ("hostile_sys_exit", "the worker exited with status 3 in the forward pass"),
    ("hostile_os_exit", "the worker exited with status 5 in the forward pass"),
])
def test_a_dying_worker_gives_crashed_rows_and_is_replaced(tmp_path, impl, says):
    results, started = _run(tmp_path, impl, cases=2)
    assert started == 2, "the second case got a new worker"
    for res in results:
        assert res["forward"].status == Status.crashed and res["forward"].message.startswith(says)
        assert res["backward"].status == Status.crashed and res["backward"].message.startswith("forward pass crashed first")
    if "SIG" in says:  # faulthandler's report names the plug-in's frame
        assert 'hostile.py", line' in results[0]["forward"].message


def test_a_native_call_past_the_budget_is_killed(tmp_path, monkeypatch):
    """One ATen call of minutes, which SIGALRM cannot interrupt: killed once budget + grace are over."""
    monkeypatch.setattr(supervise, "MIN_GRACE_S", 0.5)
    (res,), _ = _run(tmp_path, "hostile_native_hang", budget_s=0.5)
    assert res["forward"].status == Status.crashed
    assert res["forward"].message.startswith("the worker stopped answering: no reply within 0.5 s of budget left "
                                             "when it last reported + 0.5 s grace")


def test_a_hung_backward_keeps_its_forward_row(tmp_path, monkeypatch):
    """The README's old limit (a hung backward of an autograd.Function could not be interrupted)."""
    monkeypatch.setattr(supervise, "MIN_GRACE_S", 0.5)
    (res,), _ = _run(tmp_path, "hostile_backward_hang", budget_s=0.5)
    assert res["forward"].status == Status.ok and res["forward"].timing is not None
    assert res["backward"].status == Status.crashed and "in the backward pass" in res["backward"].message


def test_a_memory_hog_meets_the_workers_limit(tmp_path):
    (res,), _ = _run(tmp_path, "hostile_memory_hog", memory_limit=2 * 2 ** 30)
    assert res["forward"].status == Status.error
    assert "can't allocate memory" in res["forward"].message and "worker_memory_gb" in res["forward"].message


def test_a_patched_conv_is_an_error_naming_the_module_and_the_worker_is_retired(tmp_path):
    results, started = _run(tmp_path, "hostile_patches_conv", cases=2)
    assert started == 2
    for res in results:
        for r in res.values():
            assert r.status == Status.error
            assert r.message.startswith("torch.conv2d was replaced by hostile._one_percent_off (module hostile); "
                                        "torch.nn.functional.conv2d was replaced by hostile._one_percent_off")
            assert r.verdict.rel_err == pytest.approx(0.01, rel=1e-3), "judged against torch's own conv, not the patch"


def test_a_thread_count_changer_is_noted_and_undone_for_the_next_case(tmp_path):
    results, started = _run(tmp_path, "hostile_threads", cases=2)
    assert started == 1, "a state change is undone in place: the worker stays"
    for res in results:
        assert {r.status for r in res.values()} == {Status.ok}
        assert "torch.get_num_threads() 1 -> 2" in res["forward"].message, "noted again: it was undone in between"


def test_an_unknown_plugin_is_a_job_level_error(tmp_path):
    spec = _spec("cudnn")
    spec = WorkerSpec(**{**spec.__dict__, "modules": ("no_such_plugin_module",)})
    with Supervisor(spec, tmp_path / "worker.log") as sup:
        status, message = sup.start()
    assert status == Status.error and "cannot import 'no_such_plugin_module'" in message


# ------------------------------------------------------------------------ whole sweeps, real entry point
HOSTILE = ["hostile_segfault", "hostile_abort", "hostile_sys_exit", "hostile_os_exit", "hostile_native_hang",
           "hostile_backward_hang", "hostile_memory_hog", "hostile_patches_conv", "hostile_threads"]
HONEST = ["unfold", "cudnn"]


def sweep(tmp_path, impls, *extra, launcher=()):
    proc = run_harness(tmp_path, "suite=smoke", "device=cpu", "plugins=[hostile]", f"impl={','.join(impls)}",
                       "worker_memory_gb=2", "budget_s=1", "timing.min_run_time=0.01", *launcher, *extra,
                       pythonpath=(PLUGINS,), timeout=900)
    table = tmp_path / "sweep" / "results.parquet"
    return proc, (pd.read_parquet(table) if table.exists() else None)


def _check_planted(df: pd.DataFrame) -> None:
    rows = {impl: g for impl, g in df.groupby("impl")}
    assert set(rows) == set(HOSTILE + HONEST) and (df.groupby("impl").size() == 6).all()
    crashed = {"hostile_segfault": "SIGSEGV", "hostile_abort": "SIGABRT", "hostile_sys_exit": "exited with status 3",
               "hostile_os_exit": "exited with status 5", "hostile_native_hang": "stopped answering"}
    for impl, says in crashed.items():
        assert set(rows[impl]["status"]) == {"crashed"} and rows[impl]["message"].str.contains(says).all(), impl
    bwd = rows["hostile_backward_hang"].set_index("pass")["status"]
    assert set(bwd["forward"]) == {"ok"} and set(bwd["backward"]) == {"crashed"}
    assert set(rows["hostile_memory_hog"]["status"]) == {"error"}
    assert rows["hostile_memory_hog"]["message"].str.contains("worker_memory_gb").all()
    patched = rows["hostile_patches_conv"]
    assert set(patched["status"]) == {"error"}
    assert patched["message"].str.contains("torch.nn.functional.conv2d was replaced by hostile._one_percent_off "
                                           r"\(module hostile\)").all()
    threads = rows["hostile_threads"]
    assert set(threads["status"]) == {"ok"} and threads["message"].str.contains("torch.get_num_threads\\(\\) 1 -> 2").all()
    for impl in HONEST:  # swept after every planted failure: ok, at their true error, state untouched
        assert set(rows[impl]["status"]) == {"ok"}, rows[impl]["message"].tolist()
        assert rows[impl]["rel_err"].lt(1e-5).all() and (rows[impl]["message"] == "").all()


def test_every_planted_failure_is_its_own_rows_and_the_sweep_ends(tmp_path):
    proc, df = sweep(tmp_path, HOSTILE + HONEST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "table:" in proc.stdout and "report:" in proc.stdout and "crashed" in proc.stdout
    _check_planted(df)
    assert (tmp_path / "sweep" / "0" / "worker.log").read_text().count("--- worker") == 3  # one per case


def test_strict_fails_a_sweep_with_crashed_rows_after_writing_everything(tmp_path):
    proc, df = sweep(tmp_path, ["hostile_os_exit", "cudnn"], "strict=true")
    assert proc.returncode == 1 and "strict: 6 incorrect/error/crashed rows" in proc.stdout
    assert set(df[df["impl"] == "cudnn"]["status"]) == {"ok"} and (tmp_path / "sweep" / "report.html").exists()


def test_a_plugin_crashing_on_import_is_refused_before_any_job(tmp_path):
    proc = run_harness(tmp_path, "suite=smoke", "device=cpu", "plugins=[hostile_import]", "impl=cudnn",
                       pythonpath=(PLUGINS,))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "was killed by SIGSEGV" in proc.stderr and "hostile_import.py" in proc.stderr


@pytest.mark.slow
def test_planted_failures_under_submitit_local(tmp_path):
    impls = ["hostile_segfault", "hostile_native_hang", "hostile_patches_conv", "hostile_threads", *HONEST]
    proc, df = sweep(tmp_path, impls, "hydra.sweeper.max_batch_size=1", launcher=("+launcher=submitit_local",))
    assert proc.returncode == 0, proc.stderr[-3000:]
    status = {impl: set(g) for impl, g in df.groupby("impl")["status"]}
    assert status["hostile_segfault"] == {"crashed"} and status["hostile_native_hang"] == {"crashed"}
    assert status["hostile_patches_conv"] == {"error"} and status["hostile_threads"] == {"ok"}
    for impl in HONEST:
        rows = df[df["impl"] == impl]
        assert set(rows["status"]) == {"ok"} and rows["rel_err"].lt(1e-5).all()


def test_the_swap_check_runs_each_implementation_in_its_own_worker(tmp_path):
    import os
    import subprocess
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "harness.network", "tiny_nets:tiny_net", "--input", "2,3,16,16",
                           "impl=hostile_segfault,hostile_patches_conv,unfold,cudnn", "plugins=[hostile]",
                           "dtype=float32", "budget_s=10", "timing.min_run_time=0.01", "--out", str(tmp_path / "net")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-2000:]
    df = pd.read_parquet(tmp_path / "net" / "results.parquet")
    status = {impl: set(g) for impl, g in df.groupby("impl")["status"]}
    assert status["hostile_segfault"] == {"crashed"} and status["hostile_patches_conv"] == {"error"}
    assert status["unfold"] == {"ok"} and status["cudnn"] == {"ok"}
    assert df[df["impl"] == "hostile_segfault"]["message"].str.contains("SIGSEGV").all()
    assert df[df["impl"] == "hostile_patches_conv"]["message"].str.contains("(module hostile)", regex=False).all()
