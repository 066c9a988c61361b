"""The environment a job ran in, recorded once per job (env.json) and copied into every row, so a
table read months later still says what produced it."""
from __future__ import annotations

import datetime as dt
import platform
import socket
import subprocess
from pathlib import Path
from typing import Optional

import torch

from .devices import absent_reason

REPO = Path(__file__).resolve().parents[2]


def cpu_model() -> str:
    """The CPU's marketing name (platform.processor() is often just 'x86_64' on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                  text=True, timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple MPS ({cpu_model()})"
    return cpu_model()


def _git(*args: str) -> Optional[str]:
    try:
        proc = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_state() -> tuple[str, Optional[bool]]:
    """(revision, dirty); ('', None) outside a git checkout. Untracked files do not count as dirty."""
    rev = _git("rev-parse", "HEAD")
    if rev is None:
        return "", None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return rev, (bool(status) if status is not None else None)


def environment(device: torch.device, threads: int) -> dict:
    """The schema's environment columns (plus device_name)."""
    rev, dirty = git_state()
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "",
        "cudnn": str(torch.backends.cudnn.version() or "") if torch.backends.cudnn.is_available() else "",
        "device_name": device_name(device) if absent_reason(device) is None else "",
        "cpu": cpu_model(),
        "threads": threads,
        "git_rev": rev,
        "git_dirty": dirty,
        "host": socket.gethostname(),
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
