"""Cold CPU samples at a cost that does not grow with the cache: evict exactly the lines that matter.

Overwriting a buffer twice the last-level cache (`harness.measure.flush.Flusher`) evicts everything,
but costs a pass over 2 x LLC per sample: 71 ms on a VM whose L3 reads 300 MiB, for calls of
0.03-30 ms, and more on servers reporting 1 GiB. A cache with (pseudo-)LRU replacement cannot be made
to drop a given line any cheaper by touching other memory. The CPU can: `clflushopt` (x86-64) writes a
line back and drops it from every cache level, at ~15 GB/s here. So a cold sample evicts

  - the case's operands (x, weight, bias, the output gradient; the forward's output in backward),
  - what the implementation keeps where Python can see it (tensors in its module's globals, its
    `functools.lru_cache`s, its closure), found once per timing (`kept_tensors`),
  - the previous cold call's result, before it is freed, so the allocator hands the next call memory
    that is out of cache too (`Evictor.keep`),

The cost per sample is proportional to the case's own bytes, never to the LLC. Not evicted: state only
C++ holds (an extension's workspace), the interpreter's and torch's dispatch data, page tables and
TLBs: what every layer of a real network shares stays hot there too. (`make bench-timer` checks this
against an independent cold method, copies of the operands rotating through 2 x the LLC.)

Where `clflushopt`/`clflush` cannot run (another architecture, or a system forbidding executable
memory) `line_flusher()` is None and the cold sample falls back to the full buffer flush."""
from __future__ import annotations

import ctypes
import functools
import mmap
import platform
import sys
from pathlib import Path
from typing import Callable, Iterable, Optional

import torch

LINE = 64  # bytes per cache line on every x86-64 CPU

# void flush(char *p, char *end): for (; p < end; p += 64) clflushopt [p]; mfence
_CLFLUSHOPT = bytes([0x48, 0x39, 0xF7,            # cmp rdi, rsi
                     0x73, 0x0D,                  # jae done
                     0x66, 0x0F, 0xAE, 0x3F,      # loop: clflushopt [rdi]
                     0x48, 0x83, 0xC7, 0x40,      # add rdi, 64
                     0x48, 0x39, 0xF7,            # cmp rdi, rsi
                     0x72, 0xF3,                  # jb loop
                     0x0F, 0xAE, 0xF0,            # done: mfence
                     0xC3])                       # ret
_CLFLUSH = _CLFLUSHOPT[:3] + bytes([0x73, 0x0C]) + _CLFLUSHOPT[6:16] + bytes([0x72, 0xF4]) + _CLFLUSHOPT[18:]


def _cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.lru_cache(maxsize=1)
def line_flusher() -> Optional[Callable[[int, int], None]]:
    """`flush(start, end)` dropping every cache line of [start, end) from all cache levels, or None
    where that is not available. A 22-byte x86-64 routine in a page mapped executable once per process
    (no compiler needed); the CPU flags are checked first, so it never runs where it would fault."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None
    flags = _cpu_flags()
    code = _CLFLUSHOPT if "clflushopt" in flags else _CLFLUSH if "clflush" in flags else None
    if code is None:
        return None
    try:
        page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        page.write(code)
        address = ctypes.addressof(ctypes.c_char.from_buffer(page))
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mprotect(ctypes.c_void_p(address), mmap.PAGESIZE, mmap.PROT_READ | mmap.PROT_EXEC) != 0:
            return None  # W^X policies (SELinux execmem...): fall back to the buffer flush
    except (OSError, ValueError, AttributeError):
        return None
    fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)(address)
    fn._page = page  # the mapping lives as long as the function
    return fn


def spans(tensors: Iterable[torch.Tensor]) -> list[tuple[int, int]]:
    """The byte ranges of the tensors' storages on the CPU, line-aligned and merged."""
    ranges = []
    for t in tensors:
        if not isinstance(t, torch.Tensor) or t.device.type != "cpu" or t.is_sparse:
            continue
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError):
            continue
        start, size = storage.data_ptr(), storage.nbytes()
        if start and size:
            ranges.append((start - start % LINE, start + size))
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def _tensors_in(obj, depth: int, seen: set) -> Iterable[torch.Tensor]:
    if id(obj) in seen or depth < 0:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield obj
        return
    if isinstance(obj, dict):
        children = list(obj.values())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        children = list(obj)
    elif isinstance(obj, functools._lru_cache_wrapper) or type(obj).__name__ == "cell":
        import gc
        children = gc.get_referents(obj)  # an lru_cache's dict of results, a closure cell's value
    else:
        return
    for child in children:
        yield from _tensors_in(child, depth - 1, seen)


def kept_tensors(fn: Callable, depth: int = 3) -> list[torch.Tensor]:
    """Tensors an implementation keeps where Python can see them: in its module's globals (and
    containers there), its `lru_cache`s' results, its closure. Nothing of torch's own modules."""
    name = getattr(fn, "__module__", "") or ""
    module = None if name == "torch" or name.startswith("torch.") else sys.modules.get(name)
    roots = list(vars(module).values()) if module is not None else []
    roots += [c for c in (getattr(fn, "__closure__", None) or ())]
    seen: set = set()
    return [t for root in roots for t in _tensors_in(root, depth, seen)]


class Evictor:
    """Before each cold sample: evict the given tensors' lines and what `keep` was handed last. Holds
    the tensors, so their memory stays mapped while it is flushed."""

    def __init__(self, tensors: Iterable[torch.Tensor], flush_lines: Callable[[int, int], None]) -> None:
        self.tensors = [t for t in tensors if isinstance(t, torch.Tensor)]
        self.spans = spans(self.tensors)
        self.flush_lines = flush_lines
        self.last: list = []

    @property
    def nbytes(self) -> int:
        """Bytes evicted per sample, besides the last result (what the cost is proportional to)."""
        return sum(hi - lo for lo, hi in self.spans)

    def keep(self, result) -> None:
        """The call's result, evicted and dropped before the next call."""
        self.last = [result]

    def __call__(self) -> None:
        last, self.last = self.last, []
        for lo, hi in self.spans + spans(_flat(last)):
            self.flush_lines(lo, hi)
        del last  # freed now: the next call's output most likely reuses this (evicted) memory


def _flat(obj) -> list:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for x in obj for t in _flat(x)]
    if isinstance(obj, dict):
        return [t for x in obj.values() for t in _flat(x)]
    return []
