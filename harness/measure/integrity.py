"""Inputs must come back untouched, and an output must be memory of its own.

An implementation that returns the right output and then writes into its caller's tensors (a fused
ReLU or a scale stored back into `x`, a gradient scaled in place) passes every value check: only the
caller notices, later. `InputGuard` copies the tensors a pass hands to the implementation once, before
its first checked call, and after each checked call compares them bit for bit (NaN and -0.0 included)
with those copies. A change is reported (naming the tensor and how many elements changed) and undone,
so the next checked call sees the original inputs again. Only checked calls pay for the comparisons;
the timed calls are never wrapped.

`shared_memory` finds outputs that share storage with an input: writing into one would change the other.
"""
from __future__ import annotations

from typing import Optional

import torch

_SAME_SIZE_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def as_bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's raw bits as integers of the same size, so that equality is bitwise (NaN == NaN of
    the same payload, -0.0 != 0.0). Complex tensors compare as their real and imaginary parts."""
    t = t.detach()
    if t.is_complex():
        t = torch.view_as_real(t)
    if t.dtype == torch.bool:
        return t.to(torch.uint8)
    return t.view(_SAME_SIZE_INT[t.element_size()]) if t.is_floating_point() else t


def changed_elements(before: torch.Tensor, after: torch.Tensor) -> int:
    """How many elements differ bitwise (all of them when the shape or dtype changed)."""
    if before.shape != after.shape or before.dtype != after.dtype:
        return max(before.numel(), after.numel())
    return int((as_bits(before) != as_bits(after)).sum())


class InputGuard:
    """Copies of the tensors a pass hands to the implementation, taken once before its first checked
    call; `changes()` after each checked call says which were modified, and restores them."""

    def __init__(self, **tensors: Optional[torch.Tensor]):
        self.live = {name: t for name, t in tensors.items() if isinstance(t, torch.Tensor)}
        self.saved = {name: t.detach().clone() for name, t in self.live.items()}

    def changes(self, when: str = "by the call") -> list[str]:
        """One problem per modified tensor, e.g. 'x was modified in place by the call: 12 of 300
        elements changed'; each is then put back (through `.data`, unseen by autograd's version
        counter, so a saved graph stays usable)."""
        problems = []
        for name, live in self.live.items():
            n = changed_elements(self.saved[name], live.detach())
            if n:
                problems.append(f"{name} was modified in place {when}: {n} of {live.numel()} elements changed")
                live.data.copy_(self.saved[name])
        return problems


def _span(t: torch.Tensor) -> tuple[int, int]:
    """[first byte, last byte + 1) of the memory a (non-empty) tensor can reach through its strides."""
    start = t.data_ptr()
    extent = sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride())) + 1
    return start, start + extent * t.element_size()


def shared_memory(outputs: dict[str, object], inputs: dict[str, torch.Tensor]) -> list[str]:
    """One problem per (output, input) pair whose memory overlaps: the result aliases an input."""
    problems = []
    for out_name, out in outputs.items():
        if not isinstance(out, torch.Tensor) or out.numel() == 0 or out.device.type == "meta":
            continue
        o0, o1 = _span(out)
        for in_name, t in inputs.items():
            if t.numel() == 0 or t.device != out.device:
                continue
            i0, i1 = _span(t)
            if o0 < i1 and i0 < o1:
                problems.append(f"{out_name} shares memory with {in_name} (the result aliases an input: "
                                f"writing to one changes the other)")
    return problems
