"""The same call, the same number: the C allocator in a fixed, steady state before anything is timed.

torch's CPU tensors come from glibc's malloc, whose behaviour depends on history: the mmap threshold
adapts (a freed mmapped block raises it to that block's size, up to 32 MiB), and the top of the heap
is given back to the kernel past a trim threshold that adapts with it. So the same `F.conv2d` call
(8x256x14x14 -> 64, 1x1) read 0.39 ms in one process and 0.54-0.62 ms in another, depending only on
what was allocated and freed before: in one, each 400 KB output reused heap memory; in the other it
came from fresh pages, faulted in on every call.

`steady_heap()` fixes both thresholds (which also switches their adaptation off): blocks below 32 MiB
(glibc's largest dynamic threshold, so a long-running network ends up in the same state) always come
from the heap, and the heap is never trimmed, so memory a call frees is reused by the next call
without page faults, as jemalloc and tcmalloc do (PyTorch's CPU performance guide recommends them for
this reason); blocks of 32 MiB and more are always mmapped, every call alike. No effect, and None,
where the C library is not glibc."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Optional

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2 ** 20   # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit systems
NEVER_TRIM = -1                 # glibc: "setting M_TRIM_THRESHOLD to -1 disables trimming completely"


@functools.lru_cache(maxsize=1)
def steady_heap() -> Optional[str]:
    """Fix glibc's malloc thresholds, once per process; returns what was set (for the environment
    record), or None where it could not be."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        version = libc.gnu_get_libc_version().decode()
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    ok &= mallopt(M_TRIM_THRESHOLD, NEVER_TRIM) == 1
    return f"glibc {version}: mmap_threshold={MMAP_THRESHOLD}, trim_threshold=off" if ok else None
