"""Problem shapes -> concrete cases: seeded tensors, labels, FLOP counts.

Inputs are drawn in float64 and then cast, and the reference is computed from the cast values, so the
float64 reference sees exactly the numbers the implementation saw (this matters for float16)."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, List, Optional

import torch

from harness.config import Shape


@dataclass
class Case:
    """A shape made concrete on one device and dtype."""
    shape: Shape
    x: torch.Tensor
    weight: torch.Tensor
    bias: Optional[torch.Tensor]
    grad_out: torch.Tensor      # the upstream gradient used for backward

    @property
    def kwargs(self) -> dict[str, Any]:
        s = self.shape
        return dict(stride=tuple(s.stride), padding=s.padding if isinstance(s.padding, str) else tuple(s.padding),
                    dilation=tuple(s.dilation), groups=s.groups)


def scale_batch(shapes: List[Shape], batch: Optional[int]) -> List[Shape]:
    """Cap every shape's batch size at `batch`. Shapes that become duplicates merge into the first:
    their counts add up and their paths join, so a network's total stays a sum over all its calls."""
    if batch is None:
        return list(shapes)
    out: dict[str, Shape] = {}
    for s in shapes:
        s = replace(s, n=min(s.n, batch))
        key = label(s)
        if key in out:
            first = out[key]
            out[key] = replace(first, count=first.count + s.count, paths=[*first.paths, *s.paths])
        else:
            out[key] = s
    return list(out.values())


def pair_str(p) -> str:
    """A (h, w) pair as 'h,w'; 'same' / 'valid' as they are (the table's stride/padding/dilation text)."""
    return p if isinstance(p, str) else f"{p[0]},{p[1]}"


def label(s: Shape) -> str:
    """Compact, unique description: n,c_in,h,w -> c_out, kernel, stride, padding, dilation, groups."""
    k = f"{s.kernel[0]}x{s.kernel[1]}"
    text = f"{s.n},{s.c_in},{s.h},{s.w}->{s.c_out} k{k} s{pair_str(s.stride)} p{pair_str(s.padding)}"
    if tuple(s.dilation) != (1, 1):
        text += f" d{pair_str(s.dilation)}"
    if s.groups != 1:
        text += f" g{s.groups}"
    if not s.bias:
        text += " nobias"
    return text


def output_size(s: Shape) -> tuple[int, int]:
    """Hout, Wout as F.conv2d computes them ('same' keeps h, w; stride is 1 there)."""
    if s.padding == "same":
        return s.h, s.w
    pad = (0, 0) if s.padding == "valid" else s.padding
    return tuple((size + 2 * p - d * (k - 1) - 1) // st + 1  # type: ignore[return-value]
                 for size, p, d, k, st in zip((s.h, s.w), pad, s.dilation, s.kernel, s.stride))


def forward_flops(s: Shape) -> float:
    """2*N*Cout*Hout*Wout*(Cin/groups)*kh*kw: one multiply and one add per weight tap."""
    ho, wo = output_size(s)
    return 2.0 * s.n * s.c_out * ho * wo * (s.c_in // s.groups) * s.kernel[0] * s.kernel[1]


def flops(s: Shape, pass_: str) -> float:
    """Backward computes two such products (input and weight gradients): twice the forward."""
    return forward_flops(s) * (2 if pass_ == "backward" else 1)


def make_case(s: Shape, device: torch.device, dtype: torch.dtype, seed: int, channels_last: bool = False) -> Case:
    """Seeded tensors for `s`; the same seed gives the same numbers whatever the job order.
    `channels_last`: the input, weight and upstream gradient in that layout (same values)."""
    gen = torch.Generator().manual_seed(seed)
    fan_in = (s.c_in // s.groups) * s.kernel[0] * s.kernel[1]
    bound = 1 / math.sqrt(fan_in)  # nn.Conv2d's scale keeps outputs O(1), safe for float16

    def draw(*size, scale=1.0):
        t = torch.empty(size, dtype=torch.float64).uniform_(-1, 1, generator=gen) * scale
        return t.to(device=device, dtype=dtype)

    x = draw(s.n, s.c_in, s.h, s.w)
    weight = draw(s.c_out, s.c_in // s.groups, *s.kernel, scale=bound)
    bias = draw(s.c_out, scale=bound) if s.bias else None
    ho, wo = output_size(s)
    grad_out = draw(s.n, s.c_out, ho, wo)
    if channels_last:
        x, weight, grad_out = (t.contiguous(memory_format=torch.channels_last) for t in (x, weight, grad_out))
    return Case(s, x, weight, bias, grad_out)
