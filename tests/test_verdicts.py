"""Verdicts that real bugs cannot slip past. Each planted bug (tests/plugins/broken_convs.py) returns the
right values on some or all calls, so only the new checks can flag it: inputs untouched, outputs not
aliasing inputs, several checked calls (one after the timed runs), and the accuracy cost against the
vendor. Through the real entry point, beside the built-ins, which must stay ok and deterministic."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from harness.measure.check import RepeatedChecks, call_labels
from harness.measure.integrity import InputGuard, shared_memory
from harness.table.collect import add_err_vs_vendor

from conftest import PLUGINS, run_harness


def test_input_guard_counts_changed_elements_bitwise_and_restores():
    x = torch.tensor([1.0, 0.0, float("nan"), 4.0])
    guard = InputGuard(x=x, bias=None)
    assert guard.changes() == []
    x.data[1] = -0.0  # equal as a number, not as bits
    x.data[3] = 5.0
    assert guard.changes() == ["x was modified in place by the call: 2 of 4 elements changed"]
    assert torch.equal(x[:2].view(torch.int32), torch.tensor([1.0, 0.0]).view(torch.int32)) and x[3] == 4.0
    assert guard.changes() == [], "restored: the next call sees the original input"


def test_shared_memory_finds_views_and_overlaps_only():
    x = torch.zeros(10)
    assert shared_memory({"output": x[2:5]}, {"x": x}) == [
        "output shares memory with x (the result aliases an input: writing to one changes the other)"]
    assert shared_memory({"output": x.clone()}, {"x": x}) == []
    assert shared_memory({"output": x[:5]}, {"x": x[5:]}) == []


def test_call_labels():
    assert call_labels(1) == (["first call"], None)
    assert call_labels(2) == (["first call"], "call after the timed runs")
    assert call_labels(4) == (["first call", "second call", "call 3"], "call after the timed runs")


def _checks(ref):
    return RepeatedChecks({"output": ref}, torch.float32, torch.device("cpu"), InputGuard(x=torch.ones(3)))


def test_nondeterminism_within_tolerance_stays_ok_but_is_recorded():
    ref = torch.linspace(1, 2, 100, dtype=torch.float64)
    checks = _checks(ref)
    checks.check("first call", {"output": ref.float()})
    checks.check("second call", {"output": ref.float() * (1 + 1e-7)})
    v = checks.verdict()
    assert v.correct and v.deterministic is False and 0 < v.repeat_max_diff < 1e-5 and v.calls == 2


def test_the_worst_call_decides_and_is_named():
    ref = torch.linspace(1, 2, 100, dtype=torch.float64)
    checks = _checks(ref)
    checks.check("first call", {"output": ref.float()})
    checks.check("second call", {"output": ref.float() * 1.01})
    checks.check("call after the timed runs", {"output": ref.float()})
    v = checks.verdict()
    assert not v.correct and v.rel_err > 1e-3 and v.deterministic is False
    assert v.message.startswith("output: relative error") and v.message.endswith("[second call; 3 calls checked]")


def test_a_reused_output_buffer_is_caught():
    ref = torch.linspace(1, 2, 100, dtype=torch.float64)
    buffer = ref.float().clone()
    checks = _checks(ref)
    checks.check("first call", {"output": buffer})
    buffer.mul_(2)  # the implementation writes its next result into the buffer it returned before
    checks.check("second call", {"output": buffer})
    assert "output of the first call changed afterwards" in checks.verdict().message


def test_err_vs_vendor_handles_an_exact_vendor():
    rows = pd.DataFrame({"impl": ["cudnn", "fft", "cudnn", "fft", "loop"], "status": ["ok"] * 5,
                         "dtype": ["float64", "float64", "float32", "float32", "float32"],
                         "rel_err": [0.0, 1e-15, 1e-7, 5e-6, float("nan")], "pass": "forward", "shape": "s",
                         "sweep": "a", "host": "h", "device_name": pd.NA, "device": "cpu"})
    ratio = add_err_vs_vendor(rows)["err_vs_vendor"].tolist()
    assert ratio[0] == 0.0 and ratio[1] == pytest.approx(1e-15 / 2 ** -53)
    assert ratio[2] == 1.0 and ratio[3] == pytest.approx(50) and pd.isna(ratio[4])


PLANTED = ["sneaky_relu_into_x", "sneaky_scales_weight", "sneaky_zeroes_bias", "sneaky_scales_grad_out",
           "sneaky_aliases_x", "flaky_every_other_call", "stale_after_many_calls", "imprecise_within_tolerance"]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("planted")
    proc = run_harness(tmp, "suite=smoke", f"impl=cudnn,loop,fft,{','.join(PLANTED)}", "plugins=[broken_convs]",
                       "timing.min_run_time=0.01", pythonpath=(PLUGINS,))
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = pd.read_parquet(tmp / "sweep" / "results.parquet")
    return {(impl, p): rows for (impl, p), rows in df.groupby(["impl", "pass"])}


def _rows(planted, impl, pass_):
    return planted[impl, pass_]


@pytest.mark.parametrize("impl, pass_, tensor", [
    ("sneaky_relu_into_x", "forward", "x"), ("sneaky_scales_weight", "forward", "weight"),
    ("sneaky_zeroes_bias", "forward", "bias"), ("sneaky_scales_grad_out", "backward", "grad_out")])
def test_an_input_modified_in_place_is_incorrect(planted, impl, pass_, tensor):
    rows = _rows(planted, impl, pass_)
    if tensor == "bias":
        rows = rows[rows["bias"]]
    assert len(rows) and set(rows["status"]) == {"incorrect"}
    assert rows["message"].str.contains(rf"^{tensor} was modified in place by the call: \d+ of \d+ elements changed").all()
    assert rows["rel_err"].lt(1e-4).all(), "the values were right: only the integrity check can flag it"


def test_an_output_aliasing_its_input_is_incorrect(planted):
    rows = _rows(planted, "sneaky_aliases_x", "forward")
    aliased = rows[rows["layer"] != "plain"]  # where the output fits into x's memory
    assert set(aliased["status"]) == {"incorrect"} and aliased["message"].str.contains("output shares memory with x").all()


def test_wrong_on_some_calls_is_incorrect_and_nondeterministic(planted):
    rows = _rows(planted, "flaky_every_other_call", "forward")
    assert set(rows["status"]) == {"incorrect"} and not rows["deterministic"].any()
    assert rows["message"].str.contains("second call").all() and rows["repeat_max_diff"].gt(0).all()


def test_wrong_only_after_many_calls_is_caught_by_the_call_after_the_timed_runs(planted):
    rows = _rows(planted, "stale_after_many_calls", "forward")
    assert set(rows["status"]) == {"incorrect"}
    assert rows["message"].str.endswith("[call after the timed runs; 3 calls checked]").all()


def test_accurate_but_imprecise_is_ok_with_a_large_err_vs_vendor(planted):
    for pass_ in ("forward", "backward"):
        rows = _rows(planted, "imprecise_within_tolerance", pass_)
        assert set(rows["status"]) == {"ok"} and rows["err_vs_vendor"].gt(50).all()


def test_builtins_stay_ok_and_deterministic(planted):
    for impl in ("cudnn", "loop", "fft"):
        for pass_ in ("forward", "backward"):
            rows = _rows(planted, impl, pass_)
            assert set(rows["status"]) == {"ok"} and rows["deterministic"].all(), (impl, pass_)
            assert rows["err_vs_vendor"].lt(10).all()
