"""Helpers and the fixture of the cluster tests (not a conftest.py: tests/conftest.py owns that module
name). The real schedulers the `slurm` and `ray` tests run the README's commands against: a one-node SLURM
cluster started by tests/cluster/slurm.sh (installed with apt-get when missing and root), and a local
`ray start --head`. Each skips with the reason when it cannot be had here."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
SLURM_SH = Path(__file__).resolve().parent / "slurm.sh"


def readme(command: str) -> str:
    """`command` exactly as the README's cluster section writes it (fails if it is not there)."""
    section = README[README.index("## Running on a cluster"):]
    section = section[:section.index("\n## ", 5)]
    lines = {re.sub(r"\s+#.*$", "", line).strip() for line in section.splitlines()}
    assert command in lines, f"the README's cluster section no longer shows: {command}"
    return command


def run_command(command: str, tmp_path: Path, *extra: str, timeout: float = 600, background: bool = False):
    """Run a README command line (leading VAR=value words are the environment; `python` is this
    interpreter), into tmp_path/sweep unless it names its own hydra.sweep.dir."""
    words = shlex.split(command)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    while "=" in words[0] and not words[0].startswith("-"):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    if words[0] == "python":
        words[0] = sys.executable
    elif shutil.which(words[0], path=str(Path(sys.executable).parent)):
        words[0] = shutil.which(words[0], path=str(Path(sys.executable).parent))  # the venv's ray
    if words[1:3] == ["-m", "harness"] and not any(w.startswith("hydra.sweep.dir=") for w in words):
        words += [f"hydra.sweep.dir={tmp_path / 'sweep'}", f"results_link={tmp_path / 'latest'}"]
    words += list(extra)
    if background:
        out = open(tmp_path / "driver.out", "w")
        err = open(tmp_path / "driver.err", "w")
        return subprocess.Popen(words, cwd=tmp_path, env=env, stdout=out, stderr=err, text=True)
    return subprocess.run(words, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A SLURM cluster that answers: the running one, or one started here (and stopped afterwards)."""
    if not shutil.which("bash"):
        pytest.skip("no bash to run tests/cluster/slurm.sh")
    proc = subprocess.run(["bash", str(SLURM_SH), "start"], capture_output=True, text=True, timeout=900)
    if proc.returncode == 77:
        pytest.skip(proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    yield
    subprocess.run(["bash", str(SLURM_SH), "stop"], capture_output=True, text=True, timeout=120)
