"""Who else is timing on this device right now?

Two jobs timing on one device at once distort each other's numbers. Every job registers itself in
the sweep folder (`.active/<host>-<device>/<pid>`) while it runs; a case whose timing window saw
another live job on the same (host, device) is marked `concurrent=True` and the job warns once.
This sees what really happened, whatever the launcher (submitit_local, joblib, Ray, two sweeps by
hand into one folder), which a prediction from the launcher's config could not.
"""
from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import torch

log = logging.getLogger(__name__)
ACTIVE_DIR = ".active"


def device_key(device: torch.device) -> str:
    """A name for the physical device, the same for every process on this host that uses it."""
    host = socket.gethostname()
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
        return f"{host}-cuda-{uuid or index}"
    return f"{host}-{device.type}"  # all CPU jobs on a host share its cores


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DeviceClaim:
    """Context manager: announce this job on its device; `others()` lists other live jobs there."""

    def __init__(self, sweep_dir: os.PathLike, device: torch.device, allow: bool = False) -> None:
        self.folder = Path(sweep_dir) / ACTIVE_DIR / device_key(device)
        self.me = self.folder / str(os.getpid())
        self.device = device
        self.allow = allow
        self._warned = False

    def __enter__(self) -> "DeviceClaim":
        self.folder.mkdir(parents=True, exist_ok=True)
        self.me.touch()
        return self

    def __exit__(self, *exc) -> None:
        self.me.unlink(missing_ok=True)

    def others(self) -> list[int]:
        """Pids of other live jobs registered on this device (stale entries of dead jobs are removed)."""
        pids = []
        for entry in self.folder.glob("*"):
            if entry == self.me or not entry.name.isdigit():
                continue
            pid = int(entry.name)
            if _alive(pid):
                pids.append(pid)
            else:
                entry.unlink(missing_ok=True)
        return pids

    def check(self) -> bool:
        """True when another job is timing on this device now; warns once per job unless allowed."""
        pids = self.others()
        if pids and not self.allow and not self._warned:
            self._warned = True
            log.warning("another timing job (pid %s) is running on %s at the same time: both measure a shared "
                        "device, so their timings are distorted. Rows are marked concurrent=True. Run jobs one at "
                        "a time (the default launcher, or hydra.sweeper.max_batch_size=1), or set "
                        "allow_concurrent=true to accept this.", ", ".join(map(str, pids)), self.device)
        return bool(pids)
