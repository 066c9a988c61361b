"""Shared fixtures: composing the Hydra config in-process, and running the real entry point."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PLUGINS = Path(__file__).resolve().parent / "plugins"


@pytest.fixture
def compose():
    """compose(*overrides, hydra=False) -> DictConfig of conf/config.yaml (with the hydra node if asked)."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from harness.config import register_configs

    register_configs()

    def _compose(*overrides: str, hydra: bool = False):
        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
            return hydra_compose("config", overrides=list(overrides), return_hydra_config=hydra)

    yield _compose
    GlobalHydra.instance().clear()


def run_harness(tmp_path: Path, *overrides: str, pythonpath: tuple[Path, ...] = (), timeout: float = 300):
    """`python -m harness -m ...` into tmp_path/sweep (results link tmp_path/latest)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(p) for p in pythonpath] + [env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "harness", "-m", f"hydra.sweep.dir={tmp_path / 'sweep'}",
           f"results_link={tmp_path / 'latest'}", *overrides]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
