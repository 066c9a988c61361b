"""shiftconv: conv2d as a sum of shifted 1x1 convolutions, one per kernel tap.

Each tap (i, j) of the kernel multiplies a strided, shifted view of the padded input by weight[:, :, i, j]
(a batched matrix product per group); the taps add up. Autograd derives the backward. A stand-in for
the kernel you would write yourself: convbench checks it (tests/test_shiftconv.py) and times it
(`convbench -m impl=shiftconv,cudnn suite=smoke`)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

import convbench


def _unsupported(device_type: str, dtype: torch.dtype) -> str | None:
    """What this implementation declares it does not do: convbench skips it, with this reason."""
    if dtype in (torch.float16, torch.bfloat16):
        return "shiftconv sums its taps in the input's dtype; 16-bit sums are out of scope"
    return None


@convbench.register("shiftconv", unsupported=_unsupported)
def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """F.conv2d's signature and semantics."""
    x, weight, bias, p, unbatched = convbench.prepare(input, weight, bias, stride, padding, dilation, groups)
    x = F.pad(x, p.pad_lrtb)
    n, c_in = x.shape[:2]
    c_out, c_g, kh, kw = weight.shape
    g = p.groups
    (sh, sw), (dh, dw) = p.stride, p.dilation
    ho, wo = p.output_size(input.shape[-2], input.shape[-1])
    w = weight.reshape(g, c_out // g, c_g, kh, kw)
    out = x.new_zeros(n, g, c_out // g, ho, wo)
    for i in range(kh):
        for j in range(kw):
            tap = x[:, :, i * dh: i * dh + (ho - 1) * sh + 1: sh, j * dw: j * dw + (wo - 1) * sw + 1: sw]
            out = out + torch.einsum("ngchw,goc->ngohw", tap.reshape(n, g, c_g, ho, wo), w[..., i, j])
    out = out.reshape(n, c_out, ho, wo)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out.squeeze(0) if unbatched else out
