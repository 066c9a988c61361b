"""convbench.testing's own behaviour, on small selections: statuses (skipped with the reason, xfailed,
failed with a reproduction that reruns it), stable ids, the summary, time limits; `import convbench` and
the pytest plugin stay inert until used; where configs are found and captures go."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
import yaml

import convbench
import implementations
from convbench.testing import (ConformanceError, assert_conv2d_conforms, check_conv2d, plan, run_check)
from harness import configs

from conftest import REPO

FEW = dict(devices=["cpu"], dtypes=["float32"], checks=["values"])


def conv(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return F.conv2d(input, weight, bias, stride, padding, dilation, groups)


def off_on_1x1(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    out = F.conv2d(input, weight, bias, stride, padding, dilation, groups)
    return out * 1.01 if weight.shape[-2:] == (1, 1) else out


def refuses_grouped(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    if groups != 1:
        raise convbench.Unsupported("no groups here")
    return F.conv2d(input, weight, bias, stride, padding, dilation, groups)


def test_the_facade_is_the_implementations_api():
    assert convbench.register is implementations.register and convbench.Conv2d is implementations.Conv2d
    assert convbench.Unsupported is implementations.Unsupported and convbench.prepare is implementations.prepare
    assert convbench.testing.check_conv2d is check_conv2d


def test_failures_name_the_case_and_reproduce():
    r = check_conv2d(off_on_1x1, **FEW)
    assert [x.case for x in r.failed] == ["kernel_1x1", "kernel_1x1_stride2_pad1"] and not r.ok
    first = r.failed[0]
    assert first.id == "off_on_1x1-values-kernel_1x1-float32-cpu" and "forward" in first.message
    assert "run_check(fn, 'values', Case('kernel_1x1'" in first.reproduce
    assert "from test_conformance_api import off_on_1x1" in first.reproduce
    with pytest.raises(AssertionError, match="forward"):
        run_check(off_on_1x1, "values", "kernel_1x1", "float32")
    with pytest.raises(ConformanceError, match=r"FAILED off_on_1x1-values-kernel_1x1-float32-cpu"):
        assert_conv2d_conforms(off_on_1x1, **FEW)


def test_reproduction_snippet_runs_as_printed(tmp_path):
    """The snippet of a function importable by module path reruns the failing check on its own."""
    (tmp_path / "offmod.py").write_text(textwrap.dedent('''
        import torch.nn.functional as F
        def conv(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
            out = F.conv2d(input, weight, bias, stride, padding, dilation, groups)
            return out * 1.01 if weight.shape[-2:] == (1, 1) else out
    '''))
    sys.path.insert(0, str(tmp_path))
    try:
        snippet = check_conv2d("offmod:conv", **FEW).failed[0].reproduce
    finally:
        sys.path.remove(str(tmp_path))
    assert snippet.splitlines()[2] == "from offmod import conv"
    proc = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 1 and "AssertionError: forward" in proc.stderr, proc.stderr[-2000:]


def test_expected_failures_are_xfailed_and_noted_when_they_pass():
    r = check_conv2d(off_on_1x1, expected_failures={"kernel_1x1": "known bug"}, **FEW)
    assert r.ok and [x.case for x in r.by_status("xfailed")] == ["kernel_1x1", "kernel_1x1_stride2_pad1"]
    assert r.by_status("xfailed")[0].message.startswith("expected to fail: known bug")
    node_id = "tests/test_mine.py::test_conforms[off_on_1x1-values-kernel_1x1_stride2_pad1-float32-cpu]"
    r = check_conv2d(off_on_1x1, expected_failures=[node_id, "nothing-matches-this"], **FEW)
    assert [(x.case, x.status) for x in r.results if x.status != "ok"] == [("kernel_1x1", "failed"),
                                                                            ("kernel_1x1_stride2_pad1", "xfailed")]
    r = check_conv2d(conv, expected_failures=["values-kernel_1x1-float32"], **FEW)
    noted = [x for x in r.results if x.message]
    assert r.ok and [x.case for x in noted] == ["kernel_1x1"] and "though expected to fail" in noted[0].message


def test_refusals_are_skipped_with_their_reason():
    r = check_conv2d(refuses_grouped, **FEW)
    skipped = r.by_status("skipped")
    assert r.ok and skipped and all(x.message == "raised Unsupported: no groups here" for x in skipped)
    fn = convbench.get("cudnn")
    if implementations.unsupported_reason(fn, "cpu", torch.float16):
        r = check_conv2d(fn, devices=["cpu"], dtypes=["float16"], checks=["values"])
        assert r.counts["skipped"] == len(r.results) and r.results[0].message.startswith("declared unsupported: ")


def test_summary_counts_every_status():
    r = check_conv2d(refuses_grouped, expected_failures={"kernel_1x1": "x"}, **FEW)
    n, c = len(r.results), r.counts
    line = r.summary().splitlines()[0]
    assert line.startswith(f"convbench conformance refuses_grouped: {n} checks ran: {c['ok']} passed, 0 failed, "
                           f"{c['skipped']} skipped, 0 xfailed")
    assert "skipped" in r.summary().splitlines()[-1]


def test_ids_are_stable_unique_and_cover_every_check():
    first, again = plan("unfold", devices=["cpu"]), plan("unfold", devices=["cpu"])
    ids = [c.id for c in first]
    assert ids == [c.id for c in again] and len(set(ids)) == len(ids)
    assert {c.spec.name for c in first} == set(convbench.testing.CHECKS) - {"medium"}
    assert {c.spec.name for c in plan("unfold", devices=["cpu"], full=True, checks=["medium"])} == {"medium"}
    with pytest.raises(ValueError, match="unknown checks"):
        plan("unfold", checks=["valuez"])


def test_a_hang_is_stopped_by_the_time_limit():
    def hangs(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        try:
            while True:
                pass
        except Exception:  # noqa: BLE001 - a hang that swallows exceptions must still stop
            return F.conv2d(input, weight, bias, stride, padding, dilation, groups)

    r = check_conv2d(hangs, timeout_s=0.2, devices=["cpu"], dtypes=["float32"], checks=["call_forms"])
    assert r.counts["failed"] == 1 and "CheckTimeout: ran past the time limit of 0.2 s" in r.failed[0].message


def test_import_convbench_and_the_plugin_load_nothing_heavy(tmp_path):
    """The pytest11 plugin loads in every pytest run of the environment: it must not import torch, and it
    prints nothing when no conformance check ran."""
    (tmp_path / "test_plain.py").write_text("import sys\n\ndef test_plain():\n    assert 'torch' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout[-2000:]
    assert "convbench conformance" not in proc.stdout and "--convbench-impl" in subprocess.run(
        [sys.executable, "-m", "pytest", "--help"], cwd=tmp_path, capture_output=True, text=True).stdout
    proc = subprocess.run([sys.executable, "-c", "import sys, convbench; assert 'torch' not in sys.modules"])
    assert proc.returncode == 0


def test_configs_are_found_and_captures_go_to_the_project(tmp_path):
    assert configs.builtin_dir() == REPO / "conf"  # a checkout (or its editable install)
    assert configs.capture_dir(tmp_path) == tmp_path / "conf" / "suite"
    (tmp_path / "convbench").mkdir()
    assert configs.capture_dir(tmp_path) == tmp_path / "convbench" / "suite"
    assert configs.on_search_path(tmp_path / "convbench" / "suite", tmp_path)
    assert configs.on_search_path(REPO / "conf" / "suite", tmp_path)
    assert not configs.on_search_path(tmp_path / "elsewhere" / "suite", tmp_path)
    searchpath = yaml.safe_load((REPO / "conf" / "config.yaml").read_text())["hydra"]["searchpath"]
    assert searchpath == [f"file://{d}" for d in configs.USER_DIRS]


def test_a_project_suite_joins_the_built_in_ones(tmp_path):
    (tmp_path / "conf" / "suite").mkdir(parents=True)
    (tmp_path / "conf" / "suite" / "mine.yaml").write_text((REPO / "conf" / "suite" / "smoke.yaml").read_text()
                                                           .replace("name: smoke", "name: mine"))
    proc = subprocess.run([sys.executable, "-m", "harness", "suite=mine", "--cfg", "job"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "name: mine" in proc.stdout, proc.stderr[-2000:]
    assert "is not available" not in proc.stderr  # no ./convbench here: Hydra's warning is silenced
    proc = subprocess.run([sys.executable, "-m", "harness", "suite=smoke", "--cfg", "job"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "name: smoke" in proc.stdout


def test_the_package_list_names_every_package_folder():
    """pyproject.toml lists the packages by hand (the conf/ and convbench mappings need it): a new
    subpackage missing from the list would be missing from the wheel."""
    import tomllib
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = {v: k for k, v in tool["package-dir"].items()}  # folder -> package name
    found = set()
    for top in ("harness", "implementations", "hydra_plugins"):
        for init in (REPO / top).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO).as_posix()
            mapped = next((dirs[d] + rel[len(d):].replace("/", ".") for d in dirs if rel == d or rel.startswith(d + "/")),
                          rel.replace("/", "."))
            found.add(mapped)
    found |= {"harness.conf", "harness.conf.suite", "harness.conf.launcher", "hydra_plugins"}
    assert set(tool["packages"]) == found


# Each planted bug of tests/plugins/broken_convs.py (the harness's verdict tests) against a few of the
# suite's checks: (checks, a phrase the first failure must hold). The whole suite on each is in the report.
PLANTED = {
    "broken_raises": (["values"], "RuntimeError: deliberate failure"),
    "broken_values": (["values"], "forward: ||out - ref|| / ||ref||"),
    "broken_shape": (["values"], "forward: shape"),
    "broken_dtype": (["values"], "forward: dtype torch.float64 != torch.float32"),
    "broken_nan": (["values"], "non-finite values"),
    "broken_detached": (["values"], "does not require grad"),
    "broken_hangs": (["call_forms"], "CheckTimeout"),
    "broken_swallows": (["call_forms"], "CheckTimeout"),
    "sneaky_relu_into_x": (["values"], "x was modified in place by the call"),
    "sneaky_scales_weight": (["values"], "weight was modified in place by the call"),
    "sneaky_zeroes_bias": (["values"], "bias was modified in place by the call"),
    "sneaky_scales_grad_out": (["values"], "grad_out was modified in place by the backward"),
    "sneaky_aliases_x": (["independent"], "shares memory with x"),
    "flaky_every_other_call": (["repeat"], "[call 2"),
    "stale_after_many_calls": (["gradcheck"], "Jacobian mismatch"),
    "imprecise_within_tolerance": (["values"], "||out - ref|| / ||ref||"),  # harness: ok, within 1e-4
}


@pytest.fixture(scope="module")
def planted():
    """The planted implementations by name, registered only while these tests run (other tests list
    `implementations.names()` as the built-ins)."""
    from implementations import registry
    before = dict(registry._registry)
    sys.path.insert(0, str(REPO / "tests" / "plugins"))
    sys.modules.pop("broken_convs", None)  # a module left imported would not register them again
    try:
        import broken_convs  # noqa: F401  (registers them)
        yield {name: registry._registry[name] for name in PLANTED}
    finally:
        sys.path.remove(str(REPO / "tests" / "plugins"))
        sys.modules.pop("broken_convs", None)
        registry._registry.clear()
        registry._registry.update(before)


@pytest.mark.parametrize("name", list(PLANTED))
def test_every_planted_bug_fails_the_suite(planted, name):
    checks, phrase = PLANTED[name]
    hangs = name in ("broken_hangs", "broken_swallows")
    r = check_conv2d(planted[name], devices=["cpu"], dtypes=["float32"], checks=checks, timeout_s=0.5 if hangs else None)
    assert r.failed, r.summary()
    assert phrase in r.failed[0].message, r.failed[0].message
