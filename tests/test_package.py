"""Proof from outside: convbench as a user gets it. A copy of this checkout goes to a temporary folder,
its wheel is built and installed with examples/shiftconv (a third-party package) into a fresh venv, and
from a folder outside the repository the README's *Use it in your own project* commands run as written
(install, a sweep, the package's tests, the conformance plug-in), then every other command: capture into
the project's own conf/, a sweep over it, aggregate, report, compare, the network check. Nothing on
PYTHONPATH, nothing imported from the repository. A few minutes (venv and installs): `make test-slow`."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO

pytestmark = pytest.mark.slow
SECTION = "## Use it in your own project"
COUNTS = re.compile(r"convbench conformance: (\d+) checks ran: (\d+) passed, (\d+) failed, (\d+) skipped, (\d+) xfailed")


def readme_commands() -> list[str]:
    """The section's shell commands, in order (its ```bash blocks)."""
    text = (REPO / "README.md").read_text()
    section = text[text.index(SECTION):]
    section = section[:section.index("\n## ", 5)]
    return [line for block in re.findall(r"```bash\n(.*?)```", section, re.S) for line in block.splitlines() if line]


class Outside:
    """The fresh venv and the folders the commands run in."""

    def __init__(self, root: Path):
        self.root, self.venv = root, root / "venv"
        self.project = root / "project"
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        self.env.update(PATH=f"{self.venv / 'bin'}{os.pathsep}{os.environ['PATH']}", VIRTUAL_ENV=str(self.venv),
                        PIP_DISABLE_PIP_VERSION_CHECK="1")

    def run(self, command: str, cwd: Path | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
        """A command line as a user types it (the venv's bin first on PATH)."""
        return subprocess.run(shlex.split(command), cwd=cwd or self.project, env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def python(self, code: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.venv / "bin" / "python"), "-c", code], cwd=cwd or self.project, env=self.env,
                              capture_output=True, text=True, timeout=300)


def _copy_checkout(dest: Path) -> None:
    """The working tree's files that git tracks or would track (a clone, with today's edits)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> Outside:
    o = Outside(tmp_path_factory.mktemp("outside"))
    _copy_checkout(o.root / "convbench")
    ok(subprocess.run([sys.executable, "-m", "venv", str(o.venv)], capture_output=True, text=True))
    installs = [c for c in readme_commands() if c.startswith("pip ")]
    assert installs and all(c.split()[1] in ("install", "wheel") for c in installs), installs
    for command in installs:  # as written, from the folder holding the checkout copy
        ok(o.run(command, cwd=o.root))
    o.project.mkdir()
    return o


def test_the_installed_wheel_is_what_runs(outside):
    proc = ok(outside.python(
        "import convbench, harness, implementations, shiftconv, harness.configs as c\n"
        "from importlib.metadata import entry_points\n"
        "print(harness.__file__, convbench.__file__, implementations.__file__, c.builtin_dir(), sep='\\n')\n"
        "assert callable(convbench.register) and convbench.Unsupported is implementations.Unsupported\n"
        "assert convbench.Conv2d is implementations.Conv2d and convbench.prepare is implementations.prepare\n"
        "assert callable(convbench.testing.check_conv2d) and callable(convbench.testing.parametrize_with_checks)\n"
        "assert [e.value for e in entry_points(group='pytest11') if e.name == 'convbench'] == ['convbench.conformance.plugin']\n"
        "assert 'shiftconv' in convbench.names()\n"))
    paths = proc.stdout.split()
    assert all(str(outside.venv) in p and "site-packages" in p for p in paths), paths
    assert paths[-1].endswith(os.path.join("harness", "conf")), paths


def test_readme_sweep_from_a_project_folder(outside):
    sweep = next(c for c in readme_commands() if c.startswith("convbench "))
    ok(outside.run(sweep))
    df = pd.read_parquet(outside.project / "results" / "latest" / "results.parquet")
    assert set(df["impl"]) == {"shiftconv", "cudnn"} and set(df["suite"]) == {"smoke"}
    assert (df["status"] == "ok").all(), df[df.status != "ok"][["impl", "layer", "pass", "message"]]


def test_readme_conformance_suite_in_pytest(outside):
    """The package's own tests (parametrize_with_checks), then the plug-in with no test file."""
    shutil.copytree(REPO / "examples" / "shiftconv" / "tests", outside.project / "tests", dirs_exist_ok=True)
    pytest_line, plugin_line = [c for c in readme_commands() if "pytest" in c or "convbench.conformance" in c]
    out = ok(outside.run(pytest_line)).stdout
    ran, passed, failed, skipped, xfailed = map(int, COUNTS.search(out).groups())
    assert failed == xfailed == 0 and passed > 250 and skipped > 0 and ran == passed + skipped, out[-2000:]
    assert f"{passed} passed, {skipped} skipped" in out
    out = ok(outside.run(plugin_line)).stdout
    ran, passed, failed, skipped, xfailed = map(int, COUNTS.search(out).groups())
    assert failed == skipped == xfailed == 0 and passed > 250, out[-2000:]
    assert "test_conv2d[shiftconv-values-kernel_1x1-float32-cpu]" in ok(outside.run(
        plugin_line + " -q --collect-only")).stdout


BUGGY = '''import torch.nn.functional as F


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Right, except 1x1 kernels, which are off by 1%."""
    out = F.conv2d(input, weight, bias, stride, padding, dilation, groups)
    return out * 1.01 if weight.shape[-2:] == (1, 1) else out
'''


def test_the_plugin_on_a_buggy_implementation(outside):
    """Failures fail the run and name the check; an xfails file turns them into xfailed; a failure's
    reproduction snippet reruns it and fails the same way."""
    (outside.project / "buggy.py").write_text(BUGGY)
    (outside.project / "xfails.txt").write_text("# known: 1x1 kernels are off by 1%\nkernel_1x1  # both 1x1 cases\n")
    base = "python -m convbench.conformance buggy:conv2d --convbench-dtype float32 -k values"
    proc = outside.run(base)
    assert proc.returncode == 1 and "FAILED" in proc.stdout and "conv2d-values-kernel_1x1-float32-cpu" in proc.stdout
    assert COUNTS.search(proc.stdout).group(3) == "2", proc.stdout[-3000:]
    proc = ok(outside.run(base + " --convbench-xfails xfails.txt"))
    assert COUNTS.search(proc.stdout).groups()[2:] == ("0", "0", "2"), proc.stdout[-3000:]
    snippet = ok(outside.python(
        "from convbench.testing import check_conv2d\n"
        "r = check_conv2d('buggy:conv2d', dtypes=['float32'], checks=['values'])\n"
        "assert [x.case for x in r.failed] == ['kernel_1x1', 'kernel_1x1_stride2_pad1'], r.summary()\n"
        "print(r.failed[0].reproduce)")).stdout
    rerun = outside.python(snippet)
    assert rerun.returncode == 1 and "AssertionError" in rerun.stderr and "forward" in rerun.stderr, rerun.stderr


TINY_NET = '''import torch.nn as nn


def tiny():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 1, stride=2))
'''


def test_every_command_from_a_project_folder(outside):
    """capture writes into the project's conf/suite/, a sweep finds it there beside the built-in suites,
    and aggregate, report, compare and the network check run on what lands in ./results."""
    proj = outside.root / "netproj"
    proj.mkdir()
    (proj / "tinynet.py").write_text(TINY_NET)
    proc = ok(outside.run("python -m harness.capture tinynet:tiny --input 1,3,16,16", cwd=proj))
    assert (proj / "conf" / "suite" / "tiny.yaml").is_file() and "suite=tiny" in proc.stdout, proc.stdout
    for impls in ("unfold,shiftconv", "unfold"):
        ok(outside.run(f"convbench -m suite=tiny impl={impls} device=cpu timing.cache=warm", cwd=proj))
    sweeps = sorted(p for p in (proj / "results").glob("2*/*") if p.is_dir())  # dated sweeps, not latest/
    assert len(sweeps) == 2 and len(pd.read_parquet(sweeps[0] / "results.parquet")) == 2 * 2 * 2
    ok(outside.run(f"python -m harness.aggregate {sweeps[0]}", cwd=proj))
    ok(outside.run(f"python -m harness.report {sweeps[0]}", cwd=proj))
    assert (sweeps[0] / "report.html").is_file()
    proc = ok(outside.run(f"python -m harness.report.compare {sweeps[0]} {sweeps[1]}", cwd=proj))
    assert "removed" in proc.stdout
    ok(outside.run("python -m harness.network tinynet:tiny --input 1,3,16,16 impl=unfold,shiftconv budget_s=5", cwd=proj))
    net = list((proj / "results" / "network" / "tiny").glob("*/results.parquet"))
    assert len(net) == 1 and set(pd.read_parquet(net[0])["impl"]) == {"unfold", "shiftconv"}


def test_a_convbench_folder_takes_captures_and_suites(outside):
    """A project whose conf/ is its own app's keeps convbench's configs in ./convbench/ instead."""
    proj = outside.root / "otherproj"
    (proj / "convbench").mkdir(parents=True)
    (proj / "tinynet.py").write_text(TINY_NET)
    ok(outside.run("python -m harness.capture tinynet:tiny --input 1,3,8,8 --name mine", cwd=proj))
    assert (proj / "convbench" / "suite" / "mine.yaml").is_file()
    proc = ok(outside.run("convbench suite=mine impl=unfold device=cpu --cfg job", cwd=proj))
    assert "name: mine" in proc.stdout
