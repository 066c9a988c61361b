"""Cold caches: what runs before each cold sample so the timed call finds its data out of cache.

On CUDA (and on a CPU where lines cannot be evicted one by one) a buffer twice the size of the
device's last cache is read and written (`Flusher`; nvbench's cold measurement does the same with the
L2; `add_` reads *and* writes, so non-temporal stores cannot leave the old lines in place). On CUDA
that is cheap (the L2 is tens of MiB, at device bandwidth). On a CPU whose L3 reads 300 MiB it costs
71 ms a sample, so there `cold_prepare` evicts only the case's own lines (harness.measure.evict).

Cache sizes come from the hardware: on the CPU from /sys/devices/system/cpu/cpu0/cache/index*/size
(else `lscpu`, else 32 MiB; `CONVBENCH_CPU_CACHE_SYSFS` points it at another folder, to simulate a
machine), on CUDA `torch.cuda.get_device_properties(d).L2_cache_size`."""
from __future__ import annotations

import functools
import os
import re
import subprocess
from pathlib import Path
from typing import Callable, Iterable, Optional

import torch

FALLBACK_BYTES = 32 * 2 ** 20
FACTOR = 2


SYSFS_ENV = "CONVBENCH_CPU_CACHE_SYSFS"


def cpu_cache_sysfs() -> Path:
    """cpu0's cache folder in sysfs, or the folder `CONVBENCH_CPU_CACHE_SYSFS` names (a simulated CPU)."""
    return Path(os.environ.get(SYSFS_ENV) or "/sys/devices/system/cpu/cpu0/cache")


def parse_size(text: str) -> Optional[int]:
    m = re.match(r"\s*([\d.]+)\s*([KMG]?)(i?B)?", text.strip(), re.I)
    if not m:
        return None
    return int(float(m.group(1)) * {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30}[m.group(2).upper()])


def cpu_llc_bytes(sysfs: Optional[Path] = None) -> int:
    """The largest (last-level) CPU cache in bytes."""
    sysfs = sysfs or cpu_cache_sysfs()
    sizes = []
    for index in sysfs.glob("index*"):
        try:
            size = parse_size((index / "size").read_text())
        except OSError:
            continue
        if size:
            sizes.append(size)
    if sizes:
        return max(sizes)
    try:
        out = subprocess.run(["lscpu", "-B"], capture_output=True, text=True, timeout=5).stdout
        found = [int(v) for k, v in re.findall(r"^(L\d\w*) cache:\s+(\d+)", out, re.M)]
        if found:
            return max(found)
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    return FALLBACK_BYTES


def cache_bytes(device: torch.device) -> int:
    """The cache a cold sample must not find warm: the CUDA L2, or the CPU's last-level cache."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).L2_cache_size) or FALLBACK_BYTES
    return cpu_llc_bytes()


@functools.lru_cache(maxsize=8)
def _buffer(device_key: str, nbytes: int) -> torch.Tensor:
    return torch.zeros(nbytes // 4, dtype=torch.int32, device=device_key)


class Flusher:
    """`flush()` evicts the device's caches; one buffer per device and size, kept for the process."""

    def __init__(self, device: torch.device, nbytes: Optional[int] = None) -> None:
        self.device = device
        self.nbytes = nbytes or FACTOR * cache_bytes(device)
        self.buffer = _buffer(str(device), self.nbytes)

    def __call__(self) -> None:
        self.buffer.add_(1)  # read and write every line (int32 wraps around harmlessly)

    def keep(self, result) -> None:
        """(The buffer flush evicts the last result with everything else.)"""


def cold_prepare(device: torch.device, operands: Iterable[torch.Tensor], fn: Optional[Callable] = None):
    """What runs before each cold sample: on the CPU an `Evictor` of the operands, of what `fn`
    keeps (harness.measure.evict.kept_tensors) and of the last result, when lines can be evicted
    one by one; otherwise (CUDA, or no clflush) the buffer `Flusher`. Both have `keep(result)`."""
    if device.type == "cpu":
        from .evict import Evictor, kept_tensors, line_flusher
        flush_lines = line_flusher()
        if flush_lines is not None:
            kept = kept_tensors(fn) if fn is not None else []
            return Evictor([*operands, *kept], flush_lines)
    return Flusher(device)
