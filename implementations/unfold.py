"""`unfold`: im2col (every receptive field laid out as a column) plus one matrix multiply."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .params import prepare
from .registry import register


@register("unfold")
def conv2d_unfold(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    x, weight, bias, p, unbatched = prepare(input, weight, bias, stride, padding, dilation, groups)
    x = F.pad(x, p.pad_lrtb)
    n = x.shape[0]
    c_out, c_g, kh, kw = weight.shape
    g = p.groups
    ho, wo = p.output_size(input.shape[-2], input.shape[-1])
    cols = F.unfold(x, (kh, kw), dilation=p.dilation, stride=p.stride)  # (n, c_in*kh*kw, L)
    cols = cols.view(n, g, c_g * kh * kw, ho * wo)
    out = torch.matmul(weight.reshape(g, c_out // g, c_g * kh * kw), cols)  # (n, g, c_out/g, L)
    out = out.reshape(n, c_out, ho, wo)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out.squeeze(0) if unbatched else out
