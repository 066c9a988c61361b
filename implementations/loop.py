"""`loop`: the textbook sliding window. A Python loop over output positions; at each one the
window is multiplied with the kernel, vectorised over batch and channels. Slow on purpose: the
readable baseline every other method is checked against by eye."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .params import prepare
from .registry import register


@register("loop")
def conv2d_loop(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    x, weight, bias, p, unbatched = prepare(input, weight, bias, stride, padding, dilation, groups)
    x = F.pad(x, p.pad_lrtb)
    n, c_in = x.shape[:2]
    c_out, c_g, kh, kw = weight.shape
    g = p.groups
    (sh, sw), (dh, dw) = p.stride, p.dilation
    ekh, ekw = p.effective_kernel()
    ho, wo = (x.shape[2] - ekh) // sh + 1, (x.shape[3] - ekw) // sw + 1
    wg = weight.reshape(g, c_out // g, c_g, kh, kw)
    rows = []
    for i in range(ho):
        cols = []
        for j in range(wo):
            window = x[:, :, i * sh:i * sh + ekh:dh, j * sw:j * sw + ekw:dw].reshape(n, g, c_g, kh, kw)
            cols.append(torch.einsum("ngckl,gockl->ngo", window, wg).reshape(n, c_out))
        rows.append(torch.stack(cols, dim=-1))
    out = torch.stack(rows, dim=-2)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out.squeeze(0) if unbatched else out
