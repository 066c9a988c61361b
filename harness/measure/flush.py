"""Cold caches: before each cold sample, read and write a buffer twice the size of the device's
last cache, so neither the inputs nor anything the implementation keeps between calls is still
cached when the timed call starts (nvbench's cold measurement does the same with the L2).

The size comes from the hardware: on the CPU the largest cache of cpu0 in
/sys/devices/system/cpu/cpu0/cache/index*/size (the shared last-level cache), else `lscpu`, else
32 MiB; on CUDA `torch.cuda.get_device_properties(d).L2_cache_size`. The buffer is read *and*
written (`add_`), so non-temporal stores (a large memset) cannot leave the old lines in place."""
from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path
from typing import Optional

import torch

FALLBACK_BYTES = 32 * 2 ** 20
FACTOR = 2


def _parse_size(text: str) -> Optional[int]:
    m = re.match(r"\s*([\d.]+)\s*([KMG]?)(i?B)?", text.strip(), re.I)
    if not m:
        return None
    return int(float(m.group(1)) * {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30}[m.group(2).upper()])


def cpu_llc_bytes(sysfs: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> int:
    """The largest (last-level) CPU cache in bytes."""
    sizes = []
    for index in sysfs.glob("index*"):
        try:
            size = _parse_size((index / "size").read_text())
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
