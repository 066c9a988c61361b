"""Who else is timing on this device right now?

Two jobs timing on one device at once distort each other's numbers. Every job registers itself in
the sweep folder (`.active/<host>-<device>/<pid>-<start>`) while it runs and renames its entry to
`*.done` when it ends (the rename keeps the entry's mtime = its end). A timed pass asks
`busy(since=start of the pass)`: was another job of this (host, device) alive at any moment of the
window? That covers a job present at the start, one that ended during the pass, and one still running
at the end. This sees what really happened, whatever the launcher (submitit_local, joblib, Ray, two
sweeps by hand into one folder), which a prediction from the launcher's config could not.

A job killed with SIGKILL leaves an entry without `.done`: it counts only while its pid is alive with
the same start time (psutil), so a reused pid is not mistaken for it.
"""
from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Optional

import psutil
import torch

log = logging.getLogger(__name__)
ACTIVE_DIR = ".active"
DONE = ".done"


def device_key(device: torch.device) -> str:
    """A name for the physical device, the same for every process on this host that uses it."""
    host = socket.gethostname()
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
        return f"{host}-cuda-{uuid or index}"
    return f"{host}-{device.type}"  # all CPU jobs on a host share its cores


def _start_stamp(pid: int) -> Optional[str]:
    """The process's creation time as a stable token (None when no such process)."""
    try:
        return f"{psutil.Process(pid).create_time():.2f}".replace(".", "_")
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def _alive(name: str) -> bool:
    """Is the process named by an entry `<pid>-<start>` still the one that registered?"""
    pid, _, stamp = name.partition("-")
    return pid.isdigit() and _start_stamp(int(pid)) == stamp


class DeviceClaim:
    """Context manager: announce this job on its device; `busy()` says whether another job shares it."""

    def __init__(self, sweep_dir: os.PathLike, device: torch.device, allow: bool = False) -> None:
        self.folder = Path(sweep_dir) / ACTIVE_DIR / device_key(device)
        self.me = self.folder / f"{os.getpid()}-{_start_stamp(os.getpid())}"
        self.device = device
        self.allow = allow
        self._warned = False

    def __enter__(self) -> "DeviceClaim":
        self.folder.mkdir(parents=True, exist_ok=True)
        self.me.touch()
        return self

    def __exit__(self, *exc) -> None:
        try:
            os.utime(self.me)                      # mtime = when this job stopped using the device
            os.replace(self.me, self.me.with_name(self.me.name + DONE))
        except FileNotFoundError:
            pass

    def others(self, since: Optional[float] = None) -> list[str]:
        """Other jobs on this device alive now or, with `since` (a time.time()), at any moment after it."""
        found = []
        for entry in self.folder.glob("*"):
            if entry.name.startswith(self.me.name):
                continue
            name = entry.name.removesuffix(DONE)
            try:
                recent = since is not None and entry.stat().st_mtime >= since
            except FileNotFoundError:              # renamed to .done just now: seen under its new name
                continue
            if recent or (not entry.name.endswith(DONE) and _alive(name)):
                found.append(name.partition("-")[0])
        return found

    def busy(self, since: Optional[float] = None) -> bool:
        """True when another job used this device now (or since `since`); warns once per job unless
        `allow` (the rows are marked either way: the column records what happened)."""
        pids = self.others(since)
        if pids and not self.allow and not self._warned:
            self._warned = True
            log.warning("another timing job (pid %s) is running on %s at the same time: both measure a shared "
                        "device, so their timings are distorted. Rows are marked concurrent=True. Run jobs one at "
                        "a time (the default launcher, or hydra.sweeper.max_batch_size=1), or set "
                        "allow_concurrent=true to accept this.", ", ".join(pids), self.device)
        return bool(pids)
