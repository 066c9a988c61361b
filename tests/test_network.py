"""Suites and checks from real networks (issue #13): capture a model's convolutions into a suite, network
totals from the results table, and the swap-every-conv check. Driven by the tiny models in
tests/plugins/tiny_nets.py (stride, groups, dilation, 'same' with an even kernel, no bias, a repeated
shape, a functional F.conv2d)."""
from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from harness import capture as cap
from harness import network
from harness.config import Shape, Suite
from harness.measure import check
from harness.measure.cases import scale_batch
from harness.report.totals import MIX, network_totals, totals_tables
from harness.table.row import Row
from harness.table.schema import frame

from conftest import PLUGINS, REPO, run_harness

TINY = "tiny_nets:tiny_net"
INPUT = "2,3,16,16"


@pytest.fixture(scope="module", autouse=True)
def plugins_on_path():
    """tests/plugins on sys.path (tiny_nets) and the planted wrong implementations registered, for this
    module only: left registered, a test elsewhere looping over implementations.names() would hang."""
    from implementations import registry
    sys.path.insert(0, str(PLUGINS))
    sys.modules.pop("broken_convs", None)  # imported (and unregistered) by an earlier module: register again
    try:
        import broken_convs  # noqa: F401
        yield
    finally:
        sys.path.remove(str(PLUGINS))
        for module in ("broken_convs", "tiny_nets"):
            sys.modules.pop(module, None)
        for name in [n for n in registry._registry if n.startswith("broken_")]:
            del registry._registry[name]


# ------------------------------------------------------------------------------------------ capture
def by_layer(shapes):
    return {s.layer: s for s in shapes}


def test_capture_records_every_conv_call_once_per_unique_shape():
    c = cap.capture(TINY, INPUT)
    assert c.device == "meta" and c.calls == 7 and len(c.shapes) == 6
    s = by_layer(c.shapes)
    assert list(s) == ["stem", "depthwise", "same", "blocks.0.conv", "grouped", "project"]
    assert s["blocks.0.conv"].count == 2 and s["blocks.0.conv"].paths == ["blocks.0.conv", "blocks.1.conv"]
    stem = s["stem"]
    assert (stem.n, stem.c_in, stem.h, stem.w, stem.c_out) == (2, 3, 16, 16, 8)
    assert stem.stride == (2, 2) and stem.padding == (1, 1) and not stem.bias
    assert s["depthwise"].groups == 8 and s["depthwise"].dilation == (2, 2) and s["depthwise"].bias
    assert s["same"].padding == "same" and s["same"].kernel == (2, 3)
    # a functional F.conv2d inside a custom module is captured too, under that module's path
    assert s["project"].c_in == 16 and s["project"].stride == (2, 2) and s["project"].paths == ["project"]
    assert sum(x.count for x in c.shapes) == c.calls


def test_capture_on_cpu_gives_the_same_shapes_as_on_meta():
    assert cap.capture(TINY, INPUT, device="cpu").shapes == cap.capture(TINY, INPUT, device="meta").shapes


def test_capture_sees_what_is_computed_padding_mode_pads_first():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"))
    calls = cap.record_calls(model, torch.randn(1, 3, 8, 8))
    assert [(c.path, c.shape["h"], c.shape["padding"]) for c in calls] == [("0", 10, 0)]


def test_capture_cli_writes_a_suite_that_loads_with_its_counts(tmp_path):
    out = tmp_path / "suite" / "tiny.yaml"
    assert cap.main([TINY, "--input", INPUT, "--name", "tiny", "--out", str(out), "width=4"]) == 0
    data = OmegaConf.load(out)
    suite = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Suite), data))
    assert suite.model == TINY and suite.input == [2, 3, 16, 16] and suite.kwargs == {"width": 4}
    assert suite.shapes == cap.capture(TINY, INPUT, {"width": 4}).shapes
    assert cap.main([TINY, "--input", INPUT, "--out", str(out)]) == 2, "an existing file needs --force"


@pytest.mark.parametrize("target,input,match", [
    ("no_such_module:f", INPUT, "cannot import 'no_such_module'.*PYTHONPATH"),
    ("tiny_nets:tiny_nett", INPUT, "has no 'tiny_nett'; its callables: .*tiny_net"),
    ("tiny_nets", INPUT, "package.module:factory"),
    ("tiny_nets:not_a_model", INPUT, "returned a int, not an nn.Module"),
    ("tiny_nets:no_conv", "1,12", "no conv2d call"),
    (TINY, "2,3,a,16", "comma-separated positive integers"),
    (TINY, "2,0,16,16", "comma-separated positive integers"),
    (TINY, "2,5,16,16", "forward pass on a 2,5,16,16 input failed.*--input"),
])
def test_bad_input_names_the_problem_and_the_fix(target, input, match):
    with pytest.raises(cap.CaptureError, match=match):
        cap.capture(target, input)


def test_factory_keyword_arguments():
    assert cap.parse_kwargs('{"width": 4}', ["num_classes=3", "name=x", "flag=true"]) == \
        {"width": 4, "num_classes": 3, "name": "x", "flag": True}
    with pytest.raises(cap.CaptureError, match="JSON"):
        cap.parse_kwargs("{width: 4")
    with pytest.raises(cap.CaptureError, match="calling it with"):
        cap.capture(TINY, INPUT, {"depth": 3})


def test_scale_batch_merges_counts_and_paths():
    a = Shape(layer="a", n=4, c_in=3, h=8, w=8, c_out=4, count=2, paths=["x", "y"])
    b = Shape(layer="b", n=2, c_in=3, h=8, w=8, c_out=4, count=3, paths=["z"])
    [merged] = scale_batch([a, b], 2)
    assert merged.layer == "a" and merged.count == 5 and merged.paths == ["x", "y", "z"]
    assert [s.count for s in scale_batch([a, b], None)] == [2, 3]


def test_model_suite_without_a_model_says_how_to_give_one(compose):
    from harness.config import ConfigError, to_config
    conf = to_config(compose("suite=model"))
    with pytest.raises(cap.CaptureError, match="suite.model=package.module:factory"):
        cap.expand_suite(conf)
    with pytest.raises(ConfigError, match="package.module:factory"):
        to_config(compose("suite=model", "suite.model=no_colon"))


def test_model_suite_is_expanded_from_the_model(compose):
    from harness.config import to_config
    conf = to_config(compose("suite=model", f"suite.model={TINY}", "suite.input=[2,3,16,16]", "+suite.kwargs.width=4"))
    expanded = cap.expand_suite(conf)
    assert expanded.suite.name == TINY and len(expanded.suite.shapes) == 6
    assert by_layer(expanded.suite.shapes)["stem"].c_out == 4
    assert cap.expand_suite(expanded) is expanded  # listed shapes are kept as they are


# ------------------------------------------------------------------------------------------- totals
def _rows(spec):
    """spec: (impl, layer, count, pass, status, seconds)."""
    return frame([Row(impl=i, suite="net", model="m:f", layer=lay, shape=lay, count=n, device="cpu", dtype="float32",
                      pass_=p, status=st, time_median_s=t) for i, lay, n, p, st, t in spec])


def test_totals_are_count_weighted_sums_and_the_mix_takes_each_layers_fastest():
    df = _rows([("cudnn", "a", 3, "forward", "ok", 1.0), ("cudnn", "b", 1, "forward", "ok", 2.0),
                ("fast", "a", 3, "forward", "ok", 0.5), ("fast", "b", 1, "forward", "ok", 4.0),
                ("wrong", "a", 3, "forward", "incorrect", 0.1), ("wrong", "b", 1, "forward", "ok", 0.1),
                ("slow", "a", 3, "forward", "ok", 9.0), ("slow", "b", 1, "forward", "timeout", None)])
    t = network_totals(df).set_index("impl")
    assert t.loc["cudnn", "total_s"] == 5.0 and t.loc["fast", "total_s"] == 5.5
    assert pd.isna(t.loc["wrong", "total_s"]) and "incorrect on 1 layer (a)" in t.loc["wrong", "note"]
    assert pd.isna(t.loc["slow", "total_s"]) and "timeout on 1 layer (b)" in t.loc["slow", "note"]
    # mix: a from fast (3 x 0.5), b from wrong, which is ok there (0.1): wrong rows never count
    assert t.loc[MIX, "total_s"] == pytest.approx(1.6) and t.loc[MIX, "speedup"] == pytest.approx(5.0 / 1.6)
    assert t.loc["cudnn", "speedup"] == 1.0


def test_forward_backward_total_picks_one_implementation_per_layer():
    df = _rows([("cudnn", "a", 1, "forward", "ok", 1.0), ("cudnn", "a", 1, "backward", "ok", 1.0),
                ("x", "a", 1, "forward", "ok", 0.5), ("x", "a", 1, "backward", "ok", 3.0)])
    t = network_totals(df)
    mix = t[t["impl"] == MIX].set_index("pass")["total_s"]
    assert mix["forward"] == 0.5 and mix["backward"] == 1.0 and mix["forward+backward"] == 2.0
    table = totals_tables(t, str)[("net", "cpu", "float32")]
    assert list(table["impl"]) == ["cudnn", "x", MIX] and "picks cudnn on 1 layer" in table["note"].iloc[-1]


def test_hand_written_suites_and_swap_check_rows_get_no_totals():
    df = _rows([("cudnn", "a", 1, "forward", "ok", 1.0)])
    assert network_totals(df.assign(model="")).empty
    assert network_totals(df.assign(suite="network:tiny")).empty


# -------------------------------------------------------------------------------- the swap check
def test_swap_replaces_every_plain_conv_and_keeps_shared_ones_shared():
    class Custom(nn.Conv2d):
        pass

    import tiny_nets
    model = tiny_nets.tiny_net()
    model.extra = Custom(3, 3, 1)
    model.alias = model.stem
    swapped, kept = network.swap_convs(model, "unfold")
    assert (swapped, kept) == (6, 1)
    assert model.alias is model.stem and model.stem.impl == "unfold"
    assert type(model.extra) is Custom


def test_swap_check_passes_good_implementations_and_fails_a_planted_wrong_one(tmp_path):
    opts = network.Options(impl=("unfold", "broken_values", "broken_raises"), min_run_time=0.01)
    df = network.run_check(TINY, (2, 3, 16, 16), {}, opts, "tiny", tmp_path)
    status = {key: set(g) for key, g in df.groupby(["impl", "dtype"])["status"]}
    for dtype in ("float64", "float32"):
        assert status["unfold", dtype] == {"ok"}
        assert status["broken_values", dtype] == {"incorrect"}
        assert status["broken_raises", dtype] == {"error"}
    good = df[df["impl"] == "unfold"]
    assert (good["rel_err"] <= good["tol"]).all() and good["time_median_s"].gt(0).all()
    wrong = df[(df["impl"] == "broken_values") & (df["pass"] == "forward+backward")]
    assert wrong["message"].str.contains("grad stem.weight").all()
    assert set(df["suite"]) == {"network:tiny"} and set(df["pass"]) == {"forward", "forward+backward"}
    assert (tmp_path / "results.parquet").exists()
    from harness.report import write_report
    assert "network:tiny" in write_report(tmp_path).with_suffix(".md").read_text()


def test_swap_check_options_and_errors():
    opts, factory = network.split_words(["impl=unfold,cudnn", "dtype=float32", "threads=null", "width=4"])
    assert opts.impl == ("unfold", "cudnn") and opts.dtype == ("float32",) and opts.threads is None
    assert factory == ["width=4"]
    with pytest.raises(cap.CaptureError, match="float32"):
        network.split_words(["dtype=float8"])
    with pytest.raises(ValueError, match="known implementations"):
        network.run_check(TINY, (2, 3, 16, 16), {}, network.Options(impl=("unfld",)), "tiny", REPO / "unused")
    with pytest.raises(cap.CaptureError, match="no nn.Conv2d"):
        network.run_check("tiny_nets:no_conv", (1, 12), {}, network.Options(), "x", REPO / "unused")


# ---------------------------------------------------------------------------- end to end
def test_capture_then_jobs_then_totals_in_process(tmp_path, monkeypatch):
    """The chain without subprocesses: capture -> Suite -> run_job per implementation -> totals."""
    from harness.config import Config, Timing
    from harness.measure import job
    monkeypatch.setattr(job, "peak_gflops", lambda *a, **kw: float("nan"))  # the roofline is not under test here
    c = cap.capture(TINY, INPUT)
    suite = Suite(name="tiny", shapes=c.shapes, model=TINY)
    frames = [job.run_job(Config(impl=impl, suite=suite, device="cpu", timing=Timing(min_run_time=0.005, warmup=0)),
                      tmp_path / impl, job=j, progress=False) for j, impl in enumerate(["unfold", "cudnn"])]
    df = pd.concat(frames, ignore_index=True)
    assert set(df["model"]) == {TINY} and df.groupby("impl")["count"].sum().tolist() == [2 * 7, 2 * 7]
    t = network_totals(df)
    cudnn = df[(df["impl"] == "cudnn") & (df["pass"] == "forward")]
    total = t[(t["impl"] == "cudnn") & (t["pass"] == "forward")]["total_s"].item()
    assert total == pytest.approx((cudnn["count"] * cudnn["time_median_s"]).sum())
    assert set(t["impl"]) == {"unfold", "cudnn", MIX} and t["total_s"].notna().all()


@pytest.mark.slow
def test_capture_then_sweep_then_totals_end_to_end(tmp_path):
    """capture -> a suite file -> `python -m harness -m` on it -> totals in the summary and the report."""
    env = {**os.environ, "PYTHONPATH": str(PLUGINS)}
    conf = tmp_path / "conf"
    proc = subprocess.run([sys.executable, "-m", "harness.capture", TINY, "--input", INPUT, "--name", "tiny",
                           "--out", str(conf / "suite" / "tiny.yaml")], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "captured 7 conv2d calls, 6 unique shapes" in proc.stdout and "--config-dir" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "harness", "-m", "--config-dir", str(conf), "suite=tiny",
                           "impl=unfold,cudnn", "timing.min_run_time=0.01", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                           "results_link=null"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = pd.read_parquet(tmp_path / "sweep" / "results.parquet")
    assert set(df["suite"]) == {"tiny"} and set(df["model"]) == {TINY}
    assert df.set_index("layer")["count"].to_dict()["blocks.0.conv"] == 2
    assert "Network totals: tiny" in proc.stdout and "best per layer" in proc.stdout
    report = (tmp_path / "sweep" / "report.md").read_text()
    assert "## Network totals" in report and "best per layer" in report


@pytest.mark.slow
def test_model_suite_in_a_sweep_resumes(tmp_path):
    args = ["suite=model", f"suite.model={TINY}", "suite.input=[2,3,16,16]", "impl=unfold,cudnn",
            "timing.min_run_time=0.01"]
    proc = run_harness(tmp_path, *args, pythonpath=(PLUGINS,))
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = pd.read_parquet(tmp_path / "sweep" / "results.parquet")
    assert len(first) == 2 * 6 * 2 and set(first["suite"]) == {TINY}
    proc = run_harness(tmp_path, *args, "resume=true", pythonpath=(PLUGINS,))
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = pd.read_parquet(tmp_path / "sweep" / "results.parquet")
    assert again["time_median_s"].tolist() == first["time_median_s"].tolist(), "a resumed sweep measures nothing again"
    bad = run_harness(tmp_path, "suite=model", "suite.model=tiny_nets:nope", "impl=cudnn", pythonpath=(PLUGINS,))
    assert bad.returncode != 0 and "has no 'nope'" in bad.stderr


@pytest.mark.slow
def test_swap_check_cli_exits_1_on_a_planted_wrong_implementation(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(PLUGINS)}
    cmd = [sys.executable, "-m", "harness.network", TINY, "--input", INPUT, "--out", str(tmp_path / "out"),
           "plugins=broken_convs", "timing.min_run_time=0.01", "dtype=float32"]
    good = subprocess.run(cmd + ["impl=unfold,cudnn"], cwd=REPO, env=env, capture_output=True, text=True)
    assert good.returncode == 0, good.stderr + good.stdout
    assert "Swap-every-conv check" in good.stdout and (tmp_path / "out" / "report.html").exists()
    bad = subprocess.run(cmd + ["impl=unfold,broken_values"], cwd=REPO, env=env, capture_output=True, text=True)
    assert bad.returncode == 1 and "incorrect" in bad.stdout
    typo = subprocess.run(cmd[:6] + ["impl=unfld"], cwd=REPO, env=env, capture_output=True, text=True)
    assert typo.returncode == 2 and "known implementations" in typo.stderr


def rounds_differently(x, w, b=None, *args, **kw):
    """F.conv2d with every output scaled by (1 + 2**-50): right to ~1e-15 in float64, yet rounding
    differently from F.conv2d on every CPU (a 'different BLAS'), whatever the machine's BLAS does."""
    return torch.nn.functional.conv2d(x, w, b, *args, **kw) * (1 + 2 ** -50)


def test_an_analytically_zero_gradient_is_judged_against_all_gradients(tmp_path, monkeypatch):
    """softmax(x + shift): shift's gradient is zero, its float64 value rounding noise. Norm-relative, noise
    over noise fails every implementation but the reference's own ops (MobileViT's attention key biases).
    The implementation rounds differently from F.conv2d by construction, not by the machine's BLAS."""
    from implementations import registry
    monkeypatch.setitem(registry._registry, "rounds_differently", rounds_differently)
    opts = network.Options(impl=("rounds_differently",), min_run_time=0.01)
    df = network.run_check("tiny_nets:shifted_softmax", (2, 3, 8, 8), {}, opts, "s", tmp_path)
    assert set(df["status"]) == {"ok"}
    monkeypatch.setattr(check, "ZERO_REFERENCE", 0.0)
    df = network.run_check("tiny_nets:shifted_softmax", (2, 3, 8, 8), {}, opts, "s", tmp_path)
    assert set(df[df["pass"] == "forward+backward"]["status"]) == {"incorrect"}
    monkeypatch.undo()
    # a wrong value where the gradient should be zero still fails, measured against all gradients' norm
    refs = {"grad w": torch.ones(4, dtype=torch.float64), "grad shift": torch.tensor([1e-20], dtype=torch.float64)}
    got = {"grad w": torch.ones(4), "grad shift": torch.tensor([4e-3])}
    v = check.check_tensors(got, refs, torch.float32, torch.device("cpu"), zero_against_all=True)
    assert v.rel_err == pytest.approx(2e-3) and not v.correct and "its reference is zero" in v.message
